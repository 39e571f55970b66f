"""Wall time of the CIFAR-100-LT recipe (ResNet-32, imbalance 100) per training path, side by side in one run.

    python benchmarks/cifar_lt_time.py [--epochs 200] [--variants fast eager standard] [--data-dir DIR] [--out runs/cifar_time]

Variants (each a full ``npe train`` run of configs/cifar100_lt.toml with the given epochs):
  fast      data on the device, bf16 autocast and channels_last (on CUDA), torch.compile mode reduce-overhead (CUDA graphs)
  eager     the same without torch.compile
  standard  a DataLoader with per-image augmentation in worker processes, fp32, no compile (the usual code)
Without --data-dir it writes a random CIFAR-100 of the real shape (500 + 100 images per class): speed
does not depend on the pixels, but accuracy then is chance. Give --data-dir a real cifar-100-python/
folder to compare accuracy as well. Prints seconds, images/s, accuracy and the ratios to the
standard pipeline; writes summary.json into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from npe_theory.io import write_json
from npe_train.data.files import write_fake_cifar
from npe_train.loop.train import train
from npe_train.run.config import make_config

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "cifar100_lt.toml"
VARIANTS = {
    "fast": dict(pipeline="device", amp=None, compile="reduce-overhead"),  # amp None: bf16 on CUDA
    "eager": dict(pipeline="device", amp=None, compile="none"),
    "standard": dict(pipeline="loader", amp=False, compile="none"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--data-dir",
        help="folder holding a real cifar-100-python/ (default: random images of the real shape)",
    )
    parser.add_argument(
        "--per-class", type=int, default=500, help="random data only: training images per class (real: 500)"
    )
    parser.add_argument("--imbalance", type=float, help="head over tail count (default: the recipe's 100)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the standard variant")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/cifar_time")
    args = parser.parse_args()
    out = Path(args.out)
    data_dir = args.data_dir
    if data_dir is None:
        data_dir = str(out / "random-data")
        write_fake_cifar(
            data_dir,
            100,
            train_per_class=args.per_class,
            test_per_class=max(args.per_class // 5, 1),
            seed=args.seed,
        )

    rows = {}
    for name in args.variants:
        cfg = make_config(
            str(RECIPE),
            epochs=args.epochs,
            eval_every=args.epochs,
            data_dir=data_dir,
            n_max=None if args.data_dir else args.per_class,
            device=args.device,
            seed=args.seed,
            imbalance=args.imbalance,
            workers=args.workers,
            out=str(out / name),
            **VARIANTS[name],
        )
        res = train(cfg)
        images = sum(res["counts"]) * args.epochs
        rows[name] = {
            "settings": VARIANTS[name],
            "train_seconds": res["train_seconds"],
            "images_per_second": images / res["train_seconds"],
            "accuracy_npe_la": res["accuracy"]["npe_la"]["overall"],
            "accuracy_argmax": res["accuracy"]["argmax"]["overall"],
            "device": res["device"],
        }
        write_json(
            out / "summary.json",
            {"epochs": args.epochs, "data_dir": data_dir, "random_data": args.data_dir is None, "runs": rows},
        )

    print(
        f"ResNet-32, CIFAR-100-LT imbalance {args.imbalance or 100:g}, {args.epochs} epochs, "
        f"{'random' if args.data_dir is None else 'real'} data, "
        f"device {next(iter(rows.values()))['device']}"
    )
    print(
        f"  {'variant':<10}{'seconds':>10}{'images/s':>11}{'NPE-LA acc':>12}{'argmax acc':>12}{'time vs standard':>18}"
    )
    base = rows.get("standard")
    for name, r in rows.items():
        ratio = f"{r['train_seconds'] / base['train_seconds']:.3f}x" if base else "-"
        print(
            f"  {name:<10}{r['train_seconds']:>10.1f}{r['images_per_second']:>11.0f}{100 * r['accuracy_npe_la']:>12.2f}"
            f"{100 * r['accuracy_argmax']:>12.2f}{ratio:>18}"
        )
    if args.data_dir is None:
        print("  (random pixels: accuracy is chance here; pass --data-dir with real CIFAR-100 to compare it)")
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
