"""The scalar PEM problem under Neural Collapse and its minimizer (docs/theory.md, sections 2-4 and 8).

    J_c(eta) = n l(eta) + (lam_c / 2) eta^2,   lam_c = lam / feature_norm_sq,

with ``l`` a registered one-way loss (``npe_theory.losses``): ``exp`` (the exponential tail, optimum
W(x)), ``logistic`` (the NPE paper's, the root of eta (1 + e^eta) = x) or ``squared_hinge`` (2x / (2x + 1)).
The minimizer depends on the saturation variable ``x = n feature_norm_sq / lam`` alone.

Everything is computed from ``L = ln x`` where ``x`` would overflow, so any finite
positive ``n``, ``lam``, ``feature_norm_sq`` work.
"""

from __future__ import annotations

import numpy as np

from .blocks import blockwise
from .errors import InputError
from .lambertw import lambert_w_of_exp
from .losses import get_loss
from .validate import as_float_array, broadcastable, scalar_or_array

_TINY = np.finfo(np.float64).tiny


def _saturation(n, lam, feature_norm_sq) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated, broadcast ``n, lam, feature_norm_sq`` and ``x = n feature_norm_sq / lam`` (may be inf or 0)."""
    n = as_float_array("n", n, positive=True)
    lam = as_float_array("lam", lam, positive=True)
    fns = as_float_array("feature_norm_sq", feature_norm_sq, positive=True)
    try:
        n, lam, fns = np.broadcast_arrays(n, lam, fns)
    except ValueError as exc:
        raise InputError(f"n, lam, feature_norm_sq: shapes do not broadcast ({exc})") from None
    with np.errstate(over="ignore", under="ignore"):
        x = n * fns / lam
    return x, n, lam, fns


def _minimizer(x: np.ndarray, log_of_rest, loss) -> np.ndarray:
    """The minimizer at saturation ``x``; entries where x is 0 or inf go through ``log_of_rest(mask)`` = ln x."""
    normal = (x >= _TINY) & (x < np.inf)
    with np.errstate(all="ignore"):
        if normal.all():
            return blockwise(loss.optimum, x)
        out = np.empty_like(x)
        out[normal] = blockwise(loss.optimum, x[normal])
        # a subnormal x: the optimum is x p(0) to first order, exact in float64 (W(x) = x, the logistic root x / 2)
        sub = (x > 0) & (x < _TINY)
        out[sub] = loss.push_at_zero * x[sub]
        rest = ~normal & ~sub
        out[rest] = loss.optimum_of_log(log_of_rest(rest))
    return out


def optimal_logit(n, lam, loss: str = "exp", feature_norm_sq=1.0):
    """Minimizer of ``J_c(eta) = n l(eta) + lam / (2 feature_norm_sq) eta^2``.

    exp: ``W(x)``; logistic: the root of ``eta (1 + e^eta) = x``; ``x = n feature_norm_sq / lam``.
    Broadcasts its array arguments. Relative error below 1e-15 (both losses) wherever x and the
    result are normal floats (a subnormal result has fewer digits to give).
    """
    spec = get_loss(loss)
    x, n, lam, fns = _saturation(n, lam, feature_norm_sq)
    # ln x as a sum of three logs only where x itself left the normal range: elsewhere it would cost |ln x| ulps
    return scalar_or_array(_minimizer(x, lambda m: np.log(n[m]) + np.log(fns[m]) - np.log(lam[m]), spec))


def optimal_logit_of_log(log_x, loss: str = "exp"):
    """The minimizer as a function of the saturation variable's log, ``L = ln x`` (any finite L)."""
    spec = get_loss(loss)
    log_x = as_float_array("log_x", log_x)
    return scalar_or_array(np.asarray(spec.optimum_of_log(log_x), dtype=np.float64))


def pem_loss(eta, loss: str = "exp"):
    """Per-sample loss ``l(eta)`` of a registered loss: ``exp(-eta)``, ``softplus(-eta)``, ``max(0, 1 - eta)^2``, ..."""
    spec = get_loss(loss)
    eta = as_float_array("eta", eta)
    return scalar_or_array(np.asarray(spec.value(eta)))


def objective(eta, n, lam, loss: str = "exp", feature_norm_sq=1.0):
    """``J_c(eta) = n l(eta) + (lam_c / 2) eta^2`` with ``lam_c = lam / feature_norm_sq``."""
    get_loss(loss)
    eta = as_float_array("eta", eta)
    n = as_float_array("n", n, positive=True)
    lam = as_float_array("lam", lam, positive=True)
    fns = as_float_array("feature_norm_sq", feature_norm_sq, positive=True)
    broadcastable(eta=eta, n=n, lam=lam, feature_norm_sq=fns)
    with np.errstate(
        over="ignore"
    ):  # beyond the float range the objective is +inf, its true (overflowed) value
        return scalar_or_array(np.asarray(n * pem_loss(eta, loss) + 0.5 * (lam / fns) * eta**2))


def logistic_bracket(x):
    """``(W(x - W(x)), W(x))``: strict bounds on the logistic minimizer for every x > 0.

    ln(x - W(x)) = ln x + ln(-expm1(-W(x))) because W(x) / x = e^{-W(x)}; expm1 keeps
    the lower bound accurate at tiny x, where x - W(x) ~ x^2 cancels in plain arithmetic.
    """
    x = as_float_array("x", x, positive=True)
    log_x = np.log(x)
    upper = _minimizer(x, lambda m: log_x[m], get_loss("exp"))
    lower = lambert_w_of_exp(log_x + np.log(-np.expm1(-upper)))
    return scalar_or_array(lower), scalar_or_array(upper)
