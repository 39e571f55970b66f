"""Conditional against marginal prior (docs/metrics.md, "Which prior to subtract"): every rule on three data sets and
three seeds at equilibrium (lambda*s = 1.5 through --target-lambda-s), with the per-row slopes of E[eta | y = c] on
ln N_c by count group. Prints mean +- std per set and rule and writes the rows as CSV.

    python benchmarks/conditional_prior.py --out results/advice/conditional_prior.csv   # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npe_theory.io import write_csv  # noqa: E402
from npe_train.experiments.runs import train_summaries  # noqa: E402

SETS = {"synthetic": 100.0, "digits": 50.0, "mnist1d": 100.0}
RULES = ("argmax", "posthoc_la", "npe_la", "npe_marginal", "npe_inverse")


def summarize(results: dict) -> dict:
    cfg, acc, slopes = results["config"], results["accuracy"], results["pem"]["conditional_slopes"]
    row = {
        "dataset": cfg["dataset"],
        "imbalance": cfg["imbalance"],
        "seed": cfg["seed"],
        "lambda_s": results["pem"]["lambda_s"],
    }
    for rule in RULES:
        row[f"{rule}_overall"], row[f"{rule}_few"] = acc[rule]["overall"], acc[rule]["few"]
    row.update({f"slope_{g}": slopes[g] for g in ("many", "medium", "few")})
    row["validation_best"] = results["advice"]["best"]["rule"] if results["advice"].get("best") else None
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="CSV of the rows")
    args = ap.parse_args()
    runs = [
        ({"dataset": d, "imbalance": ir, "seed": s, "target_lambda_s": 1.5}, summarize)
        for d, ir in SETS.items()
        for s in args.seeds
    ]
    rows = train_summaries(runs, "conditional prior")
    for d in SETS:
        mine = [r for r in rows if r["dataset"] == d]
        print(
            f"{d} (imbalance {SETS[d]:g}, {len(mine)} seeds, lambda*s {np.mean([r['lambda_s'] for r in mine]):.2f}):"
        )
        for rule in RULES:
            o, f = np.array([r[f"{rule}_overall"] for r in mine]), [r[f"{rule}_few"] for r in mine]
            few = np.array([np.nan if v is None else v for v in f])
            print(
                f"  {rule:<13} overall {o.mean():.3f} +- {o.std():.3f}   few {np.nanmean(few):.3f} +- {np.nanstd(few):.3f}"
            )
        sl = {
            g: np.array([np.nan if r[f"slope_{g}"] is None else r[f"slope_{g}"] for r in mine])
            for g in ("many", "medium", "few")
        }
        print(
            "  slope of E[eta | y = c] on ln N_c: "
            + ", ".join(f"{g} {np.nanmean(v):.2f}" for g, v in sl.items())
        )
        print(f"  validation picks: {[r['validation_best'] for r in mine]}")
    if args.out:
        print(f"wrote {write_csv(args.out, rows)}")


if __name__ == "__main__":
    main()
