"""Time optimal_logit (both losses) against bare scipy.special.lambertw, side by side in one run.

    python benchmarks/theory_speed.py [--points 1000000] [--repeats 7]

Prints the best-of-repeats time of each and its ratio to scipy (targets: exp <= 1.5x,
logistic <= 4x). Runs interleaved so that machine load hits all three alike.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.special

from npe_theory import optimal_logit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = 10.0 ** rng.uniform(-3, 8, args.points)  # counts over weight decay: the range PEMs live in
    contenders = {
        "scipy.special.lambertw(x).real": lambda: scipy.special.lambertw(x).real,
        "optimal_logit(x, 1, 'exp')": lambda: optimal_logit(x, 1.0, "exp"),
        "optimal_logit(x, 1, 'logistic')": lambda: optimal_logit(x, 1.0, "logistic"),
    }
    best = {name: np.inf for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = best["scipy.special.lambertw(x).real"]
    print(f"{args.points:,} points, best of {args.repeats}")
    for name, t in best.items():
        print(f"  {name:34s} {t * 1e3:8.1f} ms   {t / ref:5.2f}x scipy")
    agree = np.max(np.abs(optimal_logit(x, 1.0) / scipy.special.lambertw(x).real - 1))
    print(f"  max relative difference exp vs scipy: {agree:.2e}")


if __name__ == "__main__":
    main()
