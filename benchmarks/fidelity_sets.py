"""Fidelity of every prior-report reference on several data sets (docs/regimes.md, "Fidelity across data sets").

For each data set (its default network: MLP for synthetic and digits, 1-D CNN for MNIST-1D, 2-D CNN for digits28),
imbalance and seed, two recipes: the transient one (weight
decay 5e-4, lambda*s well below 1) and an equilibrium one whose weight decay is set from the data
set's own steps per epoch and schedule so that lambda*s = 1.5. Prints one line per run and the mean
+- std per (set, imbalance, recipe), and writes the rows as CSV.

    python benchmarks/fidelity_sets.py --out results/fidelity/runs.csv     # about 15 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npe_theory.io import write_csv  # noqa: E402
from npe_train.experiments.runs import train_summaries  # noqa: E402
from npe_train.loop.build import build_data, build_stream, with_target_lambda_s  # noqa: E402
from npe_train.run.config import make_config  # noqa: E402

SETS = ("synthetic", "digits", "mnist1d", "digits28", "digits100")
REFS = ("vs_closed_form", "vs_equilibrium", "vs_spread", "vs_two_statistic", "vs_finite_time")
TARGET = 1.5


def weight_decay_for(dataset: str, imbalance: float, seed: int, target: float = TARGET) -> float:
    """The PEM weight decay that makes lambda*s equal ``target`` on this data set with the default schedule
    (``--target-lambda-s``: every step of every epoch counts, the last partial batch included). The backbone keeps
    its data set's own decay (the default recipe)."""
    cfg = make_config(dataset=dataset, imbalance=imbalance, seed=seed, target_lambda_s=target)
    return with_target_lambda_s(cfg, build_stream(cfg, build_data(cfg))).pem_weight_decay


def summarize(results: dict) -> dict:
    pem, cfg = results["pem"], results["config"]
    m = pem["prior_match"]
    row = {
        "dataset": cfg["dataset"],
        "model": cfg["model"],
        "imbalance": cfg["imbalance"],
        "seed": cfg["seed"],
        "weight_decay": cfg["weight_decay"],
        "pem_weight_decay": cfg["pem_weight_decay"],
        "lambda_s": pem["lambda_s"],
        "regime": pem["regime"],
        "nc1": pem["nc1"],
        **pem["two_statistics"],
    }
    row.update({k: (m[k]["centered_rmse"] if k in m else None) for k in REFS})
    row["slope_learned"] = m["vs_log_counts"]["slope"]
    row["slope_implied"] = m["implied_vs_log_counts"]["slope"] if "implied_vs_log_counts" in m else None
    row["acc_argmax"], row["acc_npe_la"] = (
        results["accuracy"]["argmax"]["overall"],
        results["accuracy"]["npe_la"]["overall"],
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--imbalances", nargs="+", type=float, default=[100.0, 10.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default="fidelity_runs.csv")
    args = ap.parse_args()
    runs = []
    for ds in args.sets:
        for imb in args.imbalances:
            for seed in args.seeds:
                base = {"dataset": ds, "imbalance": imb, "seed": seed, "eval_every": 60}
                # transient: every parameter at 5e-4 (lambda*s well below 1); equilibrium: the default recipe
                runs.append(({**base, "weight_decay": 5e-4}, summarize))
                runs.append(({**base, "pem_weight_decay": weight_decay_for(ds, imb, seed)}, summarize))
    rows = []
    for settings, fn in runs:  # one at a time, so a long grid keeps what it already measured
        row = train_summaries(
            [(settings, fn)],
            f"{settings['dataset']} ir{settings['imbalance']:g} PEM wd "
            f"{settings.get('pem_weight_decay', settings.get('weight_decay')):.2g}",
        )[0]
        row["recipe"] = "equilibrium" if "pem_weight_decay" in settings else "transient"
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        write_csv(args.out, rows)
    print(
        f"\n{'set':<10}{'ir':>5} {'recipe':<12}{'lambda*s':>9}"
        + "".join(f"{k[3:]:>16}" for k in REFS)
        + f"{'slope':>8}{'implied':>9}"
    )
    keys = sorted({(r["dataset"], r["imbalance"], r["recipe"]) for r in rows})
    for ds, imb, recipe in keys:
        sel = [r for r in rows if (r["dataset"], r["imbalance"], r["recipe"]) == (ds, imb, recipe)]

        def ms(k):
            v = np.array([r[k] for r in sel if r[k] is not None], float)
            return f"{v.mean():.3f}+-{v.std():.3f}" if v.size else "-"

        print(
            f"{ds:<10}{imb:>5g} {recipe:<12}{ms('lambda_s'):>9}"
            + "".join(f"{ms(k):>16}" for k in REFS)
            + f"{ms('slope_learned'):>14}{ms('slope_implied'):>14}"
        )


if __name__ == "__main__":
    main()
