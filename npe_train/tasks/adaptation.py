"""How fast a PEM tracks a class distribution that changes during training, measured and predicted (docs/adaptation.md).

After each shift of the stream, per evaluated epoch:

- measured: the centered RMSE of the learned per-class PEM outputs against the exact equilibrium of
  the PEM's objective on the current stream (the report's ``equilibrium``, from that epoch's features
  and counts);
- predicted: the finite-time model (``npe_theory.dynamics.finite_time_logit``) driven by the same
  count schedule, learning rates and the measured class-mean norms, against its own limit for the
  current counts (Proposition 1 at those norms).

The lag is the number of epochs trained on the new stream until the gap is at most ``TRACK_TOLERANCE``
nats (None when the run ends first), and the weight decay felt meanwhile, ``lambda*s``.
Imports: NumPy, ``npe_theory`` and ``methods/trace.py``.
"""

from __future__ import annotations

import numpy as np

from npe_theory.dynamics import finite_time_logit
from npe_theory.priors import predicted_priors, prior_match

from ..methods.trace import PemRecipe

TRACK_TOLERANCE = 0.1  # nats, centered RMSE: "within 0.1 nats of the new equilibrium"


def _gap(a, b) -> float | None:
    if a is None or b is None:
        return None
    return prior_match(np.asarray(a), reference=np.asarray(b)).centered_rmse


def _lag(epochs: list[int], gaps: list[float | None], start: int, end: int) -> int | None:
    """Epochs trained from ``start`` until the first evaluated epoch in [start, end) whose gap is within tolerance."""
    for e, g in zip(epochs, gaps):
        if start <= e < end and g is not None and g <= TRACK_TOLERANCE:
            return e - start + 1
    return None


def model_trajectory(
    metrics: list[dict], recipe: PemRecipe, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(model outputs, model limits), (E, C) each: the finite-time model run over the whole count schedule with the
    per-epoch learning rates and measured class-mean norms (carried forward between evaluations), and Proposition 1
    at each epoch's counts and norms, the point the model would settle at if the stream stayed as it is."""
    counts = np.array([m["effective_counts"] for m in metrics], dtype=np.float64)
    norms, last = [], None
    for m in metrics:
        last = m.get("pem_norm_sq", last)
        norms.append(last)
    first = next(n for n in norms if n is not None)
    norms = np.array([first if n is None else n for n in norms], dtype=np.float64)
    model = finite_time_logit(
        counts,
        recipe.weight_decay,
        [m["lr"] for m in metrics],
        feature_norm_sq=norms,
        momentum=recipe.momentum,
        alpha=recipe.alpha,
        batch_size=batch_size,
        loss=recipe.loss,
        reduction="mean",
        bias=True,
    )
    limits = np.stack(
        [
            predicted_priors(c, recipe.weight_decay, s, "mean", recipe.loss, bias=True, weight=recipe.alpha)
            for c, s in zip(counts, norms)
        ]
    )
    return model, limits


def adaptation_report(metrics: list[dict], shifts, recipe: PemRecipe, batch_size: int) -> dict:
    """``{"shifts": [one entry per shift], "series": per-epoch curves}`` from the run's metrics lines
    (results.json's ``adaptation`` and ``adaptation_series``).

    Each entry: ``epoch``, ``to`` (the new profile), ``lag_measured`` and ``lag_predicted`` (epochs, None
    when not reached before the run or the next shift ends), ``lag_lambda_s_measured`` / ``_predicted``,
    ``gap_before`` (measured, the last evaluated epoch before the shift), and ``tolerance``.
    """
    model, limits = model_trajectory(metrics, recipe, batch_size)
    evaluated = [m for m in metrics if "pem_learned" in m]
    epochs = [m["epoch"] for m in evaluated]
    measured = [_gap(m["pem_learned"], m.get("pem_equilibrium")) for m in evaluated]
    predicted = [_gap(model[e], limits[e]) for e in epochs]
    lam = [m["lambda_s"] for m in metrics]
    entries = []
    bounds = [s.epoch for s in shifts] + [len(metrics)]
    for s, end in zip(shifts, bounds[1:]):
        before = [g for e, g in zip(epochs, measured) if e < s.epoch]
        entry = {
            "epoch": s.epoch,
            "to": str(s).split("=", 1)[1],
            "tolerance": TRACK_TOLERANCE,
            "lag_measured": _lag(epochs, measured, s.epoch, end),
            "lag_predicted": _lag(epochs, predicted, s.epoch, end),
            "gap_before": before[-1] if before else None,
        }
        for kind in ("measured", "predicted"):
            lag = entry[f"lag_{kind}"]
            entry[f"lag_lambda_s_{kind}"] = (
                None if lag is None else lam[s.epoch + lag - 1] - (lam[s.epoch - 1] if s.epoch > 0 else 0.0)
            )
        entries.append(entry)
    series = {
        "epoch": epochs,
        "gap_measured": measured,
        "gap_predicted": predicted,
        "learned": [m["pem_learned"] for m in evaluated],
        "equilibrium": [m.get("pem_equilibrium") for m in evaluated],
        "model": model[epochs].tolist(),
        "model_limit": limits[epochs].tolist(),
        "effective_counts": [metrics[e]["effective_counts"] for e in epochs],
        "vs_log_prior": [m.get("prior_rmse_vs_log_counts") for m in evaluated],
        "accuracy": {
            rule: [m["accuracy"].get(rule) for m in evaluated]
            for rule in ("npe_la", "posthoc_la", "posthoc_la_stale", "argmax")
        },
    }
    return {"shifts": entries, "series": series}
