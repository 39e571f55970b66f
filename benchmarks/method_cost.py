"""Training cost of every registered method per step, as a ratio to plain CE, measured side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/method_cost.py [--dataset mnist1d] [--steps 200] [--repeats 3]

Each method builds its network and objective the way ``npe train`` does (the PEM probe or the joint PEM, a cosine
classifier for LDAM) and takes ``--steps`` SGD steps on the same batches; the best of ``--repeats`` rounds counts,
methods interleaved within a round so a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from npe_train.loop.build import build_data, build_network, build_objective, build_optimizer, build_schedule
from npe_train.loop.step import train_step
from npe_train.methods.catalog import METHODS
from npe_train.run.config import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    setups = {}
    for name in METHODS:
        cfg = make_config(dataset=args.dataset, method=name, batch_size=args.batch_size, epochs=10)
        data = build_data(cfg)
        cfg, _ = build_schedule(cfg, data)
        torch.manual_seed(0)
        model = build_network(cfg, data)
        opt, _ = build_optimizer(cfg, model)
        objective = build_objective(cfg, data.counts)
        state = objective.at_epoch(
            cfg.epochs - 1, data.counts, "cpu"
        )  # DRW methods at their re-weighted epochs
        setups[name] = (model, opt, objective, state)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    batches = [
        (x[i : i + args.batch_size], y[i : i + args.batch_size])
        for i in range(0, len(y) - args.batch_size, args.batch_size)
    ]
    best = {name: float("inf") for name in setups}
    for _ in range(args.repeats):
        for name, (model, opt, objective, state) in setups.items():
            model.train()
            t0 = time.process_time()
            for i in range(args.steps):
                xb, yb = batches[i % len(batches)]
                train_step(model, opt, xb, [(yb, None)], objective, state, use_amp=False)
            best[name] = min(best[name], time.process_time() - t0)
    base = best["ce"]
    print(
        f"{args.dataset}, batch {args.batch_size}, {args.steps} steps, best of {args.repeats} (CPU seconds)"
    )
    for name, t in best.items():
        print(f"  {name:<18} {1000 * t / args.steps:7.2f} ms/step   {t / base:5.2f}x plain CE")


if __name__ == "__main__":
    main()
