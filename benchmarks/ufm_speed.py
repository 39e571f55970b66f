"""How long the unconstrained feature model takes to converge, per feature model, with its peak memory.

    OMP_NUM_THREADS=1 python benchmarks/ufm_speed.py [--classes 100 1000] [--dim 128] [--reference-classes 10]

Figure F6's run (``--reference-classes`` 10, imbalance 100, dimension 16) with one free feature per sample and one per class
(``features="classes"``, the same stationary points), side by side; then ``--classes`` at imbalance 100 and dimension
``--dim`` with one feature per class (targets: 100 classes within 60 s, 1,000 within 15 minutes and 1 GB), each in a
process of its own so that its peak resident memory is its own. For every run: CPU seconds, L-BFGS iterations, the
projected gradient norm, NC1 and the largest gap between the learned PEM outputs and Proposition 1 at the measured
norms. Also the per-sample model's cost per objective evaluation at 100 classes, and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

from npe_theory.priors import count_profile
from npe_theory.ufm import _Problem, simulate_ufm


def run(classes: int, dim: int, features: str, n_max: int = 500) -> dict:
    t = time.process_time()
    r = simulate_ufm(count_profile("exp", classes, n_max, 100), dim=dim, features=features, max_iter=200_000)
    return {
        "seconds": time.process_time() - t,
        "iterations": r.iterations,
        "grad": r.grad_norm,
        "nc1": r.nc1,
        "gap": r.mismatch,
        "converged": r.message.startswith("CONVERGENCE"),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def per_evaluation(classes: int, dim: int, repeats: int = 5) -> float:
    """Milliseconds per objective and gradient of the per-sample model (the best of ``repeats``)."""
    import numpy as np

    counts = count_profile("exp", classes, 500, 100)
    labels = np.repeat(np.arange(classes), counts)
    problem = _Problem(labels, classes, dim, (5e-4,) * 3, "logistic", 1 / len(labels), True, 1.0)
    theta = np.random.default_rng(0).normal(size=sum(problem.sizes))
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        problem(theta)
        best = min(best, time.process_time() - t)
    return 1e3 * best


def isolated(fn, *args):
    with ProcessPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def show(label: str, r: dict) -> None:
    print(
        f"  {label:<34} {r['seconds']:8.1f} CPU s  {r['iterations']:6d} it  grad {r['grad']:.1e}  NC1 {r['nc1']:.1e}  "
        f"gap {r['gap']:.1e}  {'converged' if r['converged'] else 'NOT converged'}  peak {r['peak_mb']:.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--reference-classes", type=int, default=10)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    ref = args.reference_classes
    samples, classes = isolated(run, ref, 16, "samples"), isolated(run, ref, 16, "classes")
    print(f"figure F6's setting ({ref} classes, dimension 16):")
    show("one feature per sample", samples)
    show("one feature per class", classes)
    print(f"  time ratio classes / samples: {classes['seconds'] / samples['seconds']:.3f}")
    print(
        f"per-sample model at 100 classes, dimension {args.dim}: {isolated(per_evaluation, 100, args.dim):.1f} ms per evaluation"
    )
    for c in args.classes:
        show(f"{c} classes, dimension {args.dim}, per class", isolated(run, c, args.dim, "classes"))


if __name__ == "__main__":
    main()
