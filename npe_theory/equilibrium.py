"""The exact minimizer of a linear PEM's own regularized objective on real (uncollapsed) features.

For a linear PEM ``eta_c(h) = w_c . h + b_c`` the one-way loss couples row c only to class-c
samples, so the training objective splits into one convex problem per class (docs/theory.md, section 2):

    F_c(theta) = alpha * kappa * sum_{i: y_i = c} l(theta . x_i) + lam / 2 * ||theta||^2,

``x_i = [h_i, 1]`` (``[h_i]`` without a bias), ``kappa = 1 / N`` for a batch-mean loss (the
expected gradient of an epoch of batch means) or 1 for a summed one. Damped Newton in float64
solves each to a reported gradient norm; unlike Proposition 1 nothing here assumes collapse. Classes of similar
sizes take their Newton steps side by side, their rows zero-padded to the group's largest (``blocks.ragged_blocks``),
each stopping on its own: the same iterates as one class at a time, without a Python loop over the classes.
Newton starts from Proposition 1's answer, exact under collapse: ``theta_c = eta*_c x_bar_c / ||x_bar_c||^2``
with ``x_bar_c`` the class mean of ``x_i``, so a few steps correct for the spread of the features; or,
given ``start``, from a previous solution (a report every epoch: the features moved a little). It
stops where float64 stops helping: the Newton decrement ``g . H^-1 g``, twice the decrease a full
step would bring, below ``_RESOLUTION * |F|``, after that last full step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve

from .blocks import class_slices, ragged_blocks
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
    checked: bool = False,
) -> Equilibrium:
    """argmin over (W, b) of ``alpha * kappa * sum_i l(w_{y_i} . h_i + b_{y_i}) + lam/2 (||W||^2 + ||b||^2)``.

    Stops each class when its gradient norm is below ``tol`` times the gradient norm at zero, or when a Newton step
    would lower the objective by less than float64 resolves. ``start``: an earlier solution of the same shape to
    start from instead of Proposition 1's answer. ``checked``: ``features`` and ``labels`` have already passed
    ``validate.features_and_labels`` (the report checks its inputs once; a second finiteness pass over 10^5 x 2,048
    features costs 0.1-1.9 s here).
    """
    if checked:
        h, y, C = features, labels, num_classes
    else:
        h, y, C = features_and_labels(features, labels, num_classes, every_class=False)
    spec = get_loss(loss)
    choice("reduction", reduction, REDUCTIONS)
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
    """H^-1 g for a group of classes, each with its Hessian ``H = lam I + weight X' diag(l''(z)) X`` (X: its rows,
    zero-padded to the group's longest, D columns), in the cheaper of two exact forms: with at least as many rows as
    columns, H itself (n D^2 to form, D^3 / 3 to factor); with fewer rows, the Woodbury identity on the n x n Gram
    matrix ``K = X X'`` (formed once, n^2 D):

        H^-1 = (I - X' R (lam I + R K R)^-1 R X) / lam,     R = diag(sqrt(weight l''(z))),

    which needs only an n x n solve per step. The per-class cost is then ``min(n, D)^2 max(n, D)`` instead of
    ``n D^2 + D^3``: a tail class of 5 samples in 2,048 dimensions costs a 5 x 5 solve, not a 2,048 x 2,048 one
    (docs/report.md, "The report at scale"). A padded row is all zeros, bias column included: it adds nothing to
    ``X' diag(.) X``, ``K`` or ``X' v`` whatever ``l''`` is there."""

    def __init__(self, x: np.ndarray, weight: float, lam: float, loss):
        self.x, self.weight, self.lam, self.loss = x, weight, lam, loss
        self.gram = x @ x.transpose(0, 2, 1) if x.shape[1] < x.shape[2] else None

    def __call__(self, rows: np.ndarray, z: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(steps H^-1 g, solved) for the group's classes ``rows``; ``solved`` False where H is singular to float64."""
        x, lam = _take(self.x, rows), self.lam
        curvature = self.weight * self.loss.curvature(z)
        if self.gram is None:
            hessian = (x.transpose(0, 2, 1) * curvature[:, None, :]) @ x
            hessian[:, np.arange(x.shape[2]), np.arange(x.shape[2])] += lam
            return _solve_each(hessian, g)
        r = np.sqrt(np.maximum(curvature, 0.0))
        inner = r[:, :, None] * _take(self.gram, rows) * r[:, None, :]
        inner[:, np.arange(x.shape[1]), np.arange(x.shape[1])] += lam
        solved, ok = _solve_each(inner, r * _times(x, g))
        return (g - _times_t(x, r * solved)) / lam, ok


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]``, without a copy while ``rows`` is still every class of the group."""
    return a if len(rows) == len(a) else a[rows]


def _times(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x[b] @ t[b] for every b: (B, n, D), (B, D) -> (B, n), by BLAS."""
    return (x @ t[:, :, None])[:, :, 0]


def _times_t(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """x[b]' @ s[b] for every b: (B, n, D), (B, n) -> (B, D), by BLAS."""
    return (s[:, None, :] @ x)[:, 0, :]


def _solve_each(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a[i]^-1 b[i]`` for a stack of symmetric positive definite systems, and which were solved. Small systems all
    at once (LU: NumPy's per-call cost dominates); from 48 unknowns a batched Cholesky factor, half LU's n^3, then each
    system's two triangular solves. One at a time where the stack has a system singular to float64 (a vanishing lam)."""
    ok = np.ones(len(a), dtype=bool)
    try:
        if a.shape[-1] < 48:
            return np.linalg.solve(a, b[..., None])[..., 0], ok
        factor = np.linalg.cholesky(a)
        return np.stack([cho_solve((f, True), v, check_finite=False) for f, v in zip(factor, b)]), ok
    except np.linalg.LinAlgError:
        out = np.zeros_like(b)
        for i in range(len(a)):
            try:
                out[i] = np.linalg.solve(a[i], b[i])
            except np.linalg.LinAlgError:
                ok[i] = False
        return out, ok


def _solve(h, y, C, lam, alpha, kappa, loss, bias, tol, max_iter, start) -> Equilibrium:
    Dh = h.shape[1]
    D = Dh + int(bias)
    theta, mean_h, gnorm, iters = (
        np.zeros((C, D)),
        np.zeros((C, Dh)),
        np.zeros(C),
        np.zeros(C, dtype=np.int64),
    )
    weight = alpha * kappa
    order, edges = class_slices(y, C)
    sizes = np.diff(edges)
    if np.any(sizes == 0):
        raise InputError(f"labels: class {int(np.flatnonzero(sizes == 0)[0])} has no sample")
    # classes of similar sizes solved side by side, their rows zero-padded: about 1e6 padded entries a group (8 MB,
    # near the cache: 4 and 32 MB were slower at 1,000 classes x 512), sizes within 5% (plus 8) of each other, as a
    # solve's cost grows like the cube of the rows. Float32 features are upcast a group at a time, never all at once.
    for rows in ragged_blocks(sizes, max(1, (1 << 20) // D), slack=0.05):
        n = int(sizes[rows].max())
        mask = (np.arange(n) < sizes[rows, None]).astype(np.float64)
        x = np.zeros((len(rows), n, D))
        for i, c in enumerate(rows):
            x[i, : sizes[c], :Dh] = h[order[edges[c] : edges[c + 1]]]
        if bias:
            x[:, :, Dh] = mask
        centre = x.sum(1) / sizes[rows, None]  # the class means of x = [h, 1]
        mean_h[rows] = centre[:, :Dh]
        # Proposition 1's answer at each class's mean
        size_sq = np.einsum("bd,bd->b", centre, centre)
        safe = np.where(size_sq > 0, size_sq, 1.0)
        eta = np.asarray(optimal_logit(weight * sizes[rows], lam, loss, safe), dtype=np.float64)
        t = np.where((size_sq > 0)[:, None], centre * (eta / safe)[:, None], 0.0)
        if start is not None:
            # the last report's answer, where its objective on today's features is lower: after a small move it is
            # in Newton's quadratic basin, but Proposition 1's answer follows a class mean that moved (features
            # scaled by 1.01 took 3 steps from the old answer against 2 from Proposition 1's at 1,000 classes)
            old = np.hstack([start.weight[rows], start.bias[rows, None]]) if bias else start.weight[rows]
            better = _objective(x, mask, old, weight, lam, loss) < _objective(x, mask, t, weight, lam, loss)
            t[better] = old[better]
        theta[rows], gnorm[rows], iters[rows] = _newton_group(x, mask, t, weight, lam, loss, tol, max_iter)
    w, b = (theta[:, :-1], theta[:, -1]) if bias else (theta, np.zeros(C))
    return Equilibrium(
        w, b, np.einsum("cd,cd->c", w, mean_h) + b, float(gnorm.max(initial=0.0)), int(iters.max())
    )


def _objective(x, mask, theta, weight, lam, loss) -> np.ndarray:
    """F_b(theta_b) for every class b of a group: ``weight * sum_i l(x_bi . theta_b) + lam / 2 ||theta_b||^2`` over
    its real rows (``mask``: a padded row would add l(0))."""
    return _objective_at(_times(x, theta), mask, theta, weight, lam, loss)


def _objective_at(z, mask, theta, weight, lam, loss) -> np.ndarray:
    """``_objective`` given its outputs ``z = x_b theta_b`` (B, n)."""
    return weight * np.sum(loss.value(z) * mask, axis=1) + 0.5 * lam * np.einsum("bd,bd->b", theta, theta)


def _newton_group(x, mask, t, weight, lam, loss, tol, max_iter):
    """Damped Newton on every class of a group at once (module docstring): (theta, final gradient norms, Newton
    steps taken), each class stopping on its own."""
    B = len(t)

    def objective(rows, theta):
        return _objective(_take(x, rows), _take(mask, rows), theta, weight, lam, loss)

    # a padded row is zero: it adds nothing to a gradient, only l(0) to the objective, which the mask removes
    g0 = np.linalg.norm(weight * _times_t(x, loss.slope(np.zeros(mask.shape))), axis=1)
    newton = _NewtonStep(x, weight, lam, loss)
    live, settled = np.arange(B), np.zeros(B, dtype=bool)
    gnorm, iters = np.zeros(B), np.zeros(B, dtype=np.int64)
    for it in range(max_iter + 1):
        xs, ts = _take(x, live), _take(t, live)
        z = _times(xs, ts)
        g = weight * _times_t(xs, loss.slope(z)) + lam * ts
        gn = np.linalg.norm(g, axis=1)
        gnorm[live], iters[live] = gn, it
        going = ~(settled[live] | (gn <= tol * np.maximum(g0[live], 1e-300)) | (it == max_iter))
        live, z, g = live[going], z[going], g[going]
        if not live.size:
            break
        step, ok = newton(live, z, g)
        live, z, g, step = (
            live[ok],
            z[ok],
            g[ok],
            step[ok],
        )  # a singular Hessian: stop there, its norm reported
        f0 = _objective_at(z, _take(mask, live), t[live], weight, lam, loss)
        decrement = np.einsum("bd,bd->b", g, step)
        # converged as far as float64 sees: one last full step where it does not raise F, then stop
        last = decrement <= _RESOLUTION * np.abs(f0)
        rows = live[last]
        settled[rows] = True
        f1 = objective(rows, t[rows] - step[last])
        keep = np.isfinite(f1) & (f1 <= f0[last] * (1 + _RESOLUTION))
        t[rows[keep]] -= step[last][keep]
        # Armijo backtracking for the rest; an overflowing trial counts as no descent
        pending, size = np.flatnonzero(~last), 1.0
        moved = np.zeros(live.size, dtype=bool)
        while pending.size and size > 1e-12:
            candidate = t[live[pending]] - size * step[pending]
            f1 = objective(live[pending], candidate)
            good = np.isfinite(f1) & (f1 <= f0[pending] - 1e-4 * size * decrement[pending])
            t[live[pending[good]]] = candidate[good]
            moved[pending[good]] = True
            pending, size = pending[~good], size * 0.5
        live = live[
            last | moved
        ]  # no descent left at float64 precision: stopped, the gradient norm is reported
    return t, gnorm, iters
