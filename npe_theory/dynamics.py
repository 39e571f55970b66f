"""Finite-time PEM: the optimizer's own heavy-ball steps on a linear PEM, and the weight decay it has felt.

A linear PEM ``eta_c(h) = w_c . h + b_c`` trained by SGD with momentum ``mu`` and weight decay
``lam`` on ``alpha * (one-way loss)`` sees, for class c at step t, the gradient

    g_c = alpha * f_tc * l'(w_c . m_c + b_c) * [m_c, 1] + lam * [w_c, b_c]

when every class-c sample of the step equals the vector ``m_c`` (``f_tc`` is class c's share of
the step's loss: n_tc / B_t for a batch-mean loss). PyTorch's SGD then does ``v <- mu v + g``
(``v = g`` on the first step) and ``[w, b] <- [w, b] - lr_t v``. ``heavy_ball_pem`` replays
exactly these steps, vectorized over heads and classes. Its fixed point is the minimizer of
``alpha f_c l(eta) + lam/2 (||w||^2 + b^2)``, i.e. ``optimal_logit`` at ``x_c = alpha f_c
(||m_c||^2 + 1) / lam`` (docs/theory.md, sections 2 and 5); ``finite_time_logit`` is the
network-free version with constant class means and the expected batch composition.

The time it takes is measured by ``lambda_s = lam * sum_t lr_t / (1 - mu)``: with momentum, a
steady step of size lr moves a parameter like plain SGD with rate lr / (1 - mu), so lambda_s is
the total decay a parameter has felt (docs/theory.md, section 5).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from .blocks import class_slices
from .errors import InputError, InputTypeError
from .losses import get_loss
from .validate import (
    REDUCTIONS,
    as_float_array,
    as_float_scalar,
    choice,
    class_ids,
    matrix,
    momentum_value,
    positive_int,
    scalar_or_array,
)

MAX_STEPS = 10_000_000  # bounded work: a replay longer than this is refused
_LAZY_FROM = (
    1 << 16
)  # PEM weights above which a replay step updates only its present classes (below, all is cheaper)


def lambda_s(weight_decay, lrs, momentum: float = 0.0) -> float:
    """``weight_decay * sum_t lr_t / (1 - momentum)`` over the learning rates of the steps taken."""
    wd = as_float_scalar("weight_decay", weight_decay, nonnegative=True)
    lrs = as_float_array("lrs", lrs, nonnegative=True)
    momentum = momentum_value(momentum)
    with np.errstate(over="ignore"):
        value = wd * float(np.sum(lrs)) / (1.0 - momentum)
    if not np.isfinite(value):
        raise InputError(
            "weight_decay, lrs: lambda*s = weight_decay * sum(lrs) / (1 - momentum) overflows the float64 range"
        )
    return value


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """ceil(N / B): every sample is seen once per epoch, the last batch may be smaller."""
    return -(-positive_int("num_samples", num_samples) // positive_int("batch_size", batch_size))


def loss_slope(eta: np.ndarray, loss: str) -> np.ndarray:
    """l'(eta) of a registered loss: -sigmoid(-eta) (logistic), -exp(-eta) (exp), -2 max(0, 1 - eta) (squared_hinge)."""
    return scalar_or_array(get_loss(loss).slope(as_float_array("eta", eta)))


def heavy_ball_pem(
    means,
    fractions,
    lrs,
    lam,
    *,
    momentum: float = 0.9,
    alpha: float = 1.0,
    loss: str = "logistic",
    bias: bool = True,
    epoch_of_step=None,
    init_weight=None,
    init_bias=None,
) -> dict:
    """Replay SGD with momentum and weight decay on a linear PEM driven by class-mean features.

    means: (E, C, D) class-mean features per epoch, or (C, D) for all steps.
    fractions: (T, C) each class's share of step t's loss, or (C,) for every step.
    lrs: (T,) the learning rate of every step. epoch_of_step: (T,) epoch index of each step
    into ``means`` (default: all steps in epoch 0). init_weight: (K, C, D), init_bias (K, C):
    the K heads' starting values (default one head at zero). Returns ``{"weight", "bias",
    "eta_per_epoch"}``: final parameters and, after each epoch, the head-averaged
    ``w_c . m_c + b_c`` with that epoch's means, shape (E, C) (an epoch without a step: the parameters it
    ended with, which the previous epoch left). With spread features the class-mean
    gradient underestimates the push of a convex loss; ``replay_steps`` takes the steps' own rows.
    """
    loss = get_loss(loss)
    lrs = as_float_array("lrs", lrs, nonnegative=True)
    if lrs.ndim != 1 or lrs.size < 1:
        raise InputError(f"lrs: expected a 1-D array of per-step learning rates, got shape {lrs.shape}")
    if lrs.size > MAX_STEPS:
        raise InputError(f"lrs: {lrs.size} steps exceed the limit of {MAX_STEPS}")
    T = lrs.size
    means = as_float_array("means", means)
    if means.ndim == 2:
        means = means[None]
    if means.ndim != 3:
        raise InputError(f"means: expected (C, D) or (E, C, D), got shape {means.shape}")
    E, C, D = means.shape
    fractions = as_float_array("fractions", fractions, nonnegative=True)
    if fractions.shape not in ((C,), (T, C)):
        raise InputError(f"fractions, means: expected fractions ({C},) or ({T}, {C}), got {fractions.shape}")
    fractions = np.broadcast_to(fractions, (T, C))
    epoch_of_step = np.zeros(T, dtype=np.int64) if epoch_of_step is None else np.asarray(epoch_of_step)
    if (
        epoch_of_step.shape != (T,)
        or not np.issubdtype(epoch_of_step.dtype, np.integer)
        or epoch_of_step.min() < 0
        or epoch_of_step.max() >= E
        or np.any(np.diff(epoch_of_step) < 0)
    ):
        raise InputError(f"epoch_of_step: expected {T} non-decreasing epoch indices in [0, {E})")
    lam = as_float_scalar("lam", lam, nonnegative=True)
    momentum = momentum_value(momentum)
    alpha = as_float_scalar("alpha", alpha, positive=True)
    w = np.zeros((1, C, D)) if init_weight is None else as_float_array("init_weight", init_weight).copy()
    b = np.zeros(w.shape[:2]) if init_bias is None else as_float_array("init_bias", init_bias).copy()
    if w.ndim != 3 or w.shape[1:] != (C, D) or b.shape != w.shape[:2]:
        raise InputError(
            f"init_weight, init_bias: expected (K, {C}, {D}) and (K, {C}), got {w.shape} and {b.shape}"
        )
    if not bias:
        b[:] = 0.0
    return _run_replay(w, b, means, fractions, lrs, lam, momentum, alpha, loss, bias, epoch_of_step)


class _EpochShares(NamedTuple):
    """Each epoch's class shares (E, C), the same at every one of its steps (``finite_time_logit``'s expected shares)."""

    shares: np.ndarray


def _run_replay(w, b, means, fractions, lrs, lam, momentum, alpha, loss, bias, epoch_of_step) -> dict:
    """The validated replay of ``heavy_ball_pem``: w, b updated in place, a divergence refused. ``fractions``: (T, C),
    or ``_EpochShares`` for the one-feature replay."""
    out = np.empty((len(means), w.shape[1]))
    with np.errstate(all="ignore"):  # a diverging replay is reported below, not warned about per step
        one = isinstance(fractions, _EpochShares) or means.shape[2] == 1
        replay = _replay_one_feature if one else _replay
        replay(w, b, means, fractions, lrs, lam, momentum, alpha, loss, bias, epoch_of_step, out)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise InputError(
            "lam, lrs: the replayed steps diverged (the PEM's parameters overflowed); "
            "these learning rates are too large for this loss scale"
        )
    return {"weight": w, "bias": b, "eta_per_epoch": out}


def _replay(w, b, means, fractions, lrs, lam, momentum, alpha, loss, bias, epoch_of_step, out) -> None:
    """The steps of ``heavy_ball_pem``, updating w, b in place."""
    T, velocity, done = lrs.size, None, 0  # done: epochs whose end has been recorded

    def record(
        upto: int,
    ) -> None:  # epochs done..upto-1 end at the current parameters (no step of theirs is left)
        nonlocal done
        for e in range(done, upto):
            out[e] = (np.einsum("kcd,cd->kc", w, means[e]) + b).mean(0)
        done = max(done, upto)

    for t in range(T):
        record(
            int(epoch_of_step[t])
        )  # epochs without a step before this one keep the parameters they started with
        m = means[epoch_of_step[t]]
        push = alpha * fractions[t] * loss.slope(np.einsum("kcd,cd->kc", w, m) + b)  # (K, C)
        velocity = _heavy_ball(w, b, velocity, push[..., None] * m, push, lrs[t], lam, momentum, bias)
        if t + 1 == T or epoch_of_step[t + 1] != epoch_of_step[t]:
            record(int(epoch_of_step[t]) + 1)
    record(len(means))


def _replay_one_feature(
    w, b, means, fractions, lrs, lam, momentum, alpha, loss, bias, epoch_of_step, out
) -> None:
    """``_replay`` for one feature dimension (the mean-field model, ``finite_time_logit``): the same arithmetic in the
    same order on (K, C) arrays, without the feature axis, the contraction and the per-step bookkeeping; equal to
    ``_replay`` bit for bit, at about half its cost (NumPy's per-call overhead dominates at these sizes). With a bias,
    weight and bias step as one (2, K, C) array: the bias's feature is 1, and ``push * 1`` is ``push`` exactly.
    ``fractions``: (T, C), or ``_EpochShares``, one share per epoch, never spread over the steps: a (steps, C) copy is
    gigabytes at ImageNet-LT's size (163,000 steps, 1,000 classes, two sets of norms)."""
    E = len(means)
    # z[0] is w's only feature, z[1] the bias (or nothing); written back at the end. w1 and offset are views, so
    # they follow z's in-place updates (without a bias the offset is b, which no step moves)
    z = np.stack([w[..., 0], b]) if bias else w[..., 0][None].copy()
    w1, offset = z[0], (z[1] if bias else b)
    per_epoch = np.bincount(
        epoch_of_step, minlength=E
    )  # steps of each epoch, in order (epoch_of_step never falls)
    # every step's arrays written into buffers made once: at 16,000 classes (two sets of 8,000) a fresh temporary is
    # 128 KB, which the allocator can hand back to the system and take again at every operation (a third of the time
    # in a fresh process); the products and sums are the same, in the same order
    eta, push, g, scaled = np.empty_like(w1), np.empty_like(w1), np.empty_like(z), np.empty_like(z)
    v = None
    t = 0  # the next step
    for e in range(E):
        m1 = means[e][:, 0]
        feature = np.stack([m1, np.ones_like(m1)])[:, None] if bias else m1[None, None]  # (1 or 2, 1, C)
        stop = t + int(per_epoch[e])
        weights = (  # elementwise as in _replay, for the epoch's steps at once
            itertools.repeat(alpha * fractions.shares[e], stop - t)
            if isinstance(fractions, _EpochShares)
            else alpha * fractions[t:stop]
        )
        for share, lr in zip(weights, lrs[t:stop].tolist()):
            np.add(np.multiply(w1, m1, out=eta), offset, out=eta)
            np.multiply(share, loss.slope(eta), out=push)
            np.add(np.multiply(push, feature, out=g), np.multiply(lam, z, out=scaled), out=g)  # the gradient
            if v is None:
                v = g.copy()
            elif momentum == 0:
                np.copyto(v, g)
            else:
                np.add(np.multiply(momentum, v, out=v), g, out=v)
            z -= np.multiply(lr, v, out=scaled)
        t = stop
        out[e] = (w1 * m1 + offset).mean(0)  # an epoch without a step: the parameters before
    w[..., 0] = w1
    if bias:
        b[...] = offset


class _Flush(NamedTuple):
    """One call's steps: every row, its class and loss weight, the row bounds of each step, the steps' class shares and
    learning rates."""

    rows: np.ndarray
    labels: np.ndarray
    omega: np.ndarray
    bounds: np.ndarray
    fractions: np.ndarray
    lrs: np.ndarray


class _Rule(NamedTuple):
    """The update: weight decay, momentum, loss weight, the loss object, and whether the heads have a bias."""

    lam: float
    momentum: float
    alpha: float
    loss: object
    bias: bool


def _step_gradients(w, b, flush: _Flush, t: int, rule: _Rule):
    """The loss gradients (K, C, D) and (K, C) of step t's rows, on every class (zero for the absent ones)."""
    K, C, _ = w.shape
    part = slice(flush.bounds[t], flush.bounds[t + 1])
    x, y, om = flush.rows[part], flush.labels[part], flush.omega[part]
    total = np.bincount(y, weights=om, minlength=C)
    coef = (
        rule.alpha
        * flush.fractions[t][y]
        * np.divide(om, total[y], out=np.zeros_like(om), where=total[y] > 0)
    )
    push = rule.loss.slope(np.einsum("knd,nd->kn", w[:, y], x) + b[:, y]) * coef  # (K, n)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    for k in range(K):
        gw[k] = _class_sums(push[k][:, None] * x, y, C)
        gb[k] = np.bincount(y, weights=push[k], minlength=C)
    return gw, gb


def _class_sums(values: np.ndarray, y: np.ndarray, C: int) -> np.ndarray:
    """(C, D) sums of the rows of ``values`` by class ``y`` (sorted once, then added by runs)."""
    out = np.zeros((C, values.shape[1]))
    if len(y):
        order = np.argsort(y, kind="stable")
        present, starts = np.unique(y[order], return_index=True)
        out[present] = np.add.reduceat(values[order], starts, axis=0)
    return out


def _lazy_heavy_ball(w, b, velocity, flush: _Flush, first: int, rule: _Rule) -> None:
    """Steps ``first``.. of the replay with every buffer set, updating only the classes a step has rows of.

    A class with no row in a step only feels weight decay and momentum: (w, v) -> (w - lr (mu v + lam w), mu v + lam w),
    a linear map A_t = [[1 - lr_t lam, -lr_t mu], [lam, mu]] on each coordinate. Such steps are applied in one product
    when the class next has rows (and at the end), so a step costs its present classes' rows, not all C x D weights:
    the same arithmetic regrouped (docs/report.md, "The report at scale"). T is one flush of steps (16 in training),
    so the T^2 range products are few."""
    lrs, lam, momentum, bias = flush.lrs, rule.lam, rule.momentum, rule.bias
    T = len(lrs)
    K, C, D = w.shape
    vw, vb = velocity
    maps = np.stack([np.array([[1 - lr * lam, -lr * momentum], [lam, momentum]]) for lr in lrs])  # (T, 2, 2)
    ranges = np.empty((T + 1, T + 1, 2, 2))  # ranges[a, z]: A_{z-1} ... A_a (identity when z <= a)
    for a in range(T + 1):
        ranges[a, a] = np.eye(2)
        for z in range(a + 1, T + 1):
            ranges[a, z] = maps[z - 1] @ ranges[a, z - 1]
    done = np.full(C, first)  # the steps each class's parameters have been brought through

    def catch_up(classes, upto: int) -> None:  # classes: indices, or slice(None) for all (no gather then)
        m = ranges[done[classes], upto]  # (n, 2, 2)
        wc, vc = w[:, classes], vw[:, classes]
        new_w = m[None, :, 0, 0, None] * wc + m[None, :, 0, 1, None] * vc
        vw[:, classes] = m[None, :, 1, 0, None] * wc + m[None, :, 1, 1, None] * vc
        w[:, classes] = new_w
        if bias:
            bc, ub = b[:, classes], vb[:, classes]
            new_b = m[None, :, 0, 0] * bc + m[None, :, 0, 1] * ub
            vb[:, classes] = m[None, :, 1, 0] * bc + m[None, :, 1, 1] * ub
            b[:, classes] = new_b
        done[classes] = upto

    for t in range(first, T):
        part = slice(flush.bounds[t], flush.bounds[t + 1])
        y = flush.labels[part]
        if len(y) == 0:
            continue
        present = np.unique(y)
        catch_up(present, t)
        gw, gb = _present_gradients(
            w, b, (flush.rows[part], y, flush.omega[part]), present, flush.fractions[t], rule
        )
        vw[:, present] = momentum * vw[:, present] + gw + lam * w[:, present]
        w[:, present] -= lrs[t] * vw[:, present]
        if bias:
            vb[:, present] = momentum * vb[:, present] + gb + lam * b[:, present]
            b[:, present] -= lrs[t] * vb[:, present]
        done[present] = t + 1
    catch_up(slice(None), T)
    if not bias:  # no bias to move: its buffer only decays by the momentum, as a plain step leaves it
        vb *= momentum ** (T - first)


def _present_gradients(w, b, step_rows, present, shares, rule: _Rule):
    """Loss gradients (K, P, D) and (K, P) of one step's rows ``(x, y, omega)`` for its P present classes (sorted, as
    np.unique gives)."""
    x, y, om = step_rows
    alpha, loss = rule.alpha, rule.loss
    slot = np.searchsorted(present, y)
    total = np.bincount(slot, weights=om, minlength=len(present))
    coef = alpha * shares[y] * np.divide(om, total[slot], out=np.zeros_like(om), where=total[slot] > 0)
    push = loss.slope(np.einsum("knd,nd->kn", w[:, y], x) + b[:, y]) * coef  # (K, n)
    order, edges = class_slices(slot, len(present))
    starts = edges[:-1]  # every present class has a row: no run is empty
    gw = np.add.reduceat(push[:, order, None] * x[order][None], starts, axis=1)
    gb = np.add.reduceat(push[:, order], starts, axis=1)
    return gw, gb


def _heavy_ball(w, b, velocity, gw_loss, gb_loss, lr, lam, momentum, bias):
    """One step of torch.optim.SGD with momentum and weight decay on (w, b), in place; returns the buffers [vw, vb]."""
    gw = gw_loss + lam * w
    gb = gb_loss + lam * b if bias else np.zeros_like(b)
    if velocity is None or momentum == 0:
        velocity = [gw, gb]
    else:
        velocity = [momentum * velocity[0] + gw, momentum * velocity[1] + gb]
    w -= lr * velocity[0]
    if bias:
        b -= lr * velocity[1]
    return velocity


def advance_replay(
    state: dict,
    rows,
    labels,
    weight,
    step_of_row,
    fractions,
    lrs,
    lam,
    *,
    momentum: float = 0.9,
    alpha: float = 1.0,
    loss: str = "logistic",
    bias: bool = True,
) -> dict:
    """Continue a heavy-ball replay of a linear PEM over steps whose own feature rows are known.

    Step t saw the rows with ``step_of_row == t`` (rows (n, D), their classes ``labels`` (n,) and loss
    weights ``weight`` (n,), 0 for a padding row); ``fractions`` (T, C) are each class's share of
    the step's loss and ``lrs`` (T,) its learning rate. Class c's loss gradient at step t is
    ``alpha f_tc sum_i omega_i l'(w_c . h_i + b_c) [h_i, 1] / sum_i omega_i`` over the step's class-c
    rows: exactly the PEM's own gradient when the rows are all of the step's class-c rows, and
    otherwise its estimate from the ones kept. ``state``: ``{"weight" (K, C, D), "bias" (K, C)}``
    and, after a first call, the momentum buffers ``velocity_weight``, ``velocity_bias``. Returns the
    state with its float64 arrays updated in place (saving four copies of C x D values per call at thousands of
    classes; ``replay_steps`` is the same on a copy).
    """
    loss = get_loss(loss)
    if not isinstance(state, dict) or "weight" not in state or "bias" not in state:
        raise InputTypeError(
            f"state: expected a dict with the heads' weight and bias, got {type(state).__name__}"
        )
    w, b = as_float_array("state", state["weight"]), as_float_array("state", state["bias"])
    if w.ndim != 3 or b.shape != w.shape[:2]:
        raise InputError(f"state: expected heads (K, C, D) and biases (K, C), got {w.shape} and {b.shape}")
    K, C, D = w.shape
    h = matrix("rows", rows, cols=D)
    lrs = as_float_array("lrs", lrs, nonnegative=True)
    if lrs.ndim != 1:
        raise InputError(f"lrs: expected one learning rate per step (a 1-D array), got shape {lrs.shape}")
    T = lrs.size
    fractions = as_float_array("fractions", fractions, nonnegative=True)
    labels = class_ids("labels", labels, C)
    step_of_row = class_ids("step_of_row", step_of_row, max(T, 1))  # step indices: integers in [0, T)
    omega = as_float_array("weight", weight, nonnegative=True)
    n = len(h)
    if (
        h.shape != (n, D)
        or labels.shape != (n,)
        or omega.shape != (n,)
        or step_of_row.shape != (n,)
        or fractions.shape != (T, C)
    ):
        raise InputError(
            f"rows, labels, weight, step_of_row, fractions, lrs: expected ({n}, {D}), ({n},) x 3 and ({T}, {C}), got "
            f"{h.shape}, {labels.shape}, {omega.shape}, {step_of_row.shape}, {fractions.shape}"
        )
    if n and (
        labels.min() < 0
        or labels.max() >= C
        or step_of_row.min() < 0
        or step_of_row.max() >= T
        or np.any(np.diff(step_of_row) < 0)
    ):
        raise InputError(
            f"labels, step_of_row: expected classes in [0, {C}) and non-decreasing steps in [0, {T})"
        )
    lam, momentum, alpha = (
        as_float_scalar("lam", lam, nonnegative=True),
        momentum_value(momentum),
        as_float_scalar("alpha", alpha, positive=True),
    )
    velocity = None
    if state.get("velocity_weight") is not None:
        velocity = [
            as_float_array("state", state["velocity_weight"]),
            as_float_array("state", state["velocity_bias"]),
        ]
    if not bias:
        b[:] = 0.0
    bounds = np.searchsorted(step_of_row, np.arange(T + 1))
    flush = _Flush(h, labels, omega, bounds, fractions, lrs)
    rule = _Rule(lam, momentum, alpha, loss, bias)
    with np.errstate(all="ignore"):
        first = 0
        if T and (
            velocity is None or momentum == 0
        ):  # a first step sets every class's buffer: the plain update
            gw, gb = _step_gradients(w, b, flush, 0, rule)
            velocity, first = _heavy_ball(w, b, None, gw, gb, lrs[0], lam, momentum, bias), 1
        if (
            momentum == 0 or K * C * D <= _LAZY_FROM
        ):  # plain steps: no momentum to carry, or few weights to skip
            for t in range(first, T):
                gw, gb = _step_gradients(w, b, flush, t, rule)
                velocity = _heavy_ball(w, b, velocity, gw, gb, lrs[t], lam, momentum, bias)
        elif first < T:
            _lazy_heavy_ball(w, b, velocity, flush, first, rule)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise InputError(
            "lam, lrs: the replayed steps diverged (the PEM's parameters overflowed); "
            "these learning rates are too large for this loss scale"
        )
    out = {"weight": w, "bias": b, "velocity_weight": None, "velocity_bias": None}
    if velocity is not None:
        out.update(velocity_weight=velocity[0], velocity_bias=velocity[1])
    return out


def replay_steps(
    state: dict,
    rows,
    labels,
    weight,
    step_of_row,
    fractions,
    lrs,
    lam,
    *,
    momentum: float = 0.9,
    alpha: float = 1.0,
    loss: str = "logistic",
    bias: bool = True,
) -> dict:
    """``advance_replay`` on a copy of ``state``: the new state, the inputs left as they were."""
    if not isinstance(state, dict) or "weight" not in state or "bias" not in state:
        raise InputTypeError(
            f"state: expected a dict with the heads' weight and bias, got {type(state).__name__}"
        )
    fresh = {
        key: None if value is None else np.array(as_float_array("state", value), dtype=np.float64)
        for key, value in state.items()
        if key in ("weight", "bias", "velocity_weight", "velocity_bias")
    }
    return advance_replay(
        fresh,
        rows,
        labels,
        weight,
        step_of_row,
        fractions,
        lrs,
        lam,
        momentum=momentum,
        alpha=alpha,
        loss=loss,
        bias=bias,
    )


def finite_time_logit(
    counts,
    lam,
    lr,
    *,
    feature_norm_sq=1.0,
    momentum: float = 0.9,
    alpha: float = 1.0,
    batch_size: int | None = None,
    epochs: int | None = None,
    loss: str = "logistic",
    reduction: str = "mean",
    bias: bool = True,
    steps=None,
) -> np.ndarray:
    """The per-class PEM output after each epoch of heavy-ball training from zero, shape (E, C).

    Network-free: class c's features are a fixed vector of squared norm ``feature_norm_sq`` and its
    share of each step's loss is its expected one, pi_c ("mean", a batch-mean loss; ``ceil(N / batch_size)``
    steps per epoch, or ``steps``: the steps each epoch took, one number or one per epoch) or N_c ("sum", a
    summed loss, one full-batch step per epoch). ``lr`` is one rate
    or the rate of each epoch. ``counts`` (C,) holds for every epoch, or (E, C) gives each epoch's
    counts (a class distribution that changes during training); ``feature_norm_sq`` likewise is
    one value, one per class (C,), or one per epoch and class (E, C); (S, 1, C) or (S, E, C) gives S sets of norms at
    once and returns (S, E, C): the classes are independent, so the S sets run as one replay of S x C classes, at about
    the cost of one set (NumPy's per-step overhead dominates at these sizes). As lambda_s grows under fixed
    counts the result tends to ``predicted_priors(counts, lam, feature_norm_sq, reduction, loss, bias, weight=alpha)``.
    """
    counts = as_float_array("counts", counts, positive=True)
    if counts.ndim not in (1, 2) or counts.size == 0:
        raise InputError(
            f"counts: expected class counts (C,) or per-epoch counts (E, C), got shape {counts.shape}"
        )
    choice("reduction", reduction, REDUCTIONS)
    lr = as_float_array("lr", lr, nonnegative=True)
    if lr.ndim > 1:
        raise InputError(f"lr: expected one rate or one per epoch, got shape {lr.shape}")
    default_epochs = counts.shape[0] if counts.ndim == 2 else (lr.size if lr.ndim == 1 else None)
    epochs = positive_int("epochs", epochs if epochs is not None else default_epochs, maximum=MAX_STEPS)
    lr_epoch = np.broadcast_to(lr, (epochs,)) if lr.ndim == 0 or lr.size == epochs else None
    if lr_epoch is None:
        raise InputError(f"lr: {lr.size} rates for {epochs} epochs")
    if counts.ndim == 2 and counts.shape[0] != epochs:
        raise InputError(f"counts: {counts.shape[0]} epochs of counts for {epochs} epochs")
    C = counts.shape[-1]
    given = None
    if steps is not None:
        given = np.broadcast_to(as_float_array("steps", steps, positive=True), (epochs,))
        if np.any(given != np.round(given)) or given.sum() > MAX_STEPS:
            raise InputError(f"steps: expected whole numbers of steps per epoch, at most {MAX_STEPS} in all")
        given = given.astype(np.int64)
    if counts.ndim == 1 and given is None:  # bounded work before anything per epoch is built
        one = (
            steps_per_epoch(
                int(round(counts.sum())), batch_size if batch_size is not None else int(round(counts.sum()))
            )
            if reduction == "mean"
            else 1
        )
        if one * epochs > MAX_STEPS:
            raise InputError(f"epochs, batch_size: {one * epochs} steps exceed the limit of {MAX_STEPS}")
    per_epoch = np.broadcast_to(counts, (epochs, C))
    fns = as_float_array("feature_norm_sq", feature_norm_sq, nonnegative=True)
    if fns.shape not in ((), (C,), (epochs, C)) and not (
        fns.ndim == 3 and fns.shape[1:] in ((1, C), (epochs, C))
    ):
        raise InputError(
            f"feature_norm_sq: expected one value, ({C},), ({epochs}, {C}), or S sets (S, 1, {C}) or (S, {epochs}, {C}), "
            f"got {fns.shape}"
        )
    sets = fns.shape[0] if fns.ndim == 3 else 1
    totals = per_epoch.sum(1)
    if reduction == "mean":
        steps = (
            given
            if given is not None
            else np.array(
                [
                    steps_per_epoch(int(round(t)), batch_size if batch_size is not None else int(round(t)))
                    for t in totals
                ]
            )
        )
        share = per_epoch / totals[:, None]
    else:
        steps, share = np.ones(epochs, dtype=np.int64), per_epoch
    if steps.sum() > MAX_STEPS:
        raise InputError(f"epochs, batch_size: {steps.sum()} steps exceed the limit of {MAX_STEPS}")
    if steps.sum() * sets > MAX_STEPS:  # the work of S sets is bounded like that of S runs
        raise InputError(
            f"feature_norm_sq: {sets} sets of {steps.sum()} steps exceed the limit of {MAX_STEPS}"
        )
    norms = np.broadcast_to(fns, (sets, epochs, C))  # the sets side by side as S x C classes: (E, S C, 1)
    means = np.sqrt(np.moveaxis(norms, 0, 1).reshape(epochs, sets * C))[..., None]
    eta = _run_replay(  # heavy_ball_pem's steps, each epoch's shares kept per epoch
        np.zeros((1, sets * C, 1)),
        np.zeros((1, sets * C)),
        means,
        _EpochShares(np.tile(share, (1, sets))),
        np.repeat(lr_epoch, steps),
        as_float_scalar("lam", lam, nonnegative=True),
        momentum_value(momentum),
        as_float_scalar("alpha", alpha, positive=True),
        get_loss(loss),
        bias,
        np.repeat(np.arange(epochs), steps),
    )["eta_per_epoch"]
    return np.moveaxis(eta.reshape(epochs, sets, C), 1, 0) if fns.ndim == 3 else eta
