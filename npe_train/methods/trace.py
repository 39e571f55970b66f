"""The PEM's trace: what the prior report needs to replay the optimizer on the PEM alone (docs/regimes.md).

Per epoch the training loop appends the learning rate it used and every step's class shares of the
loss; the PEM's initial weights are kept from the start. The replay itself advances with the
training, on each step's own feature rows (a few per class, ``methods/feature_sample.py``), and only
its state (heads and momentum buffers) is kept: linear in epochs, and no feature history. The trace
travels in the checkpoint, so a resumed run continues its replay where it stopped.
``PemRecipe`` holds the settings the PEM trained with. Imports: NumPy and ``npe_theory`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from npe_theory.dynamics import advance_replay, lambda_s, replay_steps
from npe_theory.report import PemSettings


@dataclass(frozen=True)
class PemRecipe:
    """How the training loop trains every PEM: SGD with ``weight_decay`` and ``momentum`` on all its weights and its
    bias, the one-way ``loss`` averaged over the batch, weighted ``alpha`` in the total loss."""

    weight_decay: float
    momentum: float
    alpha: float
    loss: str = "logistic"

    def settings(self, trace: Trace) -> PemSettings:
        """The prior report's settings after the epochs in ``trace``: batch-mean loss, decayed bias, weight alpha, and the
        schedule the steps took (each epoch's rate and number of steps; lambda_s from them, ``felt_decay``)."""
        steps = trace.steps
        schedule = (
            {"lr": [float(v) for v in trace.lrs], "epochs": len(steps), "steps": steps} if steps else {}
        )
        return PemSettings(
            weight_decay=self.weight_decay,
            alpha=self.alpha,
            loss=self.loss,
            reduction="mean",
            bias=True,
            momentum=self.momentum,
            lambda_s=felt_decay(trace, self.weight_decay, self.momentum),
            **schedule,
        )


@dataclass
class Trace:
    """What the prior report needs beyond the network: per epoch the learning rate and the number of steps; the PEM
    heads' initial weights (K, C, D) and biases (K, C), None for a PEM that is not linear; the replay's state (heads and
    momentum buffers), None before a step; a shifting stream's last epoch (``{"index", "counts"}``), None otherwise.
    ``as_dict`` / ``from_dict`` are the checkpoint's form.

    An epoch's class shares per step (steps, C) drive its replay while it runs and are not kept: the replay's state
    carries what they did, so the trace grows by two numbers an epoch, not by steps x C (docs/report.md, "The report at
    scale")."""

    lrs: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    init_weight: np.ndarray | None = None
    init_bias: np.ndarray | None = None
    replay: dict | None = None
    stream: dict | None = None

    @classmethod
    def start(cls, model) -> Trace:
        """An empty trace holding the PEM heads' initial weights when the PEM is linear."""
        if model.pem is None or not model.pem.is_linear:
            return cls()
        heads = model.pem.heads
        return cls(
            init_weight=np.stack([h.weight.detach().double().cpu().numpy() for h in heads]),
            init_bias=np.stack([h.bias.detach().double().cpu().numpy() for h in heads]),
        )

    def record_epoch(self, lr: float, steps: int) -> None:
        """Append one epoch: the rate its steps used and how many there were."""
        self.lrs.append(lr)
        self.steps.append(int(steps))

    def as_dict(self) -> dict:
        """The fields as a plain dict (what the checkpoint stores)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, value: dict) -> Trace:
        """Inverse of ``as_dict``; the checkpoint checks the shapes before (``run/checkpoint._check_trace``)."""
        return cls(**{f.name: value[f.name] for f in fields(cls)})


class EpochReplay:
    """Advances the trace's replay over one epoch's steps as their feature rows arrive (``feature_sample.StepRows``)."""

    def __init__(self, trace: Trace, recipe: PemRecipe, lr: float, fractions: np.ndarray):
        self.trace, self.recipe, self.lr, self.fractions = trace, recipe, lr, fractions

    def advance(self, flushed) -> None:
        """Replay the flushed steps ``(first, count, (rows, labels, weights, step of each row))`` on the PEM's recipe."""
        if flushed is None:
            return
        first, count, (rows, labels, weight, step) = flushed
        if not np.all(
            np.isfinite(rows)
        ):  # the network diverged: its loss is not finite either, and the loop stops the run
            return
        trace, r = self.trace, self.recipe
        # the trace owns its replay state and advances it in place; the initial heads it keeps as they are
        advance = advance_replay if trace.replay is not None else replay_steps
        state = trace.replay or {"weight": trace.init_weight, "bias": trace.init_bias}
        trace.replay = advance(
            state,
            rows,
            labels,
            weight,
            step,
            self.fractions[first : first + count],
            np.full(count, self.lr),
            r.weight_decay,
            momentum=r.momentum,
            alpha=r.alpha,
            loss=r.loss,
        )


def epoch_replay(trace: Trace, recipe: PemRecipe, lr: float, fractions: np.ndarray) -> EpochReplay | None:
    """The epoch's replay, or None for a PEM that is not linear (no replay)."""
    return None if trace.init_weight is None else EpochReplay(trace, recipe, lr, fractions)


def replayed_heads(trace: Trace) -> dict | None:
    """The replayed heads ``{"weight", "bias"}`` as ``npe_theory.report.pem_report`` reads them; None for a non-linear PEM or
    before a step."""
    if trace.replay is None:
        return None
    return {"weight": trace.replay["weight"], "bias": trace.replay["bias"]}


def felt_decay(trace: Trace, weight_decay: float, momentum: float) -> float:
    """lambda_s = weight_decay * sum over the steps taken of lr_t / (1 - momentum)."""
    return lambda_s(weight_decay, [lr * k for lr, k in zip(trace.lrs, trace.steps)], momentum)
