"""Prior Estimation Modules, the one-way loss and NPE logit adjustment (docs/theory.md, section 1).

Sign convention: ``eta`` is the prior signal itself (it grows like ln N_c); the
official code's PEM output is ``p = -eta``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from npe_theory._validate import as_float_scalar, positive_int
from npe_theory.errors import InputError, InputTypeError

PEM_LOSSES = ("logistic", "exp")


MAX_PARAMETERS = 2**31  # bounded work: a PEM of more weights than this is refused


def _tensor(name: str, value, integer: bool = False) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if integer and (value.dtype == torch.bool or value.is_floating_point() or value.is_complex()):
        raise InputTypeError(f"{name}: expected integer class ids (torch.long), got {value.dtype}")
    if not integer and not value.is_floating_point():
        raise InputTypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    return value


def _check_target(eta: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    _tensor("eta", eta)
    _tensor("target", target, integer=True)
    if eta.dim() < 2:
        raise InputError(f"eta: expected (B, C) or (B, C, H, W), got shape {tuple(eta.shape)}")
    if target.shape != eta.shape[:1] + eta.shape[2:]:
        raise InputError(f"target: expected shape {tuple(eta.shape[:1] + eta.shape[2:])} for eta {tuple(eta.shape)}, got {tuple(target.shape)}")
    valid = target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= eta.shape[1]):
        raise InputError(f"target: labels must lie in [0, {eta.shape[1]}), got [{int(valid.min())}, {int(valid.max())}]")


def one_way_logistic_loss(eta: torch.Tensor, target: torch.Tensor, reduction: str = "mean", loss: str = "logistic",
                          ignore_index: int = -100, validate: bool = True) -> torch.Tensor:
    """l = softplus(-eta_y) = log(1 + exp(-eta_y)): only the target coordinate is pushed up.

    ``loss="exp"`` gives the exponential tail exp(-eta_y) of Proposition 1. Works on
    (B, C) logits with (B,) targets and on dense (B, C, H, W) maps with (B, H, W) targets;
    ``ignore_index`` pixels contribute nothing. ``reduction``: "mean" over counted
    elements, "sum" or "none".
    """
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise InputError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    if not isinstance(loss, str) or loss not in PEM_LOSSES:
        raise InputError(f"loss: expected one of {PEM_LOSSES}, got {loss!r}")
    if validate:
        _check_target(eta, target, ignore_index)
    if target.dtype != torch.long:  # any integer class ids (int8, int32, ...): gather indexes with int64
        target = target.long()
    keep = target != ignore_index
    eta_y = eta.gather(1, torch.where(keep, target, 0).unsqueeze(1)).squeeze(1)
    per = F.softplus(-eta_y) if loss == "logistic" else torch.exp(-eta_y)
    per = per * keep
    if reduction == "none":
        return per
    total = per.sum()
    return total / keep.sum().clamp_min(1) if reduction == "mean" else total


def heads_loss(heads: torch.Tensor, target: torch.Tensor, loss: str = "logistic", validate: bool = True,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over PEM heads (K, B, C, ...) of the batch-mean one-way loss: the official reduction.

    ``weight`` (B,): the batch mean of weight_i * l_i instead (a mixed sample's share of this label, UniMix).
    """
    if weight is None:
        return sum(one_way_logistic_loss(h, target, loss=loss, validate=validate and k == 0) for k, h in enumerate(heads))
    if validate:
        _tensor("weight", weight)
        if weight.shape != target.shape[:1] or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
            raise InputError(f"weight: expected {tuple(target.shape[:1])} finite loss weights >= 0")
    return sum((weight * one_way_logistic_loss(h, target, "none", loss, validate=validate and k == 0)).mean() for k, h in enumerate(heads))


def npe_adjust(logits: torch.Tensor, eta: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """NPE-LA: z~ = z - tau * eta(x). Same argmax as the official z + mean_k (p_k - mean_c p_k)."""
    _tensor("logits", logits)
    _tensor("eta", eta)
    if logits.shape != eta.shape:
        raise InputError(f"eta: shape {tuple(eta.shape)} does not match logits {tuple(logits.shape)}")
    out = logits - as_float_scalar("tau", tau) * eta
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(logits).all()) and bool(torch.isfinite(eta).all()):
        raise InputError(f"tau: {tau!r} * eta overflows {out.dtype}")
    return out


class PriorEstimator(nn.Module):
    """``num_pems`` BN-free heads on the features, averaged: eta(h) = mean_k head_k(h).

    Each head is ``Linear(in_features, C)`` (initialized N(0, 0.001^2), zero bias, as in the
    official code) or, with ``hidden``, ``Linear -> ReLU -> Linear``. On (B, D, H, W) feature
    maps the heads act per pixel and give (B, C, H, W). ``detach=True`` keeps the PEM loss
    from reaching the backbone.
    """

    def __init__(self, in_features: int, num_classes: int, num_pems: int = 1, hidden: int | None = None,
                 detach: bool = False, init_std: float = 1e-3):
        super().__init__()
        in_features, num_classes, num_pems = (positive_int(name, v, maximum=MAX_PARAMETERS) for name, v in
                                              (("in_features", in_features), ("num_classes", num_classes), ("num_pems", num_pems)))
        if hidden is not None:
            hidden = positive_int("hidden", hidden, maximum=MAX_PARAMETERS)
        width = hidden if hidden is not None else num_classes
        if num_pems * (in_features * width + (width * num_classes if hidden else 0)) > MAX_PARAMETERS:
            raise InputError(f"in_features, num_classes, num_pems, hidden: more than {MAX_PARAMETERS} PEM weights")
        init_std = as_float_scalar("init_std", init_std, nonnegative=True)
        self.in_features, self.num_classes, self.num_pems, self.hidden, self.detach = in_features, num_classes, num_pems, hidden, detach
        self.heads = nn.ModuleList(self._head(in_features, num_classes, hidden) for _ in range(num_pems))
        for head in self.heads:
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _head(d: int, c: int, hidden: int | None) -> nn.Module:
        return nn.Linear(d, c) if hidden is None else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, c))

    @property
    def is_linear(self) -> bool:
        return self.hidden is None

    def heads_output(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's output, stacked: (K, B, C) or (K, B, C, H, W)."""
        _tensor("features", features)
        if features.dim() not in (2, 4) or features.shape[1] != self.in_features:
            raise InputError(f"features: expected (B, {self.in_features}) or (B, {self.in_features}, H, W), got {tuple(features.shape)}")
        weight_dtype = self.heads[0].weight.dtype if self.is_linear else self.heads[0][0].weight.dtype
        if features.dtype != weight_dtype and not torch.is_autocast_enabled(features.device.type):
            features = features.to(weight_dtype)  # half-precision features into a float32 PEM (autocast does this itself)
        if self.detach:
            features = features.detach()
        if features.dim() == 2:
            return torch.stack([head(features) for head in self.heads])
        if self.is_linear:  # per pixel: all heads as one 1x1 convolution on the (B, D, H, W) maps, no layout change
            weight = torch.cat([head.weight for head in self.heads])[:, :, None, None]
            out = F.conv2d(features, weight, torch.cat([head.bias for head in self.heads]))
            return out.unflatten(1, (self.num_pems, self.num_classes)).movedim(1, 0)
        return torch.stack([head(features.movedim(1, -1)) for head in self.heads]).movedim(-1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.heads_output(features).mean(0)

