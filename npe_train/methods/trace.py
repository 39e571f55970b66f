"""The PEM's trace: what the prior report needs to replay the optimizer on the PEM alone (docs/regimes.md).

Per epoch the training loop appends the learning rate it used, every step's class shares of the
loss, and the class-mean features its steps produced; the PEM's initial weights are kept from the
start. The trace travels in the checkpoint, so a resumed run replays its whole history.
``PemRecipe`` holds the settings the PEM trained with. Imports: NumPy and ``npe_theory`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npe_theory.dynamics import lambda_s
from npe_theory.report import PemSettings


@dataclass(frozen=True)
class PemRecipe:
    """How the training loop trains every PEM: SGD with ``weight_decay`` and ``momentum`` on all its weights and its
    bias, the one-way ``loss`` averaged over the batch, weighted ``alpha`` in the total loss."""

    weight_decay: float
    momentum: float
    alpha: float
    loss: str = "logistic"

    def settings(self, lam_s: float) -> PemSettings:
        """The prior report's settings after a felt decay of ``lam_s``: batch-mean loss, decayed bias, weight alpha."""
        return PemSettings(weight_decay=self.weight_decay, alpha=self.alpha, loss=self.loss, reduction="mean", bias=True,
                           momentum=self.momentum, lambda_s=lam_s)


def new_trace(model) -> dict:
    """The PEM heads' initial weights (K, C, D) and biases (K, C); per-epoch lists the training loop fills."""
    trace = {"lrs": [], "fractions": [], "means": [], "init_weight": None, "init_bias": None,
             "stream": None}  # the last epoch's samples (a shifting stream) and effective counts, for the report
    if model.pem is not None and model.pem.is_linear:
        trace["init_weight"] = np.stack([h.weight.detach().double().cpu().numpy() for h in model.pem.heads])
        trace["init_bias"] = np.stack([h.bias.detach().double().cpu().numpy() for h in model.pem.heads])
    return trace


def record_epoch(trace: dict, lr: float, fractions: np.ndarray, means: np.ndarray) -> None:
    """Append one epoch: the rate its steps used, each step's class shares (steps, C), the class-mean features (C, D)."""
    trace["lrs"].append(lr)
    trace["fractions"].append(fractions)
    trace["means"].append(means)


def replay_inputs(trace: dict) -> dict | None:
    """The trace as the arrays ``npe_theory.report.pem_report`` replays (None for a non-linear PEM)."""
    if trace["init_weight"] is None or not trace["lrs"]:
        return None
    steps = [len(f) for f in trace["fractions"]]
    return {"init_weight": trace["init_weight"], "init_bias": trace["init_bias"], "means": np.stack(trace["means"]),
            "lrs": np.concatenate([np.full(n, lr) for lr, n in zip(trace["lrs"], steps)]), "fractions": np.concatenate(trace["fractions"]),
            "epoch_of_step": np.repeat(np.arange(len(steps)), steps)}


def felt_decay(trace: dict, weight_decay: float, momentum: float) -> float:
    """lambda_s = weight_decay * sum over the steps taken of lr_t / (1 - momentum)."""
    return lambda_s(weight_decay, [lr * len(f) for lr, f in zip(trace["lrs"], trace["fractions"])], momentum)
