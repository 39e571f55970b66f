"""Training speed, measured side by side in one run; prints ratios.

    python benchmarks/train_speed.py [--device cpu|cuda] [--batch-size 128] [--steps 20] [--repeats 3]

(a) training steps per second of ResNet-32 with a PEM against the same network without one
    (target: at most 3% overhead);
(b) images per second of the device-resident pipeline (uint8 data on the device, batched crop
    and flip there) against a standard DataLoader pipeline (per-sample crop and flip in worker
    processes, then a host-to-device copy), each feeding the same training step, and each
    pipeline alone without the network.
Random CIFAR-shaped data (50,000 images by default on CUDA, 2,000 on CPU): speed does not depend on the pixels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from npe_train.data.pipeline import DevicePipeline, LoaderPipeline, draw_augmentation
from npe_train.loop.build import build_objective
from npe_train.loop.step import train_step
from npe_train.models.classifiers import build_model
from npe_train.run.config import TrainConfig


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per measurement (default 200 on CUDA, 15 on CPU)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (200 if cuda else 15)
    n = args.images or (50_000 if cuda else 2_000)
    rng = np.random.default_rng(0)
    x_np = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y_np = rng.integers(0, 100, n)
    cfg = TrainConfig(dataset="cifar100", method="npe").resolved()
    objective = build_objective(cfg, np.ones(100))
    state = objective.at_epoch(0, np.ones(100), device)

    def make(num_pems):
        torch.manual_seed(0)
        model = build_model("resnet32", (3, 32, 32), 100, num_pems=num_pems).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    gen = torch.Generator().manual_seed(0)

    def batches(feed):  # the training loop's pipelines, epoch after epoch (the last, partial batch dropped)
        while True:
            whole = n - n % args.batch_size
            yield from feed.epoch(
                torch.randperm(n, generator=gen)[:whole], draw_augmentation(whole, gen), args.batch_size
            )

    on_device = DevicePipeline(
        torch.as_tensor(x_np, device=device), torch.as_tensor(y_np, device=device), channels_last=cuda
    )
    standard = LoaderPipeline(x_np, y_np, device, channels_last=cuda, workers=args.workers)

    def time_steps(model, opt, batches, train=True):
        if train:
            model.train()
        for _ in range(3):  # warm-up
            x, y = next(batches)
            if train:
                train_step(model, opt, x, [(y, None)], objective, state, use_amp=cuda)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(batches)
            if train:
                train_step(model, opt, x, [(y, None)], objective, state, use_amp=cuda)
        _sync(device)
        return time.perf_counter() - t0

    with_pem, without_pem = make(1), make(0)
    dev_iter, std_iter = batches(on_device), batches(standard)
    best = {k: np.inf for k in ("pem", "no_pem", "dev_train", "std_train", "dev_data", "std_data")}
    for _ in range(args.repeats):  # interleaved, so load changes hit every contender alike
        best["pem"] = min(best["pem"], time_steps(*with_pem, dev_iter))
        best["no_pem"] = min(best["no_pem"], time_steps(*without_pem, dev_iter))
        best["dev_train"] = min(best["dev_train"], time_steps(*with_pem, dev_iter))
        best["std_train"] = min(best["std_train"], time_steps(*with_pem, std_iter))
        best["dev_data"] = min(best["dev_data"], time_steps(None, None, dev_iter, train=False))
        best["std_data"] = min(best["std_data"], time_steps(None, None, std_iter, train=False))
    imgs = steps * args.batch_size
    print(
        f"ResNet-32, CIFAR-100 shape, batch {args.batch_size}, {steps} steps, best of {args.repeats}, device {device}, "
        f"{'bf16 autocast' if cuda else 'fp32'}, DataLoader workers {args.workers}"
    )
    print(
        f"(a) steps/s   with PEM {steps / best['pem']:9.1f}   without {steps / best['no_pem']:9.1f}   "
        f"PEM overhead {100 * (best['pem'] / best['no_pem'] - 1):+.1f}%  (target <= 3%)"
    )
    print(
        f"(b) images/s training: device-resident {imgs / best['dev_train']:9.0f}   DataLoader {imgs / best['std_train']:9.0f}   "
        f"ratio {best['std_train'] / best['dev_train']:.2f}x"
    )
    print(
        f"    images/s data only: device-resident {imgs / best['dev_data']:9.0f}   DataLoader {imgs / best['std_data']:9.0f}   "
        f"ratio {best['std_data'] / best['dev_data']:.2f}x"
    )


if __name__ == "__main__":
    main()
