"""What the references of the prior report cost inside a training run, measured side by side.

Runs the default job (MNIST-1D-LT, 60 epochs, evaluation every epoch) once with timers around
the exact equilibrium (``pem_equilibrium``), the finite-time replay (``replay_steps``, run as the
steps go, and ``step_rows``, the rows it takes from each step), the spread-aware references, the
two-statistic prediction (``finite_time_logit``) and the trace bookkeeping, and prints each one's
seconds and share of the run's wall time.

    python benchmarks/report_overhead.py [--epochs 60] [--eval-every 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict

from timing import timed  # benchmarks/timing.py

import npe_theory.report as report
import npe_train.loop.train as train_mod
import npe_train.methods.feature_sample as feature_sample
import npe_train.methods.trace as trace_mod
from npe_train.run.config import make_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    totals = defaultdict(float)
    timed(report, "pem_equilibrium", totals, time.perf_counter)
    timed(trace_mod, "replay_steps", totals, time.perf_counter)
    timed(feature_sample, "step_rows", totals, time.perf_counter)
    timed(report, "finite_time_logit", totals, time.perf_counter)
    for name in (
        "class_spread",
        "spread_logit",
        "spread_inverse",
        "spread_statistics",
    ):  # the spread-aware references
        timed(report, name, totals, time.perf_counter)
    timed(
        train_mod, "epoch_plan", totals, time.perf_counter
    )  # includes each step's class shares for the trace
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(epochs=args.epochs, eval_every=args.eval_every, seed=args.seed, out=tmp)
        t = time.perf_counter()
        train_mod.train(cfg, progress=False)
        wall = time.perf_counter() - t
    print(f"default job, {args.epochs} epochs, evaluation every {args.eval_every}: {wall:.1f} s wall")
    for name, sec in totals.items():
        print(f"  {name:<16} {sec:7.2f} s  {100 * sec / wall:5.1f}% of the run")
    both = totals["pem_equilibrium"] + totals["replay_steps"] + totals["step_rows"]
    spread = sum(
        totals[k]
        for k in ("class_spread", "spread_logit", "spread_inverse", "spread_statistics", "finite_time_logit")
    )
    print(
        f"  equilibrium + replay together: {100 * both / (wall - both - spread):.1f}% added to the run without them"
    )
    print(
        f"  spread-aware references and the two-statistic prediction: {100 * spread / (wall - both - spread):.1f}% added"
    )
    print(f"  all references: {100 * (both + spread) / (wall - both - spread):.1f}% added")


if __name__ == "__main__":
    main()
