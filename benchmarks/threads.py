"""What the CPU thread count costs: one ``npe train`` job at several thread counts, on an idle machine and on one
whose cores are all taken by other work, wall seconds and the ratio to one thread, measured side by side.

    python benchmarks/threads.py [--epochs 20] [--dataset mnist1d] [--threads 1 2 4] [--repeats 2]

"Busy" starts one spinning process per core beside the job (what a shared workstation or a CI runner looks like).
Each job is also run with OMP_WAIT_POLICY=PASSIVE, OpenMP's setting that makes idle threads sleep rather than
spin; the best of ``--repeats`` counts. Thread counts above the cores are skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time


def _spin() -> None:
    while True:
        pass


def _job(args, threads: int, policy: str | None) -> float:
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    best = float("inf")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "npe",
                "train",
                "--dataset",
                args.dataset,
                "--epochs",
                str(args.epochs),
            ]
            cmd += ["--threads", str(threads), "--out", os.path.join(tmp, "run"), "--quiet"]
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = [t for t in args.threads if t <= cores]
    print(
        f"{args.dataset}, {args.epochs} epochs, {cores} cores; wall seconds (best of {args.repeats}), x one thread"
    )
    for load in ("idle", "busy"):
        hogs = [mp.Process(target=_spin, daemon=True) for _ in range(cores if load == "busy" else 0)]
        for h in hogs:
            h.start()
        try:
            for policy in (None, "PASSIVE"):
                times = {t: _job(args, t, policy) for t in counts}
                row = "  ".join(f"{t} thr {s:6.1f} s ({s / times[1]:.2f}x)" for t, s in times.items())
                print(f"  {load:<5} {policy or 'default':<8} {row}")
        finally:
            for h in hogs:
                h.terminate()


if __name__ == "__main__":
    main()
