"""The training objective (docs/methods.md): the method's classifier loss on the logits z, plus alpha times the PEM's
one-way loss.

A batch's loss terms are a list of ``(labels, weights or None)``: one ``(y, None)`` is plain training,
a mixing method gives ``(y, xi)`` and ``(y2, 1 - xi)``, and a weighted term is the batch mean of
``w_i l_i``. What a classifier loss may read at an epoch (the class counts, their log-prior, a deferred
re-weighting) is the ``EpochState`` the objective makes for it. Imports: torch, NumPy and ``pem_loss.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .pem_loss import heads_loss


@dataclass(frozen=True)
class EpochState:
    """What a classifier loss reads at an epoch: ``counts`` (C,) the epoch's class counts, ``log_prior`` (C,) ln pi of them
    (float32, on the device), ``class_weight`` (C,) the deferred re-weighting in force (None: none), ``epoch``."""

    epoch: int
    counts: torch.Tensor
    log_prior: torch.Tensor
    class_weight: torch.Tensor | None = None


class ClassifierLoss(Protocol):
    """A method's loss on the logits: the batch mean over a term's samples (``weight``: a per-sample share, e.g. a mixed
    sample's, or None), for (B, C) logits or per pixel for (B, C, H, W)."""

    def __call__(
        self, z: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, state: EpochState
    ) -> torch.Tensor: ...


def per_class(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A (C,) vector shaped to broadcast along the class axis of (B, C) or (B, C, H, W) logits."""
    return v.view(1, -1, *([1] * (z.dim() - 2)))


def cross_entropy(
    z: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """CE averaged over the batch (over valid pixels for dense labels), or with ``weight`` the batch mean of w_i CE_i.

    ``class_weight`` (C,): PyTorch's weighted mean, sum_i c_{y_i} w_i CE_i / sum_i c_{y_i} (the deferred re-weighting of
    the LDAM-DRW code), so the step size does not move with a batch's class mix."""
    if class_weight is None:
        if weight is None:
            return F.cross_entropy(z, labels)
        return (weight * F.cross_entropy(z, labels, reduction="none")).mean()
    if weight is None:
        return F.cross_entropy(z, labels, weight=class_weight)
    per = F.cross_entropy(z, labels, reduction="none", weight=class_weight)
    valid = labels >= 0
    norm = (class_weight[labels.clamp_min(0)] * valid).sum()
    return (weight * per).sum() / norm.clamp_min(1e-12)


class CrossEntropy:
    """CE(z, y): the plain loss."""

    def __call__(self, z, labels, weight, state):
        return cross_entropy(z, labels, weight, state.class_weight)


@dataclass(frozen=True)
class LogitAdjusted:
    """CE(z + tau ln pi, y): the logit-adjusted loss (Menon et al.), Prior-LT's Bayias and, at tau 1, Balanced Softmax."""

    tau: float

    def __call__(self, z, labels, weight, state):
        return cross_entropy(z + self.tau * per_class(state.log_prior, z), labels, weight, state.class_weight)


def effective_number_weights(counts, beta: float) -> np.ndarray:
    """w_c = (1 - beta) / (1 - beta^N_c) normalized to sum to C (Cui et al. 2019); beta = 0 gives all ones."""
    n = np.asarray(counts, dtype=np.float64)
    w = np.ones_like(n) if beta == 0 else (1.0 - beta) / -np.expm1(n * np.log(beta))
    return w * (len(n) / w.sum())


@dataclass(frozen=True)
class Objective:
    """loss = sum over terms of the classifier loss + alpha * sum over terms of the PEM loss (summed over heads).

    ``drw_epoch``: from this epoch on, the classifier loss is re-weighted by the effective number of each class's
    samples (``effective_number_weights`` at ``drw_beta``; the PEM's loss is never re-weighted, so it still estimates
    the training prior). None: never.
    """

    classifier_loss: ClassifierLoss
    alpha: float
    pem_loss: str = "logistic"
    drw_epoch: int | None = None
    drw_beta: float = 0.9999

    def at_epoch(self, epoch: int, counts: np.ndarray, device) -> EpochState:
        """The state the classifier loss reads in ``epoch`` with the epoch's class ``counts``."""
        counts = np.asarray(counts, dtype=np.float64)
        weight = None
        if self.drw_epoch is not None and epoch >= self.drw_epoch:
            weight = torch.as_tensor(
                effective_number_weights(counts, self.drw_beta), dtype=torch.float32, device=device
            )
        return EpochState(
            epoch,
            torch.as_tensor(counts, dtype=torch.float32, device=device),
            torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32, device=device),
            weight,
        )

    def __call__(self, logits: torch.Tensor, heads: torch.Tensor | None, terms, state: EpochState):
        """(loss, ce, pem) of one batch; ``heads`` (K, B, C, ...) or None for a network without a PEM."""
        z = logits.float()
        ce = sum(self.classifier_loss(z, t, w, state) for t, w in terms)
        if heads is None:
            pem = torch.zeros((), device=logits.device)
        else:
            pem = sum(heads_loss(heads.float(), t, self.pem_loss, validate=False, weight=w) for t, w in terms)
        return ce + self.alpha * pem, ce, pem
