"""The runs behind figure F10: the default job with one shift of the class stream, per scenario and seed
(docs/adaptation.md). Imports: ``runs.py``.
"""

from __future__ import annotations

from functools import partial

from .runs import train_summaries

#: The runs of figure F10: (name, weight decay, shift), each on the default job (MNIST-1D, imbalance 100, 60 epochs).
GRID = (
    ("equilibrium recipe, mild shift", 5e-3, "20=exp:10"),
    ("equilibrium recipe, reversal", 5e-3, "20=reversed:100"),
    ("strong decay, reversal", 2e-2, "20=reversed:100"),
    ("transient recipe, reversal", 5e-4, "20=reversed:100"),
)


def summarize_adaptation(name: str, results: dict) -> dict:
    """What F10 plots from one shifting run: the shift's lags and the per-epoch gaps and accuracies."""
    cfg, series = results["config"], results["adaptation_series"]
    return {
        "name": name,
        "weight_decay": cfg.get("pem_weight_decay", cfg["weight_decay"]),
        "shift": cfg["shift"][0],
        "seed": cfg["seed"],
        "lambda_s": results["pem"]["lambda_s"],
        **{
            k: results["adaptation"][0][k]
            for k in (
                "epoch",
                "lag_measured",
                "lag_predicted",
                "lag_lambda_s_measured",
                "lag_lambda_s_predicted",
                "gap_before",
            )
        },
        "series": {
            k: series[k] for k in ("epoch", "gap_measured", "gap_predicted", "vs_log_prior", "accuracy")
        },
    }


def adaptation_runs(grid=GRID, seeds=(0, 1, 2), progress: bool = True, **overrides) -> list[dict]:
    """Train every (scenario, seed) of ``grid`` (about 6 minutes for the 12 default runs on 2 CPU cores)."""
    return train_summaries(
        [
            (
                {**overrides, "weight_decay": wd, "shift": [shift], "seed": seed},
                partial(summarize_adaptation, name),
            )
            for (name, wd, shift), seed in [(g, s) for g in grid for s in seeds]
        ],
        "adaptation runs",
        progress,
    )
