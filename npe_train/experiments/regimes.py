"""The runs behind figures F7 and F8: the default job over weight decay and epochs, one point per run.

``regime_runs`` trains the grid (MNIST-1D-LT, imbalance 100, 1D CNN; about 3 minutes on 2 CPU
cores) and returns one summary per run; ``npe figures --retrain-regimes`` writes them to
``figures/regime_runs.json`` and redraws F7 and F8 from it (docs/regimes.md).
Imports: ``npe_theory`` and ``runs.py``.
"""
from __future__ import annotations

from npe_theory.priors import prior_match

from .runs import train_summaries

#: (weight decay, epochs): lambda*s from about 0.05 to 3 with everything else the default job's
GRID = ((5e-4, 20), (5e-4, 60), (1e-3, 60), (5e-4, 150), (5e-3, 20), (2e-3, 60), (1e-3, 150), (2e-3, 120), (5e-3, 60), (1e-2, 60))
REFERENCES = ("vs_log_counts", "vs_closed_form", "vs_equilibrium", "vs_finite_time")


def summarize_run(results: dict) -> dict:
    """What F7 and F8 plot from one run: lambda*s, each reference's centered RMSE, the learned and the theory's slope on ln N_c."""
    pem, cfg = results["pem"], results["config"]
    return {"weight_decay": cfg["weight_decay"], "epochs": cfg["epochs"], "seed": cfg["seed"], "lambda_s": pem["lambda_s"],
            "regime": pem["regime"], **{f"rmse_{k}": pem["prior_match"][k]["centered_rmse"] for k in REFERENCES},
            "slope_learned": pem["prior_match"]["vs_log_counts"]["slope"],
            "slope_closed_form": prior_match(pem["predicted"], results["counts"]).slope,
            "slope_equilibrium": prior_match(pem["equilibrium"], results["counts"]).slope,
            "accuracy": {rule: v["overall"] for rule, v in results["accuracy"].items()}}


def regime_runs(grid=GRID, seed: int = 0, progress: bool = True, **overrides) -> list[dict]:
    """Train the default job once per (weight decay, epochs) of ``grid`` (``overrides`` change other settings)."""
    return train_summaries([({**overrides, "weight_decay": wd, "epochs": epochs, "eval_every": epochs, "seed": seed}, summarize_run)
                            for wd, epochs in grid], "regime runs", progress)
