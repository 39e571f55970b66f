"""The long-tailed baselines' classifier losses (docs/baselines.md), each a ``ClassifierLoss`` of ``objective.py``.

- ``ClassBalanced``: the batch mean of w_{y_i} l_i with the effective-number weights w_c = (1 - beta) / (1 - beta^N_c),
  normalized to sum to C (Cui et al., CVPR 2019), around CE or the softmax focal loss;
- ``FocalLoss``: (1 - p_y)^gamma CE (Lin et al.), the softmax form;
- ``LDAM``: CE(z - s m_y e_y) with margins m_c proportional to N_c^(-1/4), the largest ``max_margin``, on the cosine
  logits z = s cos(w_c, h) of ``models/classifiers.CosineClassifier`` (Cao et al., NeurIPS 2019).

Deferred re-weighting (DRW) is not a loss but a schedule: ``objective.Objective(drw_epoch=...)`` switches any of these
to effective-number class weights from that epoch on (``EpochState.class_weight``). Imports: torch, NumPy and
``objective.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .objective import cross_entropy, effective_number_weights


def _on_device(cache: dict, device, make) -> torch.Tensor:
    """``make()`` (a per-class NumPy vector) as float32 on ``device``, computed once per device."""
    key = str(device)
    if key not in cache:
        cache[key] = torch.as_tensor(make(), dtype=torch.float32, device=device)
    return cache[key]


def _weighted_mean(per_sample: torch.Tensor, labels: torch.Tensor, weight, class_weight) -> torch.Tensor:
    """sum_i s_i c_{y_i} l_i / B over valid labels, s_i the sample share (``weight``), c the class weights (or 1)."""
    valid = labels >= 0
    w = torch.ones_like(per_sample) if weight is None else weight
    if class_weight is not None:
        w = w * class_weight[labels.clamp_min(0)]
    return (w * per_sample * valid).sum() / valid.sum().clamp_min(1)


@dataclass(frozen=True)
class FocalLoss:
    """(1 - p_y)^gamma * CE(z, y), the softmax focal loss; gamma = 0 is CE. In log space: p_y = exp(-CE)."""

    gamma: float = 1.0

    def __call__(self, z, labels, weight, state):
        ce = F.cross_entropy(z, labels.clamp_min(0), reduction="none")
        focal = (-torch.expm1(-ce)).clamp_min(
            0
        ) ** self.gamma * ce  # 1 - p_y = -expm1(-CE), exact for p_y near 1
        return _weighted_mean(focal, labels, weight, state.class_weight)


@dataclass(frozen=True)
class ClassBalanced:
    """The batch mean of w_{y_i} * base_i with w the effective-number weights of the training ``counts`` at ``beta``
    (sum C); ``base`` "ce" or "focal" (at ``gamma``). The weights are fixed at the training counts, as in Cui et al."""

    counts: np.ndarray
    beta: float = 0.9999
    base: str = "ce"
    gamma: float = 1.0
    _weights: dict = field(default_factory=dict, compare=False, repr=False)

    def weights(self, device) -> torch.Tensor:
        return _on_device(self._weights, device, lambda: effective_number_weights(self.counts, self.beta))

    def __call__(self, z, labels, weight, state):
        w = self.weights(z.device)
        if state.class_weight is not None:  # a DRW schedule on top re-weights again
            w = w * state.class_weight
        if self.base == "focal":
            return FocalLoss(self.gamma)(z, labels, weight, replace(state, class_weight=w))
        ce = F.cross_entropy(z, labels.clamp_min(0), reduction="none")
        return _weighted_mean(ce, labels, weight, w)


def ldam_margins(counts, max_margin: float = 0.5) -> np.ndarray:
    """m_c = max_margin * N_c^(-1/4) / max_c N_c^(-1/4): the rarest class gets ``max_margin``."""
    n = np.asarray(counts, dtype=np.float64)
    m = n**-0.25
    return max_margin * m / m.max()


@dataclass(frozen=True)
class LDAM:
    """CE(z - scale * m_y e_y, y) on cosine logits z = scale * cos (the scale already in z); class weights from a DRW
    schedule in PyTorch's weighted mean (as the LDAM-DRW code)."""

    counts: np.ndarray
    max_margin: float = 0.5
    scale: float = 30.0
    _margins: dict = field(default_factory=dict, compare=False, repr=False)

    def margins(self, device) -> torch.Tensor:
        return _on_device(self._margins, device, lambda: ldam_margins(self.counts, self.max_margin))

    def __call__(self, z, labels, weight, state):
        shift = self.scale * self.margins(z.device)[labels.clamp_min(0)]
        onehot = F.one_hot(labels.clamp_min(0), z.shape[1]).to(z.dtype)
        return cross_entropy(z - shift[:, None] * onehot, labels, weight, state.class_weight)
