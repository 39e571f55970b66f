"""What an epoch's plan costs at the users' scale: every step's class shares summed from the task's sparse loss weights
(``loop/step.step_shares``) against the dense positions x classes table they were summed from before, side by side in
one run; and what the PEM's trace keeps over a run, now and before.

    OMP_NUM_THREADS=1 python benchmarks/epoch_plan.py                  # CIFAR-100-LT, ImageNet-LT, iNaturalist sizes
    OMP_NUM_THREADS=1 python benchmarks/epoch_plan.py --sizes 10847:100

For each size (samples N, classes C; batch 128, labels long-tailed), prints the seconds and the peak memory
(tracemalloc: NumPy's allocations) of one epoch's shares both ways, their largest difference, and the bytes the trace
holds after 200 epochs: before, every step's shares (steps x C float32 per epoch, rewritten into every checkpoint);
now, one learning rate and one step count per epoch. Target: the plan's memory O(N + steps C), not O(N C).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npe_train.loop.step import step_shares  # noqa: E402
from npe_train.tasks.classification import Classification  # noqa: E402

#: samples:classes of CIFAR-100-LT (imbalance 100), ImageNet-LT and iNaturalist 2018
SIZES = ["10847:100", "115846:1000", "437513:8142"]


def dense_shares(labels: np.ndarray, C: int, batch: int, n: int):
    """The former way: an (N, C) table of each position's loss weight per class, summed per step."""
    table = np.zeros((len(labels), C))
    np.add.at(table, (np.arange(len(labels)), labels), 1.0)
    terms = np.ones(len(labels))
    fractions = np.stack(
        [
            (table[i : i + batch].sum(0) / max(terms[i : i + batch].sum(), 1)).astype(np.float32)
            for i in range(0, len(labels), batch)
        ]
    )
    return fractions, table[:n].sum(0)


def measured(fn):
    """(result, seconds, peak MiB) of one call."""
    tracemalloc.start()
    t = time.process_time()
    out = fn()
    spent = time.process_time() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, spent, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=SIZES, help="samples:classes")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()
    task = Classification(None, args.batch, 0, 1.0, (1.0,), False)
    print(f"batch {args.batch}; trace after {args.epochs} epochs")
    print(
        f"{'N':>8} {'C':>6} | {'dense s':>8} {'MiB':>8} | {'sparse s':>8} {'MiB':>7} | {'max diff':>8} | "
        f"{'trace before':>12} {'now':>6}"
    )
    for size in args.sizes:
        n, C = (int(v) for v in size.split(":"))
        rng = np.random.default_rng(0)
        prior = np.exp(-np.log(100) * np.arange(C) / max(C - 1, 1))
        labels = rng.choice(C, size=n, p=prior / prior.sum())
        (new, new_counts), t_new, m_new = measured(
            lambda: step_shares(task.loss_weights(labels, C), C, args.batch, n, n)
        )
        try:
            (old, old_counts), t_old, m_old = measured(lambda: dense_shares(labels, C, args.batch, n))
            diff = max(float(np.abs(new - old).max()), float(np.abs(new_counts - old_counts).max()))
            dense = f"{t_old:>8.2f} {m_old:>8.0f}"
        except MemoryError:  # the table alone is N x C float64
            tracemalloc.stop()
            dense, diff = f"{'no memory: ' + format(n * C * 8 / 2**30, '.1f') + ' GiB':>17}", float("nan")
        steps = len(new)
        before = args.epochs * steps * C * 4  # float32 shares of every step
        now = args.epochs * 16  # a float and an int per epoch
        print(
            f"{n:>8} {C:>6} | {dense} | {t_new:>8.3f} {m_new:>7.1f} | {diff:>8.1e} | "
            f"{before / 2**20:>9.0f} MiB {now / 2**10:>3.0f} KiB"
        )


if __name__ == "__main__":
    main()
