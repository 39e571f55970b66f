"""The report's per-class solvers run over all classes at once against the same solvers called one class at a time,
side by side in one run: the exact equilibrium (``pem_equilibrium``) and the spread-aware reference and its inverse
(``spread_logit``, ``spread_inverse``, logistic loss).

    OMP_NUM_THREADS=1 python benchmarks/report_batching.py                       # 100 and 1,000 classes x 64, 512
    OMP_NUM_THREADS=1 python benchmarks/report_batching.py --classes 100 --widths 64

"One at a time" is each class as a problem of its own (its rows, or its spectrum, alone), the way the solvers ran
before they batched classes of similar sizes: the same arithmetic per class, one set of NumPy calls per class.
Long-tailed counts (exponential profile, head 500 at 100 classes, 540 at 1,000; imbalance 100), float32 features
with class-dependent means and within-class spread. Prints CPU seconds (best of ``--repeats``), the ratio, and the
largest difference between the two answers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npe_theory.equilibrium import pem_equilibrium  # noqa: E402
from npe_theory.priors import count_profile  # noqa: E402
from npe_theory.spread import ClassSpread, class_spread, spread_inverse, spread_logit  # noqa: E402

LAM = 5e-4


def features(C: int, d: int, seed: int = 0):
    head = 500 if C <= 100 else 540
    counts = count_profile("exp", C, head, 100).astype(np.int64)
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), counts)
    means = rng.normal(size=(C, d)).astype(np.float32) * 0.5
    h = np.maximum(means[y] + 0.3 * rng.normal(size=(len(y), d)).astype(np.float32), 0)
    return counts, y, h


def best(fn, repeats: int) -> tuple[float, object]:
    out, seconds = None, np.inf
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        seconds = min(seconds, time.process_time() - t)
    return seconds, out


def equilibrium_each(h, y, C):
    """Each class alone: its rows, the batch-mean weight 1 / N given as alpha with a summed loss."""
    order = np.argsort(y, kind="stable")
    edges = np.searchsorted(y[order], np.arange(C + 1))
    eta = np.empty(C)
    for c in range(C):
        rows = h[order[edges[c] : edges[c + 1]]]
        one = pem_equilibrium(rows, np.zeros(len(rows), int), 1, LAM, alpha=1.0 / len(y), reduction="sum")
        eta[c] = one.eta[0]
    return eta


def spread_each(spread, counts, fn):
    """``fn`` on each class's spectrum alone (1-class ClassSpread)."""
    out = np.empty(len(counts))
    for c in range(len(counts)):
        one = ClassSpread([spread.eig[c]], [spread.proj[c]], spread.null[c : c + 1])
        out[c] = fn(one, counts[c : c + 1])[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"best of {args.repeats}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(
        f"{'classes':>7} {'width':>5}  {'solver':<26} {'together':>9} {'one by one':>10} {'ratio':>7} {'max diff':>9}"
    )
    for C in args.classes:
        for d in args.widths:
            counts, y, h = features(C, d)
            spread = class_spread(h, y, C)
            eta = spread_logit(spread, counts, LAM, reduction="sum")
            rows = {
                "exact equilibrium": (
                    lambda: pem_equilibrium(h, y, C, LAM).eta,
                    lambda: equilibrium_each(h, y, C),
                ),
                "spread_logit (logistic)": (
                    lambda: spread_logit(spread, counts, LAM, reduction="sum"),
                    lambda: spread_each(
                        spread, counts, lambda s, n: spread_logit(s, n, LAM, reduction="sum")
                    ),
                ),
                "spread_inverse (logistic)": (
                    lambda: spread_inverse(spread, eta, LAM),
                    lambda: spread_each(spread, eta, lambda s, e: spread_inverse(s, e, LAM)),
                ),
            }
            for name, (together, each) in rows.items():
                t_all, a = best(together, args.repeats)
                t_each, b = best(each, args.repeats)
                print(
                    f"{C:>7} {d:>5}  {name:<26} {t_all:>8.3f}s {t_each:>9.3f}s {t_all / t_each:>6.2f}x "
                    f"{float(np.max(np.abs(np.asarray(a) - np.asarray(b)))):>9.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
