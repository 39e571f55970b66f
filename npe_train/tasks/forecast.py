"""The forecast a run makes of its final PEM at chosen epochs, and the early warning it gives (docs/regimes.md,
"Forecasts").

At the end of a forecast epoch the run holds the epoch's feature rows (the steps computed them), the PEM's heads and
momentum buffers (the replay tracks them to float32 rounding), the class counts and the rest of its schedule.
``npe_theory.forecast.forecast_pem`` runs that schedule on the PEM with the features held at the epoch's moments; the
forecast is compared with the spread-aware optimum at those moments (would the PEM end at its equilibrium, or lag
it?), and the PEM weight decay that would bring lambda*s to ``TARGET_LAMBDA_S`` from the next epoch on is given while
it can still be used. At the end of the run each forecast is scored against the learned PEM (``score``).
Imports: ``npe_theory`` only.
"""

from __future__ import annotations

import numpy as np

from npe_theory.collapse import class_means_of
from npe_theory.errors import InputError
from npe_theory.forecast import forecast_pem
from npe_theory.priors import prior_match
from npe_theory.report import EQUILIBRIUM_GAP
from npe_theory.spread import NoRoot, class_spread, spread_logit

TARGET_LAMBDA_S = (
    1.5  # the default recipe's aim: every run at or above it sat near equilibrium (docs/regimes.md)
)
# Also forecast with the features grown as measured (``eta_extrapolated``): a second simulation, so off in a run;
# benchmarks/forecast_sets.py turns it on to measure it (docs/regimes.md, "Forecasts")
EXTRAPOLATE = False


def forecast_epochs(shares, epochs: int) -> list[int]:
    """The epochs (0-based) that end each share of the run, without the last (no step is left after it)."""
    return sorted({max(0, round(s * epochs) - 1) for s in shares} - {epochs - 1})


def growth_rates(
    history: list[tuple[int, list]], trace, epoch: int, norm_sq_now: np.ndarray
) -> np.ndarray | None:
    """Each class's growth d ln ||mu_c||^2 / dS per unit of optimizer time S (the sum of the steps' learning rates): the
    least-squares slope over the report lines of the later half of the epochs so far (epoch // 2 to now, this epoch's
    norms ``norm_sq_now`` the last point). ``history``: (epoch, per-class ||mu_c||^2) of earlier report lines. None with
    fewer than two points; a class whose norm is not positive at some point grows by 0."""
    points = [(e, n) for e, n in history if epoch // 2 <= e < epoch and n is not None]
    if not points:
        return None
    time = np.cumsum(
        [lr * steps for lr, steps in zip(trace.lrs, trace.steps)]
    )  # optimizer time after each epoch
    s = np.array([time[e] for e, _ in points] + [time[epoch]])
    norms = np.array([np.asarray(n, dtype=np.float64) for _, n in points] + [norm_sq_now])
    sc = s - s.mean()
    if not sc @ sc > 0:
        return None
    positive = np.all(norms > 0, axis=0)
    y = np.log(np.where(positive, norms, 1.0))
    return np.where(positive, sc @ (y - y.mean(0)) / (sc @ sc), 0.0)


def forecast_now(outputs, trace, recipe, counts, remaining_lrs, felt: float, history=()) -> dict | None:
    """The forecast of the final PEM from this epoch (``outputs``: the epoch's feature rows; ``trace.replay``: the PEM's
    heads and buffers now; ``remaining_lrs``: every step left; ``felt``: lambda*s so far), its regime and the decay
    advice; None without rows (mixing, dense maps, a set too large to keep) or for a non-linear PEM.

    ``eta``: the features held at this epoch's moments. Beside it, ``eta_extrapolated``: each class's features scaled
    by the root of the growth still ahead, ``exp(rate_c * S_left / 2)`` for ``||mu_c||^2``, ``rate_c`` the class's
    growth per unit of optimizer time over the later half of the epochs so far (``growth_rates``, from ``history``:
    the earlier report lines' (epoch, class ||mu_c||^2)), fading linearly to 0 by the end, and ``S_left`` the sum of
    the learning rates left. Given the final class norms, the forecast meets its targets; measured on five sets, this
    extrapolation is the better forecast from half the run but not from a quarter, and far off from a tenth (features
    that first shrink, then grow), so the forecast holds the features (docs/regimes.md, "Forecasts")."""
    got = None if outputs is None else outputs.result()
    if got is None or trace.replay is None:
        return None
    h, labels = (t.detach().cpu().numpy() for t in got)
    counts = np.asarray(counts, dtype=np.float64)
    if np.bincount(labels, minlength=len(counts)).min() == 0:
        return None  # a class without a row this epoch: no moments to hold
    h = h.astype(np.float32, copy=False)
    lrs = np.asarray(remaining_lrs, dtype=np.float64)
    norm_sq = np.sum(class_means_of(h, labels, len(counts)) ** 2, axis=1)  # ||mu_c||^2
    rates = growth_rates(list(history), trace, len(trace.lrs) - 1, norm_sq)
    # ln ||mu_c||^2 grows by rate_c S_left / 2 (the rate fading linearly to 0 by the end); rows scale by its root
    scales = None if rates is None else np.exp(0.25 * rates * float(np.sum(lrs)))

    def run(features):
        return forecast_pem(
            features,
            labels,
            counts,
            trace.replay,
            lrs,
            recipe.weight_decay,
            momentum=recipe.momentum,
            alpha=recipe.alpha,
            loss=recipe.loss,
        )

    fc = run(h)
    grown = None
    if EXTRAPOLATE:
        grown = fc if scales is None else run(h * scales.astype(np.float32)[labels][:, None])
    ahead = float(np.sum(lrs)) / (1.0 - recipe.momentum)  # lambda*s per unit of weight decay, steps left
    out = {
        "eta": fc.eta.tolist(),
        "eta_extrapolated": None if grown is None else grown.eta.tolist(),
        "growth_rates": None if rates is None else rates.tolist(),
        "feature_scale": 1.0 if scales is None else float(np.exp(np.log(scales).mean())),
        "steps_left": fc.steps,
        "lambda_s_end": felt + recipe.weight_decay * ahead,
        "equilibrium": None,
        "gap": None,
        "regime": None,
        "advice_pem_weight_decay": (TARGET_LAMBDA_S - felt) / ahead
        if ahead > 0 and felt < TARGET_LAMBDA_S
        else None,
        "class_norm_sq": norm_sq.tolist(),
    }
    try:  # the optimum of the PEM's objective at these moments: does the forecast reach it?
        spread = class_spread(h, labels, len(counts))
        with np.errstate(all="ignore"):
            eq = spread_logit(spread, counts, recipe.weight_decay, loss=recipe.loss, weight=recipe.alpha)
    except (NoRoot, InputError):
        return out
    gap = prior_match(fc.eta, reference=eq).centered_rmse
    out.update(
        equilibrium=eq.tolist(), gap=gap, regime="equilibrium" if gap <= EQUILIBRIUM_GAP else "lagging"
    )
    return out


def warning_line(epoch: int, epochs: int, fc: dict) -> str:
    """One line for the progress output: where the run is forecast to end, and what would change it."""
    where = f"forecast at epoch {epoch + 1}/{epochs}: the PEM ends at lambda*s {fc['lambda_s_end']:.2f}"
    if fc["regime"] is not None:
        where += f", {fc['gap']:.3f} nats from its equilibrium at these features ({fc['regime']})"
    if fc["advice_pem_weight_decay"] is not None and (fc["regime"] != "equilibrium"):
        where += (
            f"; a PEM weight decay of {fc['advice_pem_weight_decay']:.3g} from the next epoch on reaches lambda*s "
            f"{TARGET_LAMBDA_S:g}"
        )
    return where


def score(forecasts: list[tuple[int, dict]], learned, final_norm_sq, counts, epochs: int) -> list[dict]:
    """Each forecast (epoch, forecast) against the final learned PEM: centered RMSE in nats (``prior_match``), and how
    much the class-mean norms moved after it (centered RMSE of ln ||mu_c||^2, the assumption the forecast makes)."""
    out = []
    learned = np.asarray(learned, dtype=np.float64)
    final = np.log(np.maximum(np.asarray(final_norm_sq, dtype=np.float64), 1e-300))
    for epoch, fc in forecasts:
        then = np.log(np.maximum(np.asarray(fc["class_norm_sq"]), 1e-300))
        moved = final - then
        out.append(
            {
                "epoch": epoch,
                "share": (epoch + 1) / epochs,
                "centered_rmse": prior_match(np.asarray(fc["eta"]), reference=learned).centered_rmse,
                "centered_rmse_extrapolated": None
                if fc.get("eta_extrapolated") is None
                else prior_match(np.asarray(fc["eta_extrapolated"]), reference=learned).centered_rmse,
                "feature_scale": fc["feature_scale"],
                "regime": fc["regime"],
                "gap": fc["gap"],
                "lambda_s_end": fc["lambda_s_end"],
                "advice_pem_weight_decay": fc["advice_pem_weight_decay"],
                "norm_change": float(np.sqrt(np.mean((moved - moved.mean()) ** 2))),
                "norm_shift": float(moved.mean()),
            }
        )
    return out
