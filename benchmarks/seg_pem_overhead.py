"""PEM overhead of a segmentation training step, measured side by side in one run; prints the ratio.

    python benchmarks/seg_pem_overhead.py [--steps 30] [--repeats 5] [--batch-size 32] [--device cpu]

The segmentation main job's network (``fcn`` on 32x32 ``shapes`` images, 9 classes) trained with
CE + alpha * the per-pixel one-way loss, against the same network without a PEM trained with CE
alone; the two alternate, repeat by repeat, and the best repeat of each counts (target: at most 5%).
"""

from __future__ import annotations

import argparse
import time

import torch

from npe_train.data.segmentation import generate_shapes
from npe_train.loop.build import build_objective
from npe_train.loop.step import train_step
from npe_train.models.dense import build_seg_model
from npe_train.run.config import make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = generate_shapes(n_max=200, imbalance=50)
    x = torch.as_tensor(data.x_train, device=device).float() / 255.0
    y = torch.as_tensor(data.y_train, device=device)
    cfg = make_config(dataset="shapes", batch_size=args.batch_size)
    objective = build_objective(cfg, data.counts)
    state = objective.at_epoch(0, data.counts, device)

    def make(num_pems):
        torch.manual_seed(0)
        model = build_seg_model("fcn", data.input_shape, data.num_classes, num_pems=num_pems).to(device)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-3)

    nets = {"with PEM": make(1), "without": make(0)}
    best = {k: float("inf") for k in nets}
    for _ in range(args.repeats):
        for name, (model, opt) in nets.items():
            model.train()
            for _ in range(3):  # warm-up
                train_step(
                    model, opt, x[: args.batch_size], [(y[: args.batch_size], None)], objective, state, False
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(args.steps):
                s = (i * args.batch_size) % (len(x) - args.batch_size)
                train_step(
                    model,
                    opt,
                    x[s : s + args.batch_size],
                    [(y[s : s + args.batch_size], None)],
                    objective,
                    state,
                    False,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    ratio = best["with PEM"] / best["without"]
    print(
        f"ms/step   with PEM {1000 * best['with PEM']:.2f}   without {1000 * best['without']:.2f}   "
        f"PEM overhead {100 * (ratio - 1):+.1f}%  (batch {args.batch_size}, {args.steps} steps x "
        f"{args.repeats} repeats, {device})"
    )


if __name__ == "__main__":
    main()
