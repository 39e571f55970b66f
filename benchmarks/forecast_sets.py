"""How well the forecasts a run makes (at 10%, 25% and 50% of its epochs) predict the PEM it ends with, on five data
sets of different kinds (docs/regimes.md, "Forecasts").

    OMP_NUM_THREADS=1 python benchmarks/forecast_sets.py --out results/forecast/runs.csv            # about 50 minutes
    OMP_NUM_THREADS=1 python benchmarks/forecast_sets.py --sets digits100 --out results/forecast/d100.csv

Each set with its default network (synthetic and digits: MLP; MNIST-1D: 1-D CNN; digits28: 2-D CNN; digits100, 100
classes: MLP), imbalance 100 and 10, seeds 0-2, two recipes set by the PEM's weight decay: a transient one
(lambda*s = 0.3 by the end) and the default equilibrium one (lambda*s = 1.5), 60 epochs. Writes one row per run and
forecast: the centered RMSE of the forecast against the final learned PEM (nats), the forecast's regime and the
run's, and how far the class-mean norms moved after the forecast epoch (centered RMSE of ln ||mu_c||^2, and the mean
shift): the assumption the forecast makes is that they stop moving. Prints the table per (set, ir, recipe, share).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import npe_train.tasks.forecast as forecast_mod  # noqa: E402
from npe_theory.io import write_csv  # noqa: E402
from npe_train.experiments.runs import train_summaries  # noqa: E402

SETS = ("synthetic", "digits", "mnist1d", "digits28", "digits100")
RECIPES = {"transient": 0.3, "equilibrium": 1.5}  # lambda*s the PEM's weight decay is set to reach


def rows_of(results: dict) -> list[dict]:
    cfg, pem = results["config"], results["pem"]
    base = {
        "dataset": cfg["dataset"],
        "imbalance": cfg["imbalance"],
        "seed": cfg["seed"],
        "lambda_s": pem["lambda_s"],
        "final_regime": "lagging" if pem.get("lagging") else pem["regime"],
        "final_vs_equilibrium": pem["prior_match"]["vs_equilibrium"]["centered_rmse"],
    }
    return [
        {
            **base,
            "share": f["share"],
            "epoch": f["epoch"],
            "forecast_rmse": f["centered_rmse"],
            "forecast_rmse_extrapolated": f["centered_rmse_extrapolated"],
            "feature_scale": f["feature_scale"],
            "forecast_regime": f["regime"],
            "forecast_gap": f["gap"],
            "norm_change": f["norm_change"],
            "norm_shift": f["norm_shift"],
        }
        for f in pem.get("forecast", [])
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--imbalances", nargs="+", type=float, default=[100.0, 10.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default="forecast_runs.csv")
    args = ap.parse_args()
    forecast_mod.EXTRAPOLATE = True  # the extrapolated forecast beside the held one, to measure both
    rows = []
    for ds in args.sets:
        for imb in args.imbalances:
            for recipe, target in RECIPES.items():
                for seed in args.seeds:
                    settings = {
                        "dataset": ds,
                        "imbalance": imb,
                        "seed": seed,
                        "epochs": args.epochs,
                        "target_lambda_s": target,
                    }
                    got = train_summaries([(settings, rows_of)], f"{ds} ir{imb:g} {recipe} seed {seed}")[0]
                    for r in got:
                        r["recipe"] = recipe
                        print(
                            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()},
                            flush=True,
                        )
                    rows += got
                    write_csv(
                        args.out, rows
                    )  # kept as it goes: a long grid that stops keeps what it measured
    print(
        f"\n{'set':<10}{'ir':>5} {'recipe':<12}{'share':>6}{'forecast RMSE':>18}{'extrapolated':>18}{'norm change':>14}"
    )
    for key in sorted({(r["dataset"], r["imbalance"], r["recipe"], r["share"]) for r in rows}):
        sel = [r for r in rows if (r["dataset"], r["imbalance"], r["recipe"], r["share"]) == key]
        v, n = np.array([r["forecast_rmse"] for r in sel]), np.array([r["norm_change"] for r in sel])
        print(
            f"{key[0]:<10}{key[1]:>5g} {key[2]:<12}{key[3]:>6.2f}{v.mean():>10.3f}+-{v.std():.3f}{n.mean():>14.3f}"
        )


if __name__ == "__main__":
    main()
