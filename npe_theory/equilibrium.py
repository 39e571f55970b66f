"""The exact minimizer of a linear PEM's own regularized objective on real (uncollapsed) features.

For a linear PEM ``eta_c(h) = w_c . h + b_c`` the one-way loss couples row c only to class-c
samples, so the training objective splits into one convex problem per class (docs/theory.md, section 2):

    F_c(theta) = alpha * kappa * sum_{i: y_i = c} l(theta . x_i) + lam / 2 * ||theta||^2,

``x_i = [h_i, 1]`` (``[h_i]`` without a bias), ``kappa = 1 / N`` for a batch-mean loss (the
expected gradient of an epoch of batch means) or 1 for a summed one. Damped Newton in float64
solves each to a reported gradient norm; unlike Proposition 1 nothing here assumes collapse.
Newton starts from Proposition 1's answer, exact under collapse: ``theta_c = eta*_c x_bar_c / ||x_bar_c||^2``
with ``x_bar_c`` the class mean of ``x_i``, so a few steps correct for the spread of the features; or,
given ``start``, from a previous solution (a report every epoch: the features moved a little). It
stops where float64 stops helping: the Newton decrement ``g . H^-1 g``, twice the decrease a full
step would bring, below ``_RESOLUTION * |F|``, after that last full step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from .blocks import class_slices
from .errors import InputError
from .losses import get_loss
from .optimum import optimal_logit
from .validate import REDUCTIONS, as_float_scalar, choice, features_and_labels, positive_int

# Relative size of an objective decrease float64 still resolves (a few ulps of F): below it, Newton has nothing left to give.
_RESOLUTION = 8 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class Equilibrium:
    weight: np.ndarray  # (C, D)
    bias: np.ndarray  # (C,), zeros without a bias
    eta: np.ndarray  # (C,) mean over class-c samples of w_c . h_i + b_c
    grad_norm: float  # the largest gradient norm over classes at the returned point
    iterations: int  # the most Newton steps any class took


def pem_equilibrium(
    features,
    labels,
    num_classes: int,
    lam: float,
    *,
    alpha: float = 1.0,
    loss: str = "logistic",
    reduction: str = "mean",
    bias: bool = True,
    tol: float = 1e-12,
    max_iter: int = 100,
    start: Equilibrium | None = None,
) -> Equilibrium:
    """argmin over (W, b) of ``alpha * kappa * sum_i l(w_{y_i} . h_i + b_{y_i}) + lam/2 (||W||^2 + ||b||^2)``.

    Stops each class when its gradient norm is below ``tol`` times the gradient norm at zero, or when a Newton step
    would lower the objective by less than float64 resolves. ``start``: an earlier solution of the same shape to
    start from instead of Proposition 1's answer.
    """
    spec = get_loss(loss)
    choice("reduction", reduction, REDUCTIONS)
    h, y, C = features_and_labels(features, labels, num_classes, every_class=False)
    lam = as_float_scalar("lam", lam, positive=True)
    alpha = as_float_scalar("alpha", alpha, positive=True)
    max_iter = positive_int("max_iter", max_iter, maximum=10_000)
    kappa = 1.0 / len(h) if reduction == "mean" else 1.0
    if start is not None and (np.shape(start.weight) != (C, h.shape[1]) or np.shape(start.bias) != (C,)):
        raise InputError(
            f"start: expected weights ({C}, {h.shape[1]}) and biases ({C},), got {np.shape(start.weight)} and "
            f"{np.shape(start.bias)}"
        )
    with np.errstate(all="ignore"):  # extreme scales: overflowing trials are rejected by the line search
        return _solve(h, y, C, lam, alpha, kappa, spec, bias, tol, max_iter, start)


class _NewtonStep:
    """H^-1 g for one class's Hessian ``H = lam I + weight X' diag(l''(z)) X`` (X: its n rows, D columns), in the
    cheaper of two exact forms: with at least as many rows as columns, H itself (n D^2 to form, D^3 / 3 to factor);
    with fewer rows, the Woodbury identity on the n x n Gram matrix ``K = X X'`` (formed once, n^2 D):

        H^-1 = (I - X' R (lam I + R K R)^-1 R X) / lam,     R = diag(sqrt(weight l''(z))),

    which needs only an n x n Cholesky factor per step (n^3 / 3). The per-class cost is then
    ``min(n, D)^2 max(n, D)`` instead of ``n D^2 + D^3``: a tail class of 5 samples in 2,048 dimensions costs a 5 x 5
    factor, not a 2,048 x 2,048 one (docs/report.md, "The report at scale")."""

    def __init__(self, x: np.ndarray, weight: float, lam: float, loss):
        self.x, self.weight, self.lam, self.loss = x, weight, lam, loss
        self.gram = x @ x.T if len(x) < x.shape[1] else None

    def __call__(self, z: np.ndarray, g: np.ndarray) -> np.ndarray:
        x, lam = self.x, self.lam
        curvature = self.weight * self.loss.curvature(z)
        if self.gram is None:
            return np.linalg.solve((x.T * curvature) @ x + lam * np.eye(x.shape[1]), g)
        r = np.sqrt(np.maximum(curvature, 0.0))
        inner = r[:, None] * self.gram * r[None, :]
        inner[np.diag_indices_from(inner)] += lam
        solved = cho_solve(cho_factor(inner, lower=True, check_finite=False), r * (x @ g), check_finite=False)
        return (g - x.T @ (r * solved)) / lam


def _solve(h, y, C, lam, alpha, kappa, loss, bias, tol, max_iter, start) -> Equilibrium:
    D = h.shape[1] + int(bias)
    theta = np.zeros((C, D))
    worst, steps = 0.0, 0
    order, edges = class_slices(y, C)
    mean_h = np.zeros((C, h.shape[1]))
    weight = alpha * kappa

    def value(x, t):
        return weight * float(np.sum(loss.value(x @ t))) + 0.5 * lam * float(t @ t)

    for c in range(C):
        if edges[c] == edges[c + 1]:
            raise InputError(f"labels: class {c} has no sample")
        # this class's rows alone, in float64 (features may come in float32; no copy of the whole matrix is made)
        x = h[order[edges[c] : edges[c + 1]]].astype(np.float64, copy=False)
        mean_h[c] = x.mean(0)
        if bias:
            x = np.hstack([x, np.ones((len(x), 1))])
        if (
            start is not None
        ):  # the features moved little since: Newton is already in its quadratic basin there
            t = (
                np.append(start.weight[c], start.bias[c])
                if bias
                else np.array(start.weight[c], dtype=np.float64)
            )
        else:
            centre = x.mean(0)
            size_sq = float(centre @ centre)
            t = (
                centre * float(optimal_logit(weight * len(x), lam, loss, size_sq)) / size_sq
                if size_sq > 0
                else theta[c]
            )
        g0 = float(
            np.linalg.norm(weight * (x.T @ loss.slope(np.zeros(len(x)))))
        )  # the gradient at zero sets the scale
        newton = _NewtonStep(x, weight, lam, loss)
        settled = False
        for it in range(max_iter + 1):
            z = x @ t
            g = weight * (x.T @ loss.slope(z)) + lam * t
            gn = float(np.linalg.norm(g))
            if settled or gn <= tol * max(g0, 1e-300) or it == max_iter:
                break
            try:
                step = newton(z, g)
            except np.linalg.LinAlgError:  # curvature below float64 resolution (a vanishing lam): stop here
                break
            f0, decrement = weight * float(np.sum(loss.value(z))) + 0.5 * lam * float(t @ t), float(g @ step)
            if decrement <= _RESOLUTION * abs(
                f0
            ):  # converged as far as float64 sees: one last full step, then stop
                settled = True
                f1 = value(x, t - step)
                if np.isfinite(f1) and f1 <= f0 * (1 + _RESOLUTION):
                    t = t - step
                continue
            size, trial = 1.0, None
            while size > 1e-12:  # Armijo backtracking; an overflowing trial counts as no descent
                candidate = t - size * step
                f1 = value(x, candidate)
                if np.isfinite(f1) and f1 <= f0 - 1e-4 * size * decrement:
                    trial = candidate
                    break
                size *= 0.5
            if trial is None:  # no descent left at float64 precision: stop, the gradient norm is reported
                break
            t = trial
        theta[c] = t
        worst, steps = max(worst, gn), max(steps, it)
    w, b = (theta[:, :-1], theta[:, -1]) if bias else (theta, np.zeros(C))
    return Equilibrium(w, b, np.einsum("cd,cd->c", w, mean_h) + b, worst, steps)
