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


def growth_rate(history: list[tuple[int, list]], trace, epoch: int, norm_sq_now: np.ndarray) -> float | None:
    """The rate at which the class-mean features grow, d mean_c ln ||mu_c||^2 per unit of optimizer time (the sum of the
    steps' learning rates), over the later half of the epochs so far: from the report line nearest epoch / 2 to now.
    ``history``: (epoch, per-class ||mu_c||^2) of earlier report lines. None without an earlier line."""
    earlier = [(e, n) for e, n in history if e < epoch and n is not None]
    if not earlier:
        return None
    then, norms = min(earlier, key=lambda item: abs(item[0] - epoch / 2))
    time = np.cumsum(
        [lr * steps for lr, steps in zip(trace.lrs, trace.steps)]
    )  # optimizer time after each epoch
    elapsed = time[epoch] - time[then]
    if elapsed <= 0:
        return None
    moved = np.log(np.maximum(norm_sq_now, 1e-300)) - np.log(
        np.maximum(np.asarray(norms, dtype=np.float64), 1e-300)
    )
    return float(moved.mean() / elapsed)


def forecast_now(outputs, trace, recipe, counts, remaining_lrs, felt: float, history=()) -> dict | None:
    """The forecast of the final PEM from this epoch (``outputs``: the epoch's feature rows; ``trace.replay``: the PEM's
    heads and buffers now; ``remaining_lrs``: every step left; ``felt``: lambda*s so far), its regime and the decay
    advice; None without rows (mixing, dense maps, a set too large to keep) or for a non-linear PEM.

    ``eta``: the features held at this epoch's moments. Beside it, ``eta_extrapolated``: the same with every feature
    scaled by the growth still ahead, ``exp(rate * S_left / 2)``, ``rate`` the class norms' measured growth per unit of
    optimizer time over the later half of the epochs so far (``growth_rate``, from ``history``: the earlier report
    lines' (epoch, class ||mu_c||^2)) and ``S_left`` the sum of the learning rates left. A uniform growth scales every
    output and so their spread, which centering does not remove; measured on five sets, the extrapolation closes
    that part from half the run on where the growth is steady (digits100) but misjudges it early, when the features
    first shrink and then grow (digits28), so the forecast holds the features (docs/regimes.md, "Forecasts")."""
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
    rate = growth_rate(list(history), trace, len(trace.lrs) - 1, norm_sq)
    scale = 1.0 if rate is None else float(np.exp(0.5 * rate * float(np.sum(lrs))))

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
    grown = run(h * np.float32(scale)) if EXTRAPOLATE and scale != 1.0 else (fc if EXTRAPOLATE else None)
    ahead = float(np.sum(lrs)) / (1.0 - recipe.momentum)  # lambda*s per unit of weight decay, steps left
    out = {
        "eta": fc.eta.tolist(),
        "eta_extrapolated": None if grown is None else grown.eta.tolist(),
        "growth_rate": rate,
        "feature_scale": scale,
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
