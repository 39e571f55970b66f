"""The PEM's trace: what the prior report needs to replay the optimizer on the PEM alone (docs/regimes.md).

Per epoch the training loop appends the learning rate it used and every step's class shares of the
loss; the PEM's initial weights are kept from the start. The replay itself advances with the
training, on each step's own feature rows (a few per class, ``methods/feature_sample.py``), and only
its state (heads and momentum buffers) is kept: linear in epochs, and no feature history. The trace
travels in the checkpoint, so a resumed run continues its replay where it stopped.
``PemRecipe`` holds the settings the PEM trained with. Imports: NumPy and ``npe_theory`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npe_theory.dynamics import lambda_s, replay_steps
from npe_theory.report import PemSettings


@dataclass(frozen=True)
class PemRecipe:
    """How the training loop trains every PEM: SGD with ``weight_decay`` and ``momentum`` on all its weights and its
    bias, the one-way ``loss`` averaged over the batch, weighted ``alpha`` in the total loss."""

    weight_decay: float
    momentum: float
    alpha: float
    loss: str = "logistic"

    def settings(self, trace: dict) -> PemSettings:
        """The prior report's settings after the epochs in ``trace``: batch-mean loss, decayed bias, weight alpha, and the
        schedule the steps took (each epoch's rate and number of steps; lambda_s from them, ``felt_decay``)."""
        steps = [len(f) for f in trace["fractions"]]
        schedule = (
            {"lr": [float(v) for v in trace["lrs"]], "epochs": len(steps), "steps": steps} if steps else {}
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


def new_trace(model) -> dict:
    """The PEM heads' initial weights (K, C, D) and biases (K, C); per-epoch lists the training loop fills."""
    trace = {
        "lrs": [],
        "fractions": [],
        "init_weight": None,
        "init_bias": None,
        "replay": None,
        "stream": None,
    }  # the last epoch's samples (a shifting stream) and effective counts, for the report
    if model.pem is not None and model.pem.is_linear:
        trace["init_weight"] = np.stack([h.weight.detach().double().cpu().numpy() for h in model.pem.heads])
        trace["init_bias"] = np.stack([h.bias.detach().double().cpu().numpy() for h in model.pem.heads])
    return trace


def record_epoch(trace: dict, lr: float, fractions: np.ndarray) -> None:
    """Append one epoch: the rate its steps used and each step's class shares (steps, C)."""
    trace["lrs"].append(lr)
    trace["fractions"].append(fractions)


class EpochReplay:
    """Advances the trace's replay over one epoch's steps as their feature rows arrive (``feature_sample.StepRows``)."""

    def __init__(self, trace: dict, recipe: PemRecipe, lr: float, fractions: np.ndarray):
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
        state = trace["replay"] or {"weight": trace["init_weight"], "bias": trace["init_bias"]}
        trace["replay"] = replay_steps(
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


def epoch_replay(trace: dict, recipe: PemRecipe, lr: float, fractions: np.ndarray) -> EpochReplay | None:
    """The epoch's replay, or None for a PEM that is not linear (no replay)."""
    return None if trace["init_weight"] is None else EpochReplay(trace, recipe, lr, fractions)


def replayed_heads(trace: dict) -> dict | None:
    """The replayed heads ``{"weight", "bias"}`` as ``npe_theory.report.pem_report`` reads them; None for a non-linear PEM or
    before a step."""
    if trace["replay"] is None:
        return None
    return {"weight": trace["replay"]["weight"], "bias": trace["replay"]["bias"]}


def felt_decay(trace: dict, weight_decay: float, momentum: float) -> float:
    """lambda_s = weight_decay * sum over the steps taken of lr_t / (1 - momentum)."""
    return lambda_s(weight_decay, [lr * len(f) for lr, f in zip(trace["lrs"], trace["fractions"])], momentum)
