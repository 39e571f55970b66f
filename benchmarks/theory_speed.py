"""Time optimal_logit (both losses) against bare scipy.special.lambertw, side by side in one run.

    python benchmarks/theory_speed.py [--points 1000000] [--repeats 7]

Prints the best-of-repeats time of each and its ratio to scipy (targets: exp <= 0.15x,
logistic <= 0.5x), the machine's load beside it, and the worst relative error of both
against mpmath at 50 digits on ln x in [-700, 700] and the ends of the float range.
Runs interleaved so that machine load hits all three alike. Run it with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import os
import time

import mpmath
import numpy as np
import scipy.special

from npe_theory import optimal_logit
from npe_theory.reference import mp_lambert_w, mp_logistic_root_of_log, relative_error


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
    load = os.getloadavg()[0]
    print(
        f"{args.points:,} points, best of {args.repeats}; load average {load:.2f} on {os.cpu_count()} cores"
    )
    for name, t in best.items():
        print(f"  {name:34s} {t * 1e3:8.1f} ms   {t / ref:5.2f}x scipy")
    agree = np.max(np.abs(optimal_logit(x, 1.0) / scipy.special.lambertw(x).real - 1))
    print(f"  max relative difference exp vs scipy: {agree:.2e}")
    tiny, huge = np.finfo(np.float64).tiny, np.finfo(np.float64).max
    grid = np.concatenate([np.exp(np.linspace(-700, 700, 1401)), [tiny, huge]])
    with mpmath.workdps(50):
        exact_w = [mp_lambert_w(v) for v in grid]
        exact_l = [mp_logistic_root_of_log(mpmath.log(mpmath.mpf(v))) for v in grid]
    for loss, exact in (("exp", exact_w), ("logistic", exact_l)):
        err = max(relative_error(a, e) for a, e in zip(optimal_logit(grid, 1.0, loss), exact))
        print(f"  worst relative error vs mpmath, {loss:8s} (ln x in [-700, 700], tiny, max): {err:.2e}")


if __name__ == "__main__":
    main()
