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
mean and of its heads' weights and buffers outside that span: ``r_c + 3`` coordinates per head, laid end to end (no
padding to the widest class), so a step costs O(sum_c r_c), not O(C D); the Gaussian expectations are a 24-node
Gauss-Hermite rule over all classes at once. With the expectations held a step is affine in each coordinate, so a
run of one rate goes up to ``CHUNK`` steps at a time by that map's power, the expectations averaged over the piece
(``_simulate``); accuracy 1e-3 nats against the step-by-step recursion (``chunk=1``), 4e-5 to 2e-4 on the forecasts of
real runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blocks import class_slices
from .collapse import class_means_of
from .errors import InputError, InputTypeError
from .losses import get_loss
from .spread import spectrum
from .validate import (
    REDUCTIONS,
    as_float_array,
    as_float_scalar,
    choice,
    features_and_labels,
    momentum_value,
    positive_int,
)

GH_NODES = (
    24  # Gauss-Hermite nodes of the Gaussian expectations (errors below 1e-4 for output spreads up to 3)
)
MAX_FORECAST_STEPS = 10_000_000  # bounded work, as the replay's
# Steps taken at once with the expected gradient held (``_simulate``): 2 log2(64) affine compositions and two
# expectations in place of 64 steps. Against the step-by-step recursion, measured on the forecasts of real runs and in
# tests/test_forecast.py: within 1e-3 nats (docs/regimes.md, "Forecasts")
CHUNK = 64
PIECE_TOL = 1e-5  # nats: the first pass of a piece may differ from its averaged pass by at most this (1e-3 end to end)


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
    eig, vt = spectrum((x - m) / np.sqrt(len(x)), rank_tol)
    V = vt.T
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
    chunk: int = CHUNK,
) -> Forecast:
    """The per-class PEM output at the end of the schedule, with the features held at the moments of ``features``
    (N, D) (labels (N,), every class present) and the heads at ``state`` (the replay's form: ``weight`` (K, C, D),
    ``bias`` (K, C), momentum buffers ``velocity_weight`` and ``velocity_bias`` of the same shapes, or None before a
    first step), stepped over ``lrs`` (T,): the learning rate of every step left, ``chunk`` of them at a time with
    the expectations held (``_simulate``; 1: step by step).
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
    chunk = positive_int("chunk", chunk, maximum=MAX_FORECAST_STEPS)
    alpha = as_float_scalar("alpha", alpha, positive=True)
    share = counts / counts.sum() if reduction == "mean" else counts
    K = w.shape[0]
    problems = _problems(h, y, C, w, b, vw, vb, pem_bias)
    with np.errstate(all="ignore"):
        now, final = _simulate(problems, np.repeat(alpha * share, K), spec, lam, mu, lrs, chunk)
    if not (np.all(np.isfinite(final)) and np.all(np.isfinite(now))):
        raise InputError("weight_decay, lrs: the forecast steps diverged (the PEM's parameters overflowed)")
    return Forecast(final.reshape(C, K).mean(1), now.reshape(C, K).mean(1), int(lrs.size))


def _problems(h, y, C, w, b, vw, vb, pem_bias):
    """Every class-head row's coordinates laid end to end, each class at its own rank (no padding to the widest: the
    classes' ranks differ by the ratio of their counts): ``(heads' weights, buffers, class mean, covariance
    eigenvalues)``, each (sum over rows of their ranks,), and ``starts`` (C K,), the offset where each row begins (row
    c * K + k). The sums over a row's coordinates are ``np.add.reduceat(..., starts)``."""
    K, _, D = w.shape
    order, edges = class_slices(y, C)
    means = class_means_of(h, y, C)
    a, u, proj, sigma, sizes = [], [], [], [], []
    for c in range(C):
        x = h[order[edges[c] : edges[c + 1]]].astype(np.float64, copy=False)
        if pem_bias:
            x = np.hstack([x, np.ones((len(x), 1))])
        m = np.append(means[c], 1.0) if pem_bias else means[c]
        heads = np.hstack([w[:, c], b[:, c, None]]) if pem_bias else w[:, c]
        buffers = np.hstack([vw[:, c], vb[:, c, None]]) if pem_bias else vw[:, c]
        basis, eig = _basis(x, np.vstack([m, heads, buffers]).T)
        # features and heads all zero: one zero coordinate keeps the row (reduceat needs one)
        if not eig.size:
            basis, eig = np.zeros((len(m), 1)), np.zeros(1)
        pm = basis.T @ m
        for k in range(K):  # one row per head, each with the class's coordinates
            a.append(basis.T @ heads[k])
            u.append(basis.T @ buffers[k])
            proj.append(pm)
            sigma.append(eig)
            sizes.append(len(eig))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
    return (*(np.concatenate(part) for part in (a, u, proj, sigma)), starts)


def _simulate(problems, weight, loss, lam, mu, lrs, chunk):
    """(output now, output after the steps) of every class-head row: heavy-ball on the Gaussian-expected gradient.

    With the expectations ``E[l'(t)]`` and ``E[l''(t)]`` held, a step is affine in each coordinate's ``(a, u)``, so
    ``k`` steps at one rate are that map's k-th power (``_power``). A run of one rate goes ``k <= chunk`` steps at a
    time with the expectations averaged between the piece's start and a first pass to its end (Heun's rule); the
    first pass's outputs differ from the averaged ones by about the held expectations' error, and a piece is
    taken only when that difference is below ``PIECE_TOL`` nats on every row (else k is halved; it doubles again
    after an easy piece). ``chunk`` 1 is the step-by-step recursion."""
    a, u, proj, sigma, starts = problems
    nodes, gh = np.polynomial.hermite.hermgauss(GH_NODES)
    z, gh = np.sqrt(2.0) * nodes, gh / np.sqrt(np.pi)  # E[f(t)] = sum_i gh_i f(mean + s z_i)
    rows = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, a.size)))  # each coordinate's row
    w_proj, w_sigma = weight[rows] * proj, weight[rows] * sigma  # the loss's weight on each coordinate

    def output(a):
        return np.add.reduceat(a * proj, starts)

    def expectations(a):
        s = np.sqrt(np.add.reduceat(sigma * a * a, starts))
        t = output(a)[:, None] + s[:, None] * z
        return loss.slope(t) @ gh, loss.curvature(t) @ gh

    def advance(a, u, lr, slope, curve, k):
        push, pull = slope[rows] * w_proj, curve[rows] * w_sigma + lam  # gradient = push + pull * a
        if k == 1:
            u = mu * u + push + pull * a
            return a - lr * u, u
        m11, m12, m21, m22, f1, f2 = _power((1.0 - lr * pull, -lr * mu, pull, mu, -lr * push, push), k)
        return m11 * a + m12 * u + f1, m21 * a + m22 * u + f2

    now, k_next = output(a), chunk
    slope, curve = expectations(a)  # at the current state: kept while a piece is retried shorter
    for lr, n in _runs(lrs):
        done = 0
        while done < n:
            k = min(k_next, n - done)
            if k == 1:
                a, u = advance(a, u, lr, slope, curve, 1)
                slope, curve = expectations(a)
                done, k_next = done + 1, min(2, chunk)
                continue
            first = advance(a, u, lr, slope, curve, k)[0]
            slope_end, curve_end = expectations(first)
            nxt = advance(a, u, lr, 0.5 * (slope + slope_end), 0.5 * (curve + curve_end), k)
            change = np.max(np.abs(output(nxt[0]) - output(first)))
            if not change <= PIECE_TOL:  # NaN too: retried with shorter pieces, down to single steps
                k_next = k // 2
                continue
            a, u = nxt
            slope, curve = expectations(a)
            done += k
            k_next = min(2 * k, chunk) if change <= PIECE_TOL / 8 else k
    return now, output(a)


def _runs(lrs: np.ndarray):
    """(rate, steps) of each run of one rate in ``lrs``, in order."""
    if not lrs.size:
        return []
    edges = np.concatenate([[0], np.flatnonzero(np.diff(lrs)) + 1, [lrs.size]])
    return [(float(lrs[s]), int(e - s)) for s, e in zip(edges[:-1], edges[1:])]


def _power(step, k: int):
    """The k-th power of the affine map ``(a, u) -> (m11 a + m12 u + f1, m21 a + m22 u + f2)`` given as the six arrays
    ``(m11, m12, m21, m22, f1, f2)``, by repeated squaring: 2 log2(k) compositions, not k steps."""
    result = None
    while k:
        if k & 1:
            result = step if result is None else _compose(step, result)
        k >>= 1
        if k:
            step = _compose(step, step)
    return result


def _compose(outer, inner):
    """``outer`` after ``inner``, both affine maps in the six-array form of ``_power``."""
    b11, b12, b21, b22, g1, g2 = outer
    a11, a12, a21, a22, f1, f2 = inner
    return (
        b11 * a11 + b12 * a21,
        b11 * a12 + b12 * a22,
        b21 * a11 + b22 * a21,
        b21 * a12 + b22 * a22,
        b11 * f1 + b12 * f2 + g1,
        b21 * f1 + b22 * f2 + g2,
    )
