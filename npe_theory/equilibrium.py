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


def _solve(h, y, C, lam, alpha, kappa, loss, bias, tol, max_iter, start) -> Equilibrium:
    D = h.shape[1] + int(bias)
    theta = np.zeros((C, D))
    worst, steps = 0.0, 0
    order = np.argsort(y, kind="stable")  # the samples split by class once
    edges = np.searchsorted(y[order], np.arange(C + 1))
    rows = np.hstack([h[order], np.ones((len(h), 1))]) if bias else h[order]
    weight = alpha * kappa

    def value(x, t):
        return weight * float(np.sum(loss.value(x @ t))) + 0.5 * lam * float(t @ t)

    for c in range(C):
        x = rows[edges[c] : edges[c + 1]]
        if len(x) == 0:
            raise InputError(f"labels: class {c} has no sample")
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
        settled = False
        for it in range(max_iter + 1):
            z = x @ t
            g = weight * (x.T @ loss.slope(z)) + lam * t
            gn = float(np.linalg.norm(g))
            if settled or gn <= tol * max(g0, 1e-300) or it == max_iter:
                break
            hess = weight * (x.T * loss.curvature(z)) @ x + lam * np.eye(D)
            try:
                step = np.linalg.solve(hess, g)
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
    sums = np.add.reduceat(h[order], edges[:-1], axis=0)  # every class has a sample (checked above)
    mean_h = sums / np.diff(edges)[:, None]
    return Equilibrium(w, b, np.einsum("cd,cd->c", w, mean_h) + b, worst, steps)
