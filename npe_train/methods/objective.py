"""The training objective (docs/methods.md): cross-entropy on the logits z, or on z + tau ln pi (the logit-adjusted
loss), plus alpha times the PEM's one-way loss.

A batch's loss terms are a list of ``(labels, weights or None)``: one ``(y, None)`` is plain training,
a mixing method gives ``(y, xi)`` and ``(y2, 1 - xi)``, and a weighted term is the batch mean of
``w_i l_i``. Imports: torch and ``pem_loss.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .pem_loss import heads_loss


def cross_entropy(z: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE averaged over the batch (over valid pixels for dense labels), or with ``weight`` the batch mean of w_i CE_i."""
    if weight is None:
        return F.cross_entropy(z, labels)
    return (weight * F.cross_entropy(z, labels, reduction="none")).mean()


@dataclass(frozen=True)
class Objective:
    """loss = sum over terms of CE(z + adjust) + alpha * sum over terms of the PEM loss (summed over heads).

    ``la_tau``: None for plain CE; tau for the logit-adjusted loss, CE of z + tau ln pi (per pixel for (B, C, H, W)).
    """

    alpha: float
    pem_loss: str = "logistic"
    la_tau: float | None = None

    def training_logits(self, logits: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
        """What CE is taken of: z, or z + tau ln pi."""
        if self.la_tau is None:
            return logits
        return logits + self.la_tau * log_prior.view(1, -1, *([1] * (logits.dim() - 2)))

    def __call__(self, logits: torch.Tensor, heads: torch.Tensor | None, terms, log_prior: torch.Tensor):
        """(loss, ce, pem) of one batch; ``heads`` (K, B, C, ...) or None for a network without a PEM."""
        z = self.training_logits(logits.float(), log_prior)
        ce = sum(cross_entropy(z, t, w) for t, w in terms)
        if heads is None:
            pem = torch.zeros((), device=logits.device)
        else:
            pem = sum(heads_loss(heads.float(), t, self.pem_loss, validate=False, weight=w) for t, w in terms)
        return ce + self.alpha * pem, ce, pem
