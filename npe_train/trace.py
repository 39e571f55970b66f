"""The PEM's trace: what the prior report needs to replay the optimizer on the PEM alone (docs/regimes.md).

Per epoch the training loop appends the learning rate it used, every step's class shares of the
loss, and the class-mean features its steps produced; the PEM's initial weights are kept from the
start. The trace travels in the checkpoint, so a resumed run replays its whole history.
"""
from __future__ import annotations

import numpy as np

from npe_theory.dynamics import lambda_s


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


def felt_decay(trace: dict, cfg) -> float:
    """lambda_s = weight_decay * sum over the steps taken of lr_t / (1 - momentum)."""
    return lambda_s(cfg.weight_decay, [lr * len(f) for lr, f in zip(trace["lrs"], trace["fractions"])], cfg.momentum)
