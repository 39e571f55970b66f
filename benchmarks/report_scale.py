"""What the per-epoch prior report costs at the class counts and feature widths researchers train on, against a
training epoch of a network of that width, measured side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/report_scale.py                 # the grid below (about 15 minutes, 1 thread)
    OMP_NUM_THREADS=1 python benchmarks/report_scale.py --classes 100 --widths 64 512

For each (classes C, width d): long-tailed counts (exponential profile), float32 features of class-dependent means with
within-class spread, and each sample's own-class PEM output; one report as at the first epoch (the equilibrium from
Proposition 1's start) and one as at the next (features moved by 1%, the equilibrium warm-started), the per-epoch
"core" references. Beside it, a plain training epoch of a network of that width: an MLP d -> d -> d with a linear
classifier and a linear PEM on d-dimensional inputs, SGD at batch 256, timed over a few hundred steps and scaled to
the epoch's N samples. Prints the report's seconds (cold, warm), its ratio to the epoch, its peak memory (tracemalloc:
NumPy's allocations), and the growth exponents of the warm report's time in C (at fixed d) and in d (at fixed C).
Targets (docs/report.md, "The report at scale"): at 1,000 classes and width 2,048 with ImageNet-LT's size (115,846
images) the report at most 10% of the epoch, within 4 GB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npe_theory.priors import count_profile  # noqa: E402
from npe_theory.report import PemSettings, pem_report  # noqa: E402

#: classes -> (head count, imbalance): CIFAR-10-LT and CIFAR-100-LT's profiles; ImageNet-LT's size (115,846 images
#: over 1,000 classes; its own profile is Pareto from 1,280 to 5, which an exponential one of that size cannot follow,
#: so head 540 and imbalance 100: 115,740 images); iNaturalist's 8,142-class scale at head 200 and imbalance 100, so
#: that its features fit a CPU's memory (the report's cost is per class and per row)
PROFILES = {10: (500, 100), 100: (500, 100), 1000: (540, 100), 8000: (200, 100)}


def data(C: int, d: int, seed: int = 0):
    head, imbalance = PROFILES.get(C, (500, 100))
    counts = count_profile("exp", C, head, imbalance).astype(np.int64)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C, dtype=np.int64), counts)
    means = rng.normal(size=(C, d)).astype(np.float32)
    h = np.empty((len(y), d), dtype=np.float32)
    for lo in range(0, len(y), 65536):  # built by chunk: no float64 copy of the whole matrix
        part = slice(lo, lo + 65536)
        h[part] = np.maximum(3 * means[y[part]] + rng.normal(size=(len(y[part]), d)).astype(np.float32), 0)
    own = (np.log(counts)[y] + 0.1 * rng.normal(size=len(y))).astype(np.float32)
    return counts, y, h, own


def report_seconds(counts, y, h, own) -> tuple[float, float, float]:
    """(cold seconds, warm seconds, peak MB) of the per-epoch report. The seconds are timed untraced and the memory
    counted in a second pass: tracemalloc's bookkeeping on every allocation slowed the warm report at 1,000 x 2,048 by
    a third (9.3-9.6 s -> 12.3-12.6 s), which an earlier version of this benchmark counted as the report's."""
    settings = PemSettings(weight_decay=5e-3, lambda_s=1.5)
    moved = h * np.float32(
        1.01
    )  # the next epoch's features (made before the memory count: training has them)

    def both() -> tuple[float, float]:
        warm: dict = {}
        t = time.process_time()
        pem_report(own, h, y, counts, settings, references="core", warm=warm)
        cold = time.process_time() - t
        t = time.process_time()
        pem_report(own, moved, y, counts, settings, references="core", warm=warm)
        return cold, time.process_time() - t

    cold, warm_s = both()
    tracemalloc.start()
    both()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return cold, warm_s, peak


def epoch_seconds(d: int, C: int, n: int, steps: int = 200, batch: int = 256) -> float:
    """CPU seconds of one training epoch of an MLP of width d (d -> d -> d, a classifier and a PEM of C outputs) over n
    samples, from ``steps`` timed steps."""
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, d), torch.nn.ReLU())
    head, pem = torch.nn.Linear(d, C), torch.nn.Linear(d, C)
    params = [*body.parameters(), *head.parameters(), *pem.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, target = torch.randn(batch, d), torch.randint(0, C, (batch,))
    for i in range(steps + 10):
        if i == 10:  # after a warm-up
            t = time.process_time()
        h = body(x)
        eta = pem(h).gather(1, target[:, None])
        loss = torch.nn.functional.cross_entropy(head(h), target) + torch.nn.functional.softplus(-eta).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.process_time() - t) / steps * (n / batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[10, 100, 1000, 8000])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 512, 2048])
    args = ap.parse_args()
    print(
        f"one thread: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    head = ("classes", "width", "samples", "report cold", "warm", "epoch", "warm/epoch", "peak MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (7, 6, 8, 12, 8, 9, 11, 8))))
    rows = {}
    for C in args.classes:
        for d in args.widths:
            counts, y, h, own = data(C, d)
            cold, warm, peak = report_seconds(counts, y, h, own)
            epoch = epoch_seconds(d, C, len(y))
            rows[C, d] = warm
            print(
                f"{C:>7} {d:>6} {len(y):>8} {cold:>11.2f}s {warm:>7.2f}s {epoch:>8.1f}s {warm / epoch:>10.1%} {peak:>8.0f}",
                flush=True,
            )
            del h
    print("growth exponent of the warm report's time:")
    for d in args.widths:
        cs = [C for C in args.classes if (C, d) in rows]
        if len(cs) > 1:
            slope = np.polyfit(np.log(cs), np.log([rows[C, d] for C in cs]), 1)[0]
            print(f"  in C at width {d}: {slope:.2f} (classes {cs[0]}..{cs[-1]}; N grows with C)")
    for C in args.classes:
        ds = [d for d in args.widths if (C, d) in rows]
        if len(ds) > 1:
            slope = np.polyfit(np.log(ds), np.log([rows[C, d] for d in ds]), 1)[0]
            print(f"  in d at {C} classes: {slope:.2f}")


if __name__ == "__main__":
    main()
