"""The one-way logistic loss l(eta) = softplus(-eta) = ln(1 + e^-eta): what the NPE paper trains (docs/theory.md, section 4).

Its optimum is the root of ``eta (1 + e^eta) = x``, found by Newton's method from W(x); it lies within
O(ln x / x) below W(x), so the loss has the exponential tail's ln-count growth.
May import: numpy, scipy and the npe_theory modules below the losses (``lambertw``, ``losses.base``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit

from ..blocks import blockwise, ragged_blocks
from ..lambertw import _lambert_w_positive, lambert_w_of_exp
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


def _tilted(mu, s2) -> tuple[np.ndarray, np.ndarray]:
    """(ln E[sigmoid(mu - s^2 + s z)], ln E[sigmoid(...)^2]) over z ~ N(0, 1), elementwise over arrays, by the
    trapezoid rule over the window that holds the integrand's mass (within [-38.6, 38.6]).

    Tilting by e^-t writes E[sigmoid(-t)] as e^(-mu + s^2/2) E[sigmoid(mu - s^2 + s z)] (and E[sigmoid(t) sigmoid(-t)]
    with the square): bounded integrands. sigmoid has poles at x = i pi (2k + 1), a distance pi / s from the real z
    axis, so the trapezoid rule converges like exp(-2 pi (pi / s) / h); the step h = 0.5 / s (at most 0.5) keeps that
    below 1e-16. Fixed Gauss-Hermite rules lose accuracy as s grows (48 nodes: errors near 1e-5 at s = 2.8).
    Each element has its own window and step; elements with similar node counts are evaluated together, padded."""
    mu, s2 = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(mu, s2))
    shape, mu, s2 = mu.shape, mu.ravel(), s2.ravel()
    s = np.sqrt(s2)
    if not np.all(s <= _S_MAX):  # NaN included
        bad = float(s[~(s <= _S_MAX)][0])
        raise ArithmeticError(
            f"the PEM output's spread {bad:.3g} is beyond the {_S_MAX:g} the quadrature resolves"
        )
    h = _Z_STEP / np.maximum(s, 1.0)
    # the mass lies between z = 0 (the Gaussian's peak) and z = (s^2 - mu) / s (where the sigmoid turns on); twelve
    # units beyond either, the Gaussian factor is below e^-72 of its value there
    with np.errstate(divide="ignore", invalid="ignore"):
        turn = np.where(s > 0, (s2 - mu) / np.where(s > 0, s, 1.0), 0.0)
    lo = np.maximum(-_Z_MAX, np.minimum(0.0, turn) - 12.0)
    hi = np.minimum(_Z_MAX, np.maximum(0.0, turn) + 12.0)
    nodes = np.ceil((hi + h / 2 - lo) / h).astype(np.int64)  # np.arange(lo, hi + h / 2, h)'s length
    out = np.empty((2, mu.size))
    for idx in ragged_blocks(nodes):  # padded groups of similar node counts, about 1e6 nodes each
        k = np.arange(nodes[idx].max())
        z = lo[idx, None] + k * h[idx, None]
        log_w = -0.5 * z * z + np.log(h[idx] / np.sqrt(2 * np.pi))[:, None]
        one = log_expit((mu[idx] - s2[idx])[:, None] + s[idx, None] * z)
        pad = k >= nodes[idx, None]
        for row, terms in enumerate((one + log_w, 2 * one + log_w)):
            terms[pad] = -np.inf
            peak = terms.max(1)  # log-sum-exp by hand: scipy's costs more than the sum here
            out[row, idx] = peak + np.log(np.exp(terms - peak[:, None]).sum(1))
    return out[0].reshape(shape)[()], out[1].reshape(shape)[()]


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
