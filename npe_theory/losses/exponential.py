"""The exponential tail l(eta) = exp(-eta): Proposition 1's loss, whose optimum is W(x) (docs/theory.md, section 3).

May import: numpy and the npe_theory modules below the losses (``lambertw``, ``losses.base``).
"""

from __future__ import annotations

import numpy as np

from ..lambertw import _lambert_w_positive, lambert_w_of_exp
from .base import OneWayLoss, register_loss


@register_loss("exp")
class Exponential(OneWayLoss):
    """l = e^-eta, p = l'' = e^-eta; the optimum W(x) solves eta e^eta = x and grows like ln x - ln ln x."""

    label = "exponential tail  l = e^(-eta)"
    tail = "exponential tail"
    help = "e^(-eta), the loss Proposition 1 is stated for"
    curvature_is_push = True

    def value(self, eta):
        with np.errstate(over="ignore"):  # e^-eta for eta < -709 is +inf, its true (overflowed) value
            return np.exp(-eta)

    def slope(self, eta):
        with np.errstate(over="ignore"):
            return -np.exp(-eta)

    def curvature(self, eta):
        with np.errstate(over="ignore"):
            return np.exp(-eta)

    def log_push(self, eta):
        return -np.asarray(eta, dtype=np.float64)

    @property
    def push_at_zero(self) -> float:
        return 1.0

    def optimum(self, x):
        return _lambert_w_positive(x)

    def optimum_of_log(self, log_x):
        return np.asarray(lambert_w_of_exp(log_x), dtype=np.float64)

    def gaussian_log_moments(self, mu, s2):
        # E[e^-t] = e^(-mu + s^2 / 2) for t ~ N(mu, s^2), exactly
        return -mu + s2 / 2, -mu + s2 / 2

    def torch_value(self, eta, F):
        return (-eta).exp()

    def symbolic(self, eta):
        import sympy as sp

        return sp.exp(-eta)

    def symbolic_optimum(self, x):
        import sympy as sp

        return sp.LambertW(x)
