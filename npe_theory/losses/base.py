"""What a one-way PEM loss is, in one object, and the registry every module asks (docs/theory.md, section 8).

A one-way loss ``l(eta)`` is convex and non-increasing with ``l'(0) < 0``: only the target coordinate is
pushed up. Everything the toolkit computes about a PEM depends on the loss through a few functions of
it, all here: the value, slope ``l'`` and curvature ``l''``; the optimum of the scalar problem

    J(eta) = x l(eta) + eta^2 / 2    (J_c of docs/theory.md, section 2, divided by lam_c),

which is the root of ``eta = x p(eta)`` with the push ``p = -l'``; its inverse ``ln x = ln eta - ln p(eta)``
(the NPE-inverse rule); the two Gaussian expectations the spread model needs; the torch value the trainer
uses; and the sympy expression the checks derive their references from.

A new loss subclasses ``OneWayLoss``, fills in ``value``, ``slope``, ``curvature``, ``torch_value`` and
``symbolic`` (the rest has generic defaults: a safeguarded Newton for the optimum, the trapezoid rule for
the Gaussian expectations) and registers itself with ``@LOSSES.register(name)``.
May import: numpy, scipy, ``npe_theory.registry``, ``npe_theory.validate`` and ``npe_theory.errors``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..registry import Registry

_TINY = np.finfo(np.float64).tiny
_NEWTON_MAX = (
    200  # bracketed Newton steps of the generic optimum: each at least halves the bracket or converges
)
_Z = np.linspace(
    -12.0, 12.0, 481
)  # standard-normal nodes of the generic Gaussian expectation (trapezoid, step 0.05)
_Z_WEIGHTS = np.exp(-0.5 * _Z**2) * (_Z[1] - _Z[0]) / np.sqrt(2 * np.pi)


class OneWayLoss:
    """A one-way PEM loss l(eta). NumPy in, float64 NumPy out, vectorized; ``eta`` is the prior signal (target logit).

    Class attributes: ``name`` (the registry key), ``label`` (what figures and help print), ``tail``
    ("exponential tail": l decays like e^-eta and the optimum grows like ln x; "finite support": l vanishes
    beyond a point and the optimum saturates there), ``curvature_is_push`` (l'' = -l', the exponential tail: the
    spread model then has one unknown, not two).
    """

    name: str = ""
    label: str = ""
    help: str = ""  # one line for --help: the formula and what it is for
    tail: str = ""
    curvature_is_push: bool = False

    # ---- the loss itself: subclasses define these ----
    def value(self, eta: np.ndarray) -> np.ndarray:
        """l(eta)."""
        raise NotImplementedError

    def slope(self, eta: np.ndarray) -> np.ndarray:
        """l'(eta) <= 0."""
        raise NotImplementedError

    def curvature(self, eta: np.ndarray) -> np.ndarray:
        """l''(eta) >= 0 (a generalized second derivative where l' has a kink)."""
        raise NotImplementedError

    def torch_value(self, eta, F):
        """l(eta) of a torch tensor, with ``F`` = ``torch.nn.functional`` (this package never imports torch)."""
        raise NotImplementedError

    def symbolic(self, eta):
        """l(eta) as a sympy expression of the sympy symbol ``eta`` (the checks differentiate it)."""
        raise NotImplementedError

    def symbolic_optimum(self, x):
        """The optimum as a sympy expression of the sympy symbol ``x`` where it has a closed form, else None."""
        return None

    # ---- derived quantities, with generic defaults ----
    def push(self, eta: np.ndarray) -> np.ndarray:
        """p(eta) = -l'(eta) >= 0: how hard the loss pushes the output up."""
        return -self.slope(eta)

    @property
    def push_at_zero(self) -> float:
        """p(0): for a tiny saturation variable the optimum is x p(0) (first order in x)."""
        return float(self.push(np.zeros(1))[0])

    def log_push(self, eta: np.ndarray) -> np.ndarray:
        """ln p(eta); -inf where the loss no longer pushes."""
        with np.errstate(divide="ignore"):
            return np.log(self.push(eta))

    def optimum(self, x: np.ndarray) -> np.ndarray:
        """argmin of x l(eta) + eta^2 / 2 for normal floats x > 0: the root of g(eta) = eta - x p(eta).

        g is increasing (g' = 1 + x l'' >= 1), g(0) = -x p(0) < 0 and g(x p(0)) >= 0 (p is non-increasing),
        so the root lies in (0, x p(0)]; Newton steps that leave the bracket are replaced by bisection.
        Converges to a few ulps; a loss with a closed form overrides this.
        """
        x = np.asarray(x, dtype=np.float64)
        lo, hi = np.zeros_like(x), x * self.push_at_zero
        eta = 0.5 * hi
        with np.errstate(all="ignore"):
            for _ in range(_NEWTON_MAX):
                g = eta - x * self.push(eta)
                lo, hi = np.where(g < 0, eta, lo), np.where(g >= 0, eta, hi)
                step = g / (1.0 + x * self.curvature(eta))
                new = eta - step
                new = np.where((new > lo) & (new < hi), new, 0.5 * (lo + hi))
                done = np.abs(new - eta) <= 4 * np.finfo(np.float64).eps * np.abs(eta)
                eta = new
                if done.all():
                    break
        return eta

    def optimum_of_log(self, log_x: np.ndarray) -> np.ndarray:
        """The optimum from ``L = ln x`` for any finite L: through x = e^L in the normal range, x p(0) below it,
        and the optimum at the largest float above it (a loss whose optimum keeps growing overrides this)."""
        log_x = np.asarray(log_x, dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            x = np.exp(log_x)
        out = np.empty_like(log_x)
        normal = (x >= _TINY) & (x < np.inf)
        out[normal] = self.optimum(x[normal])
        small = ~normal & (log_x < 0)
        with np.errstate(under="ignore"):
            out[small] = np.exp(log_x[small] + np.log(self.push_at_zero))
        out[~normal & ~small] = self.optimum(np.array([np.finfo(np.float64).max]))[0]
        return out

    def log_saturation(self, eta: np.ndarray) -> np.ndarray:
        """The inverse of the optimum: ln x = ln eta - ln p(eta), the x at which ``eta`` is optimal.

        -inf for eta <= 0 (no x > 0 gives it), +inf where the loss no longer pushes (beyond its reach).
        """
        eta = np.asarray(eta, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(eta) - self.log_push(eta)
        return np.where(eta > 0, out, -np.inf)

    def gaussian_log_moments(self, mu, s2) -> tuple[np.ndarray, np.ndarray]:
        """(ln E[p(t)], ln E[l''(t)]) for t ~ N(mu, s2), elementwise over arrays of ``mu`` and ``s2``: what the spread
        model of docs/theory.md, section 7 needs.

        Generic: the trapezoid rule on 481 standard-normal nodes over [-12, 12] (smooth losses: error far below
        1e-12 while s is of order 1; a loss with kinks or heavy spread should override this with its closed form).
        """
        mu, s2 = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(s2, dtype=np.float64))
        t = mu[..., None] + np.sqrt(s2)[..., None] * _Z
        with np.errstate(divide="ignore"):
            return np.log(self.push(t) @ _Z_WEIGHTS)[()], np.log(self.curvature(t) @ _Z_WEIGHTS)[()]

    def __repr__(self) -> str:
        return f"<one-way loss {self.name!r}: {self.label}>"


LOSSES: Registry[OneWayLoss] = Registry("loss")


def register_loss(name: str):
    """Class decorator: instantiate a ``OneWayLoss`` subclass and register it under ``name``."""

    def add(cls):
        loss = cls()
        loss.name = name
        LOSSES.register(name, loss)
        return cls

    return add


def get_loss(name) -> OneWayLoss:
    """The registered loss called ``name`` (a ``OneWayLoss`` passes through); InputError naming ``loss`` otherwise."""
    if isinstance(name, OneWayLoss):
        return name
    return LOSSES.get(name)


def loss_names() -> tuple[str, ...]:
    return LOSSES.names()


def check_loss(name) -> str:
    """``name`` if it is a registered loss, else InputError naming the argument ``loss``."""
    if not isinstance(name, str):
        raise InputError(f"loss: expected the name of a one-way loss, got {name!r:.60}")
    LOSSES.get(name)
    return name
