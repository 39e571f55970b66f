"""The scalar PEM problem under Neural Collapse and its minimizer (docs/theory.md, sections 2-4).

    J_c(eta) = n l(eta) + (lam_c / 2) eta^2,   lam_c = lam / feature_norm_sq,

with ``l(eta) = exp(-eta)`` ("exp", the exponential tail) or ``log(1 + exp(-eta))``
("logistic", the one-way logistic loss). The minimizer depends on the saturation
variable ``x = n feature_norm_sq / lam`` alone:

* exp:      eta* = W(x)                      (stationarity: eta e^eta = x)
* logistic: eta_L solves eta (1 + e^eta) = x (equivalently eta e^eta = x - eta)

Everything is computed from ``L = ln x`` where ``x`` would overflow, so any finite
positive ``n``, ``lam``, ``feature_norm_sq`` work.
"""
from __future__ import annotations

import numpy as np

from ._validate import LOSSES, as_float_array, choice, scalar_or_array
from .lambertw import _lambert_w_positive, blockwise, lambert_w_of_exp
from .errors import InputError

# Newton steps on the logistic stationarity condition from W(x): enough for 2.3e-16 worst relative
# error over ln x in [-745, 710] (docs/theory.md, section 4; the gap to the root is largest near x ~ 1).
_NEWTON_STEPS = 5
_TINY = np.finfo(np.float64).tiny
_HUGE_X = 1e300  # above, the logistic root equals W(x) to double precision (their gap is eta / x relative)


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


def _logistic_of_x(x: np.ndarray) -> np.ndarray:
    """Root of ``eta (1 + e^eta) = x`` for normal float x, by Newton's method from eta = W(x).

    f(eta) = eta (1 + e^eta) - x is increasing and convex for eta > 0 and W(x) lies above the
    root (there f = W(x) > 0), so the iterates fall monotonically onto it and never overflow.
    Iterating in eta itself, not ln eta, keeps full relative accuracy where eta ~ x / 2 is tiny.
    """
    w = _lambert_w_positive(x)
    eta = w
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(_NEWTON_STEPS):
            e = np.exp(eta)
            eta = eta - (eta * (1.0 + e) - x) / (1.0 + e + eta * e)
    return np.where(x > _HUGE_X, w, eta)  # eta (1 + e^eta) would overflow at the top of the range


def _minimizer(x: np.ndarray, log_of_rest, loss: str) -> np.ndarray:
    """The minimizer at saturation ``x``; entries where x is 0 or inf go through ``log_of_rest(mask)`` = ln x."""
    kernel = _lambert_w_positive if loss == "exp" else _logistic_of_x
    normal = (x >= _TINY) & (x < np.inf)
    with np.errstate(all="ignore"):
        if normal.all():
            return blockwise(kernel, x)
        out = np.empty_like(x)
        out[normal] = blockwise(kernel, x[normal])
        # a subnormal x: W(x) = x and the logistic root x / (1 + e^x) = x / 2, both exact in float64
        sub = (x > 0) & (x < _TINY)
        out[sub] = x[sub] if loss == "exp" else 0.5 * x[sub]
        rest = ~normal & ~sub
        out[rest] = _minimizer_of_log(log_of_rest(rest), loss)
    return out


def _minimizer_of_log(log_x: np.ndarray, loss: str) -> np.ndarray:
    """The minimizer from ``L = ln x`` for any finite L; through x = e^L where that is a normal float."""
    if loss == "exp":
        return np.asarray(lambert_w_of_exp(log_x), dtype=np.float64)
    with np.errstate(over="ignore", under="ignore"):
        x = np.exp(log_x)
    out = np.empty_like(log_x)
    normal = (x >= _TINY) & (x < np.inf)
    out[normal] = blockwise(_logistic_of_x, x[normal])
    big = log_x > 0
    # Beyond the float range the root is W(x) (gap eta / x) above and x / 2 below (x / (1 + e^eta), eta < 1e-300).
    out[~normal & big] = lambert_w_of_exp(log_x[~normal & big])
    out[~normal & ~big] = np.exp(log_x[~normal & ~big] - np.log(2.0))
    return out


def optimal_logit(n, lam, loss: str = "exp", feature_norm_sq=1.0):
    """Minimizer of ``J_c(eta) = n l(eta) + lam / (2 feature_norm_sq) eta^2``.

    exp: ``W(x)``; logistic: the root of ``eta (1 + e^eta) = x``; ``x = n feature_norm_sq / lam``.
    Broadcasts its array arguments. Relative error below 1e-15 (both losses) wherever x and the
    result are normal floats (a subnormal result has fewer digits to give).
    """
    choice("loss", loss, LOSSES)
    x, n, lam, fns = _saturation(n, lam, feature_norm_sq)
    # ln x as a sum of three logs only where x itself left the normal range: elsewhere it would cost |ln x| ulps
    return scalar_or_array(_minimizer(x, lambda m: np.log(n[m]) + np.log(fns[m]) - np.log(lam[m]), loss))


def optimal_logit_of_log(log_x, loss: str = "exp"):
    """The minimizer as a function of the saturation variable's log, ``L = ln x`` (any finite L)."""
    choice("loss", loss, LOSSES)
    log_x = as_float_array("log_x", log_x)
    return scalar_or_array(_minimizer_of_log(log_x, loss))


def pem_loss(eta, loss: str = "exp"):
    """Per-sample loss ``l(eta)``: ``exp(-eta)`` or ``softplus(-eta) = log(1 + exp(-eta))``."""
    choice("loss", loss, LOSSES)
    eta = as_float_array("eta", eta)
    with np.errstate(over="ignore"):  # exp(-eta) for eta < -709 is +inf, its true (overflowed) value
        out = np.exp(-eta) if loss == "exp" else np.logaddexp(0.0, -eta)
    return scalar_or_array(out)


def objective(eta, n, lam, loss: str = "exp", feature_norm_sq=1.0):
    """``J_c(eta) = n l(eta) + (lam_c / 2) eta^2`` with ``lam_c = lam / feature_norm_sq``."""
    choice("loss", loss, LOSSES)
    eta = as_float_array("eta", eta)
    n = as_float_array("n", n, positive=True)
    lam = as_float_array("lam", lam, positive=True)
    fns = as_float_array("feature_norm_sq", feature_norm_sq, positive=True)
    with np.errstate(over="ignore"):  # beyond the float range the objective is +inf, its true (overflowed) value
        return scalar_or_array(np.asarray(n * pem_loss(eta, loss) + 0.5 * (lam / fns) * eta**2))


def logistic_bracket(x):
    """``(W(x - W(x)), W(x))``: strict bounds on the logistic minimizer for every x > 0.

    ln(x - W(x)) = ln x + ln(-expm1(-W(x))) because W(x) / x = e^{-W(x)}; expm1 keeps
    the lower bound accurate at tiny x, where x - W(x) ~ x^2 cancels in plain arithmetic.
    """
    x = as_float_array("x", x, positive=True)
    log_x = np.log(x)
    upper = _minimizer(x, lambda m: log_x[m], "exp")
    lower = lambert_w_of_exp(log_x + np.log(-np.expm1(-upper)))
    return scalar_or_array(lower), scalar_or_array(upper)
