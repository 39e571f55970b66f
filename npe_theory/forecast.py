"""Forecast the PEM a run will end with, from what it holds at the end of an epoch (docs/regimes.md, "Forecasts").

At the end of epoch k a run holds the linear PEM's heads ``(w, b)`` and their momentum buffers, the features each
class produced during that epoch, the class counts, and the rest of its schedule (learning rates, steps per epoch,
the PEM's weight decay, momentum and loss weight). The forecast runs that schedule's heavy-ball steps on the PEM with
each class's features held at their epoch-k moments: class c's augmented features ``x = [h, 1]`` are Gaussian with
the epoch's mean ``m_c`` and within-class covariance ``S_c``, and each step takes the expected gradient of the one-way
loss over them (Stein's lemma, as in ``spread``):

    E[l'(w . x) x] = E[l'(t)] m + E[l''(t)] S w,      t = w . x ~ N(w . m, w' S w),

weighted by the class's expected share of a batch-mean loss (``pi_c``, or ``N_c`` for a summed one) and ``alpha``,
plus the weight decay. The step of ``torch.optim.SGD`` with momentum: ``v <- mu v + g + lam w``, ``w <- w - lr v``.
The forecast is the class mean of the output, ``E[t] = w . m``, after the last step, averaged over heads. What it
assumes: the features stop moving at epoch k (their class norms still change after it in a transient: the error this
makes is measured in docs/regimes.md), and each step sees a class in its expected share (the batches' sampling noise
averages out over the steps left).

Cost: each class's dynamics live in the span of its covariance's eigenvectors (r_c <= min(n_c, D) of them) and of its
mean and of its heads' weights and buffers outside that span: ``r_c + 3`` coordinates per head, so a step costs
O(sum_c r_c), not O(C D), and the Gaussian expectations are a 24-node Gauss-Hermite rule over all classes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .collapse import class_means_of
from .errors import InputError, InputTypeError
from .losses import get_loss
from .validate import REDUCTIONS, as_float_array, as_float_scalar, choice, features_and_labels, momentum_value

GH_NODES = (
    24  # Gauss-Hermite nodes of the Gaussian expectations (errors below 1e-4 for output spreads up to 3)
)
MAX_FORECAST_STEPS = 10_000_000  # bounded work, as the replay's


@dataclass(frozen=True)
class Forecast:
    """The forecast per-class PEM output after the last step (``eta``, (C,)), the output now under the same model
    (``now``, (C,)), and the steps simulated."""

    eta: np.ndarray
    now: np.ndarray
    steps: int


def _basis(x: np.ndarray, extra: np.ndarray, rank_tol: float = 1e-12):
    """(orthonormal basis (D, R), eigenvalues of the class covariance on it (R,)) for one class's augmented rows ``x``:
    the covariance's eigenvectors with their eigenvalues, then the parts of ``extra`` (the mean, the heads' weights and
    buffers) outside them, with eigenvalue 0."""
    m = x.mean(0)
    _, sv, vt = np.linalg.svd((x - m) / np.sqrt(len(x)), full_matrices=False)
    keep = sv**2 > rank_tol * max(float(sv[0] ** 2) if sv.size else 0.0, 1e-300)
    V, eig = vt[keep].T, sv[keep] ** 2
    rest = extra - V @ (V.T @ extra)
    q, r = np.linalg.qr(rest)
    strong = np.abs(np.diag(r)) > 1e-12 * max(1.0, float(np.abs(extra).max()))
    return np.hstack([V, q[:, strong]]), np.concatenate([eig, np.zeros(int(strong.sum()))])


def forecast_pem(
    features,
    labels,
    counts,
    state: dict,
    lrs,
    weight_decay: float,
    *,
    momentum: float = 0.9,
    alpha: float = 1.0,
    loss: str = "logistic",
    reduction: str = "mean",
    pem_bias: bool = True,
) -> Forecast:
    """The per-class PEM output at the end of the schedule, with the features held at the moments of ``features``
    (N, D) (labels (N,), every class present) and the heads at ``state`` (the replay's form: ``weight`` (K, C, D),
    ``bias`` (K, C), momentum buffers ``velocity_weight`` and ``velocity_bias`` of the same shapes, or None before a
    first step), stepped over ``lrs`` (T,): the learning rate of every step left.
    ``counts`` (C,) set each class's expected share of a step's loss. Module docstring: the model and what it assumes."""
    spec = get_loss(loss)
    choice("reduction", reduction, REDUCTIONS)
    counts = as_float_array("counts", counts, positive=True)
    if counts.ndim != 1 or counts.size < 2:
        raise InputError(f"counts: expected one count per class (at least 2), got shape {counts.shape}")
    C = counts.size
    h, y, _ = features_and_labels(features, labels, C)
    if not isinstance(state, dict) or state.get("weight") is None or state.get("bias") is None:
        raise InputTypeError(
            f"state: expected the heads' weight and bias (and momentum buffers), got {state!r:.60}"
        )
    w, b = as_float_array("state", state["weight"]), as_float_array("state", state["bias"])
    vw = (
        np.zeros_like(w)
        if state.get("velocity_weight") is None
        else as_float_array("state", state["velocity_weight"])
    )
    vb = (
        np.zeros_like(b)
        if state.get("velocity_bias") is None
        else as_float_array("state", state["velocity_bias"])
    )
    if w.ndim != 3 or w.shape[1:] != (C, h.shape[1]) or b.shape != w.shape[:2]:
        raise InputError(
            f"state: expected heads (K, {C}, {h.shape[1]}) and (K, {C}), got {w.shape}, {b.shape}"
        )
    if vw.shape != w.shape or vb.shape != b.shape:
        raise InputError("state: expected momentum buffers of the shapes of the weight and bias")
    lrs = as_float_array("lrs", lrs, nonnegative=True)
    if lrs.ndim != 1 or lrs.size > MAX_FORECAST_STEPS:
        raise InputError(f"lrs: expected one learning rate per step left, at most {MAX_FORECAST_STEPS}")
    lam = as_float_scalar("weight_decay", weight_decay, nonnegative=True)
    mu = momentum_value(momentum)
    alpha = as_float_scalar("alpha", alpha, positive=True)
    share = counts / counts.sum() if reduction == "mean" else counts
    K = w.shape[0]
    problems = _problems(h, y, C, w, b, vw, vb, pem_bias)
    with np.errstate(all="ignore"):
        now, final = _simulate(problems, np.repeat(alpha * share, K), spec, lam, mu, lrs, pem_bias)
    if not (np.all(np.isfinite(final)) and np.all(np.isfinite(now))):
        raise InputError("weight_decay, lrs: the forecast steps diverged (the PEM's parameters overflowed)")
    return Forecast(final.reshape(C, K).mean(1), now.reshape(C, K).mean(1), int(lrs.size))


def _problems(h, y, C, w, b, vw, vb, pem_bias):
    """Per class and head (row c * K + k), padded to one width R: the coordinates of the heads' weights and buffers,
    of the class mean, and the covariance's eigenvalues in the class's basis (0 on padding)."""
    K, _, D = w.shape
    order = np.argsort(y, kind="stable")
    edges = np.searchsorted(y[order], np.arange(C + 1))
    means = class_means_of(h, y, C)
    parts = []
    for c in range(C):
        x = h[order[edges[c] : edges[c + 1]]].astype(np.float64, copy=False)
        if pem_bias:
            x = np.hstack([x, np.ones((len(x), 1))])
        m = np.append(means[c], 1.0) if pem_bias else means[c]
        heads = np.hstack([w[:, c], b[:, c, None]]) if pem_bias else w[:, c]
        buffers = np.hstack([vw[:, c], vb[:, c, None]]) if pem_bias else vw[:, c]
        basis, eig = _basis(x, np.vstack([m, heads, buffers]).T)
        parts.append((basis.T @ heads.T, basis.T @ buffers.T, basis.T @ m, eig))
    R = max(len(p[3]) for p in parts)
    a, u, proj, sigma = (np.zeros((C * K, R)) for _ in range(4))
    for c, (ha, hb, pm, eig) in enumerate(parts):
        n = len(eig)
        rows = slice(c * K, (c + 1) * K)
        a[rows, :n], u[rows, :n], proj[rows, :n], sigma[rows, :n] = ha.T, hb.T, pm, eig
    return a, u, proj, sigma


def _simulate(problems, weight, loss, lam, mu, lrs, pem_bias):
    """(output now, output after the steps) of every class-head row: heavy-ball on the Gaussian-expected gradient."""
    a, u, proj, sigma = (p.copy() for p in problems)
    nodes, gh = np.polynomial.hermite.hermgauss(GH_NODES)
    z, gh = np.sqrt(2.0) * nodes, gh / np.sqrt(np.pi)  # E[f(t)] = sum_i gh_i f(mean + s z_i)
    now = np.einsum("cr,cr->c", a, proj)
    for lr in lrs:
        mean = np.einsum("cr,cr->c", a, proj)
        s = np.sqrt(np.einsum("cr,cr->c", sigma * a, a))
        t = mean[:, None] + s[:, None] * z
        slope, curve = loss.slope(t) @ gh, loss.curvature(t) @ gh  # E[l'(t)], E[l''(t)]
        grad = weight[:, None] * (slope[:, None] * proj + curve[:, None] * sigma * a) + lam * a
        u = mu * u + grad
        a = a - lr * u
    return now, np.einsum("cr,cr->c", a, proj)
