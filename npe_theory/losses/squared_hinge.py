"""The one-way squared hinge l(eta) = max(0, 1 - eta)^2: a loss of finite support (docs/theory.md, section 8).

Its optimum has a closed form: on eta < 1 the stationarity condition eta = x p(eta) = 2 x (1 - eta) gives

    eta* = 2 x / (2 x + 1) = 1 / (1 + 1 / (2 x)),

which saturates at 1, where the loss stops pushing. Its sensitivity to the count, d eta* / d ln x =
2 x / (2 x + 1)^2, vanishes like 1 / (2 x): a PEM trained with it learns no log-prior once the classes
are large. What the exponential tail gives (ln N_c up to a constant) is the tail's doing, not the
one-way design's.
May import: numpy, scipy and ``losses.base``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfcx, expit, log_ndtr

from .base import OneWayLoss, register_loss

_LN2 = float(np.log(2.0))
_SERIES_BELOW = -20.0  # a Phi(a) + phi(a) by its asymptotic series below this (relative error < 1e-9 there)


def _log_partial_mean(a) -> np.ndarray:
    """ln(a Phi(a) + phi(a)) = ln E[(a + z)_+] for z ~ N(0, 1), elementwise, without cancellation for a << 0.

    a Phi(a) + phi(a) = phi(a) (1 + a R(a)), R = Phi / phi the Mills ratio (sqrt(pi / 2) erfcx(-a / sqrt 2));
    for a below -20 the bracket is its series 1/a^2 - 3/a^4 + 15/a^6 - 105/a^8 + 945/a^10.
    """
    a = np.asarray(a, dtype=np.float64)
    log_phi = -0.5 * a * a - 0.5 * np.log(2 * np.pi)
    with np.errstate(
        divide="ignore", invalid="ignore", over="ignore"
    ):  # each branch is kept only where it is exact
        upper = np.log(a * np.exp(log_ndtr(a)) + np.exp(log_phi))
        middle = log_phi + np.log1p(a * np.sqrt(np.pi / 2) * erfcx(-a / np.sqrt(2)))
        b = 1.0 / (a * a)
        series = log_phi + np.log(b * (1 - b * (3 - b * (15 - b * (105 - 945 * b)))))
    return np.where(a >= 0, upper, np.where(a > _SERIES_BELOW, middle, series))[()]


@register_loss("squared_hinge")
class SquaredHinge(OneWayLoss):
    """l = max(0, 1 - eta)^2, p = 2 max(0, 1 - eta), l'' = 2 [eta < 1]."""

    label = "one-way squared hinge  l = max(0, 1 - eta)^2"
    tail = "finite support"
    help = "max(0, 1 - eta)^2: a finite-support loss whose optimum saturates below 1, so it does not estimate ln N_c"

    def value(self, eta):
        return np.maximum(1.0 - np.asarray(eta, dtype=np.float64), 0.0) ** 2

    def slope(self, eta):
        return -2.0 * np.maximum(1.0 - np.asarray(eta, dtype=np.float64), 0.0)

    def curvature(self, eta):
        return np.where(np.asarray(eta) < 1.0, 2.0, 0.0)

    @property
    def push_at_zero(self) -> float:
        return 2.0

    def optimum(self, x):
        return 1.0 / (
            1.0 + 0.5 / np.asarray(x, dtype=np.float64)
        )  # 2x / (2x + 1), no overflow at the float range's top

    def optimum_of_log(self, log_x):
        return expit(np.asarray(log_x, dtype=np.float64) + _LN2)  # 1 / (1 + e^-L / 2)

    def gaussian_log_moments(self, mu, s2):
        """E[p(t)] = 2 E[(1 - t)_+] = 2 s (a Phi(a) + phi(a)) and E[l''] = 2 Phi(a), a = (1 - mu) / s (closed forms),
        elementwise; at s = 0, p(mu) and l''(mu) themselves."""
        mu, s2 = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s2, dtype=np.float64))
        spread = s2 > 0
        s = np.sqrt(np.where(spread, s2, 1.0))
        a = (1.0 - mu) / s
        with np.errstate(divide="ignore"):
            push = np.where(
                spread, _LN2 + np.log(s) + _log_partial_mean(a), _LN2 + np.log(np.maximum(1.0 - mu, 0.0))
            )
            curvature = np.where(spread, _LN2 + log_ndtr(a), np.where(mu < 1, _LN2, -np.inf))
        return push[()], curvature[()]

    def torch_value(self, eta, F):
        return F.relu(1.0 - eta).square()

    def symbolic(self, eta):
        import sympy as sp

        return sp.Piecewise(((1 - eta) ** 2, eta < 1), (0, True))

    def symbolic_optimum(self, x):
        return 2 * x / (2 * x + 1)
