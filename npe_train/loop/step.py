"""One SGD step and one epoch of the training loop, the same for every task and method.

Before an epoch starts its plan is drawn (``epoch_plan``): this rank's samples in order, their
augmentation draws, every step's class shares of the loss (for the PEM's trace) and, with a mixing
method, each sample's partner. What differs between tasks and methods comes from the objects the
loop is given: the task (class weights per position, loss terms, feature rows), the mixing method
(pairs, batches) and the objective (the loss). Imports: torch, ``data/``, ``device/``, ``methods/`` and the
contracts of ``tasks/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..data.pipeline import draw_augmentation
from ..device.distributed import Dist
from ..methods.feature_sample import EpochOutputs, StepRows
from ..methods.mixing import Mixing
from ..methods.objective import EpochState, Objective
from ..tasks.base import LossWeights, Task


def train_step(
    model, opt, x, terms, objective: Objective, state: EpochState, use_amp: bool
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """One SGD step on ``objective`` over the batch's loss ``terms`` in the epoch ``state``; returns ((loss, ce, pem),
    features), detached."""
    if use_amp:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            logits, heads, h = model(x)
    else:  # no autocast context at all: entering a disabled one costs about 5 us a step, 0.4% of a small network's
        logits, heads, h = model(x)
    loss, ce, pem = objective(logits, heads, terms, state)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return (loss.detach(), ce.detach(), pem.detach()), h.detach()


def padded_length(n: int, world: int, batch_size: int) -> int:
    """The positions an epoch of n samples takes: n rounded up to a multiple of the world size, so every rank takes the
    same number of steps; less one position per rank when the last step would give each rank a single sample
    (BatchNorm cannot normalize one sample; the dropped ones are a random few, different each epoch)."""
    padded = -(-n // world) * world
    return padded - world if padded > batch_size and padded % batch_size == world else padded


@dataclass
class EpochPlan:
    """One epoch, drawn before it starts: this rank's samples in order and what goes with them.

    ``fractions`` (steps, C): every global step's class shares of the loss; ``counts`` (C,): the
    epoch's effective class counts (each sample's loss weight summed per class). With mixing,
    ``partner`` and ``partner_draws`` are the shard's partners and ``xi`` its own label's shares.
    """

    shard: torch.Tensor
    draws: torch.Tensor | None
    fractions: np.ndarray
    counts: np.ndarray
    partner: torch.Tensor | None = None
    partner_draws: torch.Tensor | None = None
    xi: torch.Tensor | None = None


@dataclass(frozen=True)
class StepContext:
    """What every epoch of a run steps with. An epoch's plan reads the task, the mixing method, the global
    ``batch_size``, whether inputs are ``augment``-ed, this process's ``rank_info`` and the class count; its steps also
    the (wrapped) network ``net``, its optimizer, the input ``feed`` (``data/pipeline.py``), the objective, bf16
    autocast (``use_amp``), CUDA-graph step marks (``cudagraphs``) and a method's hook after each step (``after_step``,
    ``methods/stages.py``)."""

    task: Task
    mixing: Mixing
    batch_size: int
    augment: bool
    rank_info: Dist
    num_classes: int
    net: object = None
    opt: torch.optim.Optimizer | None = None
    feed: object = None
    objective: Objective | None = None
    use_amp: bool = False
    cudagraphs: bool = False
    after_step: Callable[[], None] | None = None


def epoch_plan(
    gen: torch.Generator,
    y_train: np.ndarray,
    ctx: StepContext,
    epoch: int = 0,
    counts: np.ndarray | None = None,
    subset: np.ndarray | None = None,
) -> EpochPlan:
    """This rank's shard of the epoch's permutation, its augmentation draws, every global step's class shares, and
    with mixing each sample's partner (from the same rank's batch) and share.

    Every rank draws the same permutation, padded to a multiple of the world size; global step i
    covers positions [i B, (i + 1) B) of the padded permutation, which is what its shards hold.
    A step's class shares are its positions' class weights over its loss terms (``step_shares``).
    ``subset``: the epoch's samples (default all); ``counts``: the class counts a mixing method draws partners by.
    """
    task, mixing, batch_size, rank_info = ctx.task, ctx.mixing, ctx.batch_size, ctx.rank_info
    n = len(y_train) if subset is None else len(subset)
    perm = torch.randperm(n, generator=gen)
    if subset is not None:
        perm = torch.as_tensor(subset, dtype=torch.int64)[perm]
    draws = draw_augmentation(n, gen) if ctx.augment else None
    padded = padded_length(n, rank_info.world, batch_size)
    order = torch.cat([perm, perm[: padded - n]])[:padded]
    if draws is not None:
        draws = torch.cat([draws, draws[: padded - n]])[:padded]
    labels = y_train[order.numpy()]
    pairing = mixing.pair(labels, counts, batch_size // rank_info.world, rank_info.world, gen, epoch)
    C = ctx.num_classes
    entries = (
        task.loss_weights(labels, C)
        if pairing is None
        else task.loss_weights(labels, C, labels[pairing[0]], pairing[1])
    )
    fractions, counts = step_shares(entries, C, batch_size, padded, n)
    mine = slice(rank_info.rank, None, rank_info.world)
    plan = EpochPlan(order[mine], None if draws is None else draws[mine], fractions, counts)
    if pairing is not None:
        partner_pos, weight = pairing
        plan.partner = order[torch.from_numpy(partner_pos)][mine]
        plan.partner_draws = None if draws is None else draws[torch.from_numpy(partner_pos)][mine]
        plan.xi = torch.from_numpy(weight[mine].astype(np.float32))
    return plan


def step_shares(
    entries: LossWeights, num_classes: int, batch_size: int, padded: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every global step's class shares, (steps, C) float32, and the epoch's effective class counts (C,) from the
    epoch's sparse loss weights: fraction[s, c] = sum of the weights of class c at step s's positions / max(step s's
    loss terms, 1); counts_c = sum of class c's weights at the first n positions (the padding repeats samples).
    Bincounts over the entries: O(entries + steps C), never an n x C array."""
    C, steps = num_classes, -(-padded // batch_size)
    position, label = np.asarray(entries.position), np.asarray(entries.label)
    weight = np.asarray(entries.weight, dtype=np.float64)
    if label.size and not (
        0 <= label.min() and label.max() < C and 0 <= position.min() and position.max() < padded
    ):
        # a slot out of range would land in another step's or class's share without a word
        raise ValueError(
            f"loss_weights: entries must have classes in [0, {C}) and positions in [0, {padded})"
        )
    sums = np.bincount((position // batch_size) * C + label, weight, minlength=steps * C)
    sums = sums.astype(np.float64, copy=False).reshape(steps, C)  # no entries at all: bincount gives integers
    terms = np.add.reduceat(np.asarray(entries.terms, dtype=np.float64), np.arange(0, padded, batch_size))
    own = position < n
    counts = np.bincount(label[own], weight[own], minlength=C).astype(np.float64, copy=False)
    sums /= np.maximum(terms, 1)[:, None]  # in place: at 8,000 classes sums is a few hundred MB
    return sums.astype(np.float32), counts


def run_epoch(
    ctx: StepContext, plan: EpochPlan, state: EpochState, replay=None, outputs: EpochOutputs | None = None
):
    """SGD over one epoch; returns (mean loss, ce, pem).

    ``replay`` (or None, for a PEM that is not linear): advanced with a few of each step's feature rows per class (this
    rank's rows; ``methods/feature_sample.py``). ``outputs``: collects every step's features and labels (this rank's).

    A step that overflows outright (a learning rate beyond float32) counts as a diverged epoch: infinite losses.
    """
    try:
        return _epoch(ctx, plan, state, replay, outputs)
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        return [math.inf] * 3


def _epoch(ctx: StepContext, plan: EpochPlan, state: EpochState, replay, outputs):
    task, rank_info = ctx.task, ctx.rank_info
    device = state.log_prior.device
    # each step's (loss, ce, pem) and sample count, summed once at the epoch's end: no per-step arithmetic
    losses, sizes, sample = ([], [], []), [], None
    for x, pairs in ctx.mixing.batches(ctx.feed, plan, ctx.batch_size // rank_info.world):
        if ctx.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        terms = task.loss_terms(pairs)
        step, h = train_step(ctx.net, ctx.opt, x, terms, ctx.objective, state, ctx.use_amp)
        if ctx.after_step is not None:
            ctx.after_step()
        for kept, value in zip(losses, step):
            kept.append(value)
        sizes.append(len(terms[0][0]))
        if outputs is not None:
            outputs.add(h, terms)
        if replay is not None:
            if sample is None:
                sample = StepRows(ctx.num_classes, h.shape[1])
            sample.add(
                *task.feature_terms(h, terms)
            )  # each row counts toward each of its labels by the label's weight
            if sample.full():
                replay.advance(sample.flush())
    if sample is not None:
        replay.advance(sample.flush())
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    if sizes:
        weights = torch.tensor(sizes, dtype=torch.float64, device=device)
        sums = (torch.stack([torch.stack(kept) for kept in losses], 1).double() * weights[:, None]).sum(0)
    if rank_info.world > 1:
        dist.all_reduce(sums)
    return (sums / (len(plan.shard) * rank_info.world)).tolist()
