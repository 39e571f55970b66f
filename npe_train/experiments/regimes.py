"""The runs behind figures F7 and F8: five data sets over the weight decay felt and the length, one point per run.

``regime_runs`` trains the grid on each set with its default network (synthetic and digits: MLP;
MNIST-1D: 1-D CNN; digits28: 2-D CNN; digits100, 100 classes: MLP; imbalance 100; about 20 minutes on 2 CPU cores), the weight
decay set from each set's own steps so that the PEM feels the grid's lambda*s, and returns one
summary per run; ``npe figures --retrain-regimes`` writes them to ``npe_theory/runs/regime_runs.json``
and redraws F7 and F8 from it (docs/regimes.md).
Imports: ``npe_theory`` and ``runs.py``.
"""

from __future__ import annotations

from npe_theory.priors import prior_match
from npe_theory.references import table_references

from .runs import train_summaries

#: (lambda*s, epochs): from the transient to equilibrium, short and long runs, everything else each set's default
GRID = ((0.05, 20), (0.15, 60), (0.4, 60), (0.4, 150), (1.0, 60), (2.5, 60))
SETS = ("synthetic", "digits", "mnist1d", "digits28", "digits100")


def summarize_run(results: dict) -> dict:
    """What F7 and F8 plot from one run: lambda*s, each reference's centered RMSE, the learned and the "
    "theory's slope on ln N_c."""
    pem, cfg = results["pem"], results["config"]
    return {
        "dataset": cfg["dataset"],
        "weight_decay": cfg.get(
            "pem_weight_decay", cfg["weight_decay"]
        ),  # the PEM's (runs before it had its own: shared)
        "epochs": cfg["epochs"],
        "seed": cfg["seed"],
        "lambda_s": pem["lambda_s"],
        "regime": pem["regime"],
        **{f"rmse_{k}": pem["prior_match"][k]["centered_rmse"] for k in table_references()},
        "slope_learned": pem["prior_match"]["vs_log_counts"]["slope"],
        "slope_closed_form": prior_match(pem["predicted"], results["counts"]).slope,
        "slope_equilibrium": prior_match(pem["equilibrium"], results["counts"]).slope,
        "accuracy": {rule: v["overall"] for rule, v in results["accuracy"].items()},
    }


def regime_runs(grid=GRID, sets=SETS, seed: int = 0, progress: bool = True, **overrides) -> list[dict]:
    """Train each set of ``sets`` once per (lambda*s, epochs) of ``grid`` (``overrides`` change other settings)."""
    return train_summaries(
        [
            (
                {
                    **overrides,
                    "dataset": ds,
                    "imbalance": overrides.get("imbalance", 100),
                    "target_lambda_s": target,
                    "epochs": epochs,
                    "eval_every": epochs,
                    "seed": seed,
                },
                summarize_run,
            )
            for ds in sets
            for target, epochs in grid
        ],
        "regime runs",
        progress,
    )
