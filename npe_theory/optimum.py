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
from scipy.special import expit

from ._validate import LOSSES, as_float_array, choice, scalar_or_array
from .lambertw import _lambert_w_positive, lambert_w_of_exp
from .errors import InputError

_HALLEY_STEPS = 3


def _saturation(n, lam, feature_norm_sq) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``x = n feature_norm_sq / lam`` (may be inf or 0) and ``L = ln x`` (always finite)."""
    n = as_float_array("n", n, positive=True)
    lam = as_float_array("lam", lam, positive=True)
    fns = as_float_array("feature_norm_sq", feature_norm_sq, positive=True)
    try:
        n, lam, fns = np.broadcast_arrays(n, lam, fns)
    except ValueError as exc:
        raise InputError(f"n, lam, feature_norm_sq: shapes do not broadcast ({exc})") from None
    with np.errstate(over="ignore", under="ignore"):
        x = n * fns / lam
    log_x = np.log(n) + np.log(fns) - np.log(lam)
    return x, log_x


def _exp_minimizer(x: np.ndarray, log_x: np.ndarray) -> np.ndarray:
    # Where x is a normal float, W(x) from x itself is accurate to an ulp or two;
    # ln x computed as a sum of three logs would cost |L| ulps at the extremes.
    direct = np.isfinite(x) & (x >= np.finfo(np.float64).tiny)
    if direct.all():
        with np.errstate(all="ignore"):
            return _lambert_w_positive(x)
    out = np.empty_like(log_x)
    with np.errstate(all="ignore"):
        out[direct] = _lambert_w_positive(x[direct])
    out[~direct] = lambert_w_of_exp(log_x[~direct])
    return out


def _logistic_minimizer(log_x: np.ndarray) -> np.ndarray:
    """Root of t + softplus(e^t) = L in t = ln eta, by Halley's method from t = ln W(e^L).

    In t the small-x regime (eta ~ x/2, where the equation is t + ln 2 = L) is
    linear and the large-x regime (eta ~ W(x), gap O(ln x / x)) starts next to the
    root, so three steps reach about |L| ulps (below 1e-13 relative) everywhere.
    """
    with np.errstate(divide="ignore"):
        # below ln x ~ -700, W(e^L) = e^L underflows; there the root is x / 2 to double precision: t = L - ln 2
        t = np.where(log_x < -700.0, log_x - np.log(2.0), np.log(lambert_w_of_exp(np.maximum(log_x, -700.0))))
    with np.errstate(over="ignore", under="ignore"):
        for _ in range(_HALLEY_STEPS):
            eta = np.exp(t)
            s = expit(eta)
            g = t + np.logaddexp(0.0, eta) - log_x
            g1 = 1.0 + eta * s
            g2 = eta * s * (1.0 + eta * (1.0 - s))
            step = g / g1
            t = t - step / (1.0 - 0.5 * step * (g2 / g1))  # ratios, not g1^2: no overflow near eta ~ 1e300
    return np.exp(t)


def optimal_logit(n, lam, loss: str = "exp", feature_norm_sq=1.0):
    """Minimizer of ``J_c(eta) = n l(eta) + lam / (2 feature_norm_sq) eta^2``.

    exp: ``W(x)``; logistic: the root of ``eta (1 + e^eta) = x``; ``x = n feature_norm_sq / lam``.
    Broadcasts its array arguments. Relative error below 1e-15 (exp) and 1e-13 (logistic)
    wherever x and the result are normal floats (a subnormal result has fewer digits to give).
    """
    choice("loss", loss, LOSSES)
    x, log_x = _saturation(n, lam, feature_norm_sq)
    eta = _exp_minimizer(x, log_x) if loss == "exp" else _logistic_minimizer(log_x)
    return scalar_or_array(eta)


def optimal_logit_of_log(log_x, loss: str = "exp"):
    """The minimizer as a function of the saturation variable's log, ``L = ln x`` (any finite L)."""
    choice("loss", loss, LOSSES)
    log_x = as_float_array("log_x", log_x)
    if loss == "exp":
        return lambert_w_of_exp(log_x)
    return scalar_or_array(_logistic_minimizer(log_x))


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
    upper = np.asarray(_exp_minimizer(x, log_x))
    lower = lambert_w_of_exp(log_x + np.log(-np.expm1(-upper)))
    return scalar_or_array(lower), scalar_or_array(upper)
