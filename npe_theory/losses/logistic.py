"""The one-way logistic loss l(eta) = softplus(-eta) = ln(1 + e^-eta): what the NPE paper trains (docs/theory.md, section 4).

Its optimum is the root of ``eta (1 + e^eta) = x``, found by Newton's method from W(x); it lies within
O(ln x / x) below W(x), so the loss has the exponential tail's ln-count growth.
May import: numpy, scipy and the npe_theory modules below the losses (``lambertw``, ``losses.base``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit

from ..lambertw import _lambert_w_positive, blockwise, lambert_w_of_exp
from .base import OneWayLoss, register_loss

# Newton steps on the stationarity condition from W(x): enough for 2.3e-16 worst relative error over
# ln x in [-745, 710] (docs/theory.md, section 4; the gap to the root is largest near x ~ 1).
_NEWTON_STEPS = 5
_TINY = np.finfo(np.float64).tiny
_HUGE_X = 1e300  # above, the root equals W(x) to double precision (their gap is eta / x relative)
_Z_MAX = 38.6  # exp(-z^2 / 2) below the smallest float64 beyond it
_Z_STEP = (
    0.5  # trapezoid step in units of 1 / s: error ~ exp(-2 pi^2 / (s h)) = exp(-4 pi^2) ~ 1e-17 relative
)
_S_MAX = 1e5  # output spread beyond which the rule would need more than 1.5e7 nodes: refused, not allocated


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


def _tilted(mu: float, s2: float) -> tuple[float, float]:
    """(ln E[sigmoid(mu - s^2 + s z)], ln E[sigmoid(...)^2]) over z ~ N(0, 1), by the trapezoid rule over the window
    that holds the integrand's mass (within [-38.6, 38.6]).

    Tilting by e^-t writes E[sigmoid(-t)] as e^(-mu + s^2/2) E[sigmoid(mu - s^2 + s z)] (and E[sigmoid(t) sigmoid(-t)]
    with the square): bounded integrands. sigmoid has poles at x = i pi (2k + 1), a distance pi / s from the real z
    axis, so the trapezoid rule converges like exp(-2 pi (pi / s) / h); the step h = 0.5 / s (at most 0.5) keeps that
    below 1e-16. Fixed Gauss-Hermite rules lose accuracy as s grows (48 nodes: errors near 1e-5 at s = 2.8)."""
    s = np.sqrt(s2)
    if not s <= _S_MAX:  # NaN included
        raise ArithmeticError(
            f"the PEM output's spread {s:.3g} is beyond the {_S_MAX:g} the quadrature resolves"
        )
    h = _Z_STEP / max(s, 1.0)
    # the mass lies between z = 0 (the Gaussian's peak) and z = (s^2 - mu) / s (where the sigmoid turns on); twelve
    # units beyond either, the Gaussian factor is below e^-72 of its value there
    turn = (s2 - mu) / s if s > 0 else 0.0
    lo, hi = max(-_Z_MAX, min(0.0, turn) - 12.0), min(_Z_MAX, max(0.0, turn) + 12.0)
    z = np.arange(lo, hi + h / 2, h)
    log_w = -0.5 * z * z + np.log(h / np.sqrt(2 * np.pi))
    one = log_expit(mu - s2 + s * z)
    a, b = one + log_w, 2 * one + log_w
    ma, mb = a.max(), b.max()  # log-sum-exp by hand: scipy's costs more than the sum here
    return float(ma + np.log(np.exp(a - ma).sum())), float(mb + np.log(np.exp(b - mb).sum()))


@register_loss("logistic")
class Logistic(OneWayLoss):
    """l = softplus(-eta), p = sigmoid(-eta), l'' = sigmoid(eta) sigmoid(-eta)."""

    label = "one-way logistic  l = log(1 + e^(-eta))"
    tail = "exponential tail"
    help = "log(1 + e^(-eta)), the paper's PEM loss"

    def value(self, eta):
        return np.logaddexp(0.0, -eta)

    def slope(self, eta):
        return -expit(-eta)

    def curvature(self, eta):
        return expit(eta) * expit(-eta)

    def log_push(self, eta):
        return -np.logaddexp(0.0, eta)  # ln sigmoid(-eta), no underflow for large eta

    @property
    def push_at_zero(self) -> float:
        return 0.5

    def optimum(self, x):
        return _logistic_of_x(x)

    def optimum_of_log(self, log_x):
        log_x = np.asarray(log_x, dtype=np.float64)
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

    def gaussian_log_moments(self, mu, s2):
        la, lb = _tilted(mu, s2)
        return -mu + s2 / 2 + la, -mu + s2 / 2 + lb

    def torch_value(self, eta, F):
        return F.softplus(-eta)

    def symbolic(self, eta):
        import sympy as sp

        return sp.log(1 + sp.exp(-eta))
