"""The PEM's one-way loss and NPE logit adjustment (docs/theory.md, section 1).

Only the target coordinate of the PEM output is pushed up: softplus(-eta_y), or any registered one-way loss
(``npe_theory.losses``: exp(-eta_y), the tail of Proposition 1; max(0, 1 - eta_y)^2, ...), whose torch form
comes from the same object as every formula the report uses. Imports: torch, ``npe_theory`` and ``models/pem.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from npe_theory.errors import InputError
from npe_theory.losses import get_loss
from npe_theory.validate import as_float_scalar

from ..models.pem import tensor_arg


def _check_target(eta: torch.Tensor, target: torch.Tensor, ignore_index: int) -> None:
    tensor_arg("eta", eta)
    tensor_arg("target", target, integer=True)
    if eta.dim() < 2:
        raise InputError(f"eta: expected (B, C) or (B, C, H, W), got shape {tuple(eta.shape)}")
    if target.shape != eta.shape[:1] + eta.shape[2:]:
        raise InputError(
            f"eta, target: expected target shape {tuple(eta.shape[:1] + eta.shape[2:])} for eta "
            f"{tuple(eta.shape)}, got {tuple(target.shape)}"
        )
    valid = target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= eta.shape[1]):
        raise InputError(
            f"target: labels must lie in [0, {eta.shape[1]}), got [{int(valid.min())}, {int(valid.max())}]"
        )


def one_way_logistic_loss(
    eta: torch.Tensor,
    target: torch.Tensor,
    reduction: str = "mean",
    loss: str = "logistic",
    ignore_index: int = -100,
    validate: bool = True,
) -> torch.Tensor:
    """l = softplus(-eta_y) = log(1 + exp(-eta_y)): only the target coordinate is pushed up.

    ``loss``: any registered one-way loss (``npe_theory.losses``), e.g. "exp", the tail of Proposition 1. Works on
    (B, C) logits with (B,) targets and on dense (B, C, H, W) maps with (B, H, W) targets;
    ``ignore_index`` pixels contribute nothing. ``reduction``: "mean" over counted
    elements, "sum" or "none".
    """
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise InputError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    spec = get_loss(loss)
    if validate:
        _check_target(eta, target, ignore_index)
    if target.dtype != torch.long:  # any integer class ids (int8, int32, ...): gather indexes with int64
        target = target.long()
    keep = target != ignore_index
    eta_y = eta.gather(1, torch.where(keep, target, 0).unsqueeze(1)).squeeze(1)
    per = spec.torch_value(eta_y, F)
    per = per * keep
    if reduction == "none":
        return per
    total = per.sum()
    return total / keep.sum().clamp_min(1) if reduction == "mean" else total


def heads_loss(
    heads: torch.Tensor,
    target: torch.Tensor,
    loss: str = "logistic",
    validate: bool = True,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over PEM heads (K, B, C, ...) of the batch-mean one-way loss: the official reduction.

    ``weight`` (B,): the batch mean of weight_i * l_i instead (a mixed sample's share of this label, UniMix).
    """
    if validate:
        tensor_arg("heads", heads)
        if heads.ndim < 3 or heads.shape[0] < 1:
            raise InputError(
                f"heads: expected (K, B, C, ...) outputs of K >= 1 PEM heads, got {tuple(heads.shape)}"
            )
    if weight is None:
        return sum(
            one_way_logistic_loss(h, target, loss=loss, validate=validate and k == 0)
            for k, h in enumerate(heads)
        )
    if validate:
        tensor_arg("weight", weight)
        if (
            weight.shape != target.shape[:1]
            or not bool(torch.isfinite(weight).all())
            or bool((weight < 0).any())
        ):
            raise InputError(f"weight: expected {tuple(target.shape[:1])} finite loss weights >= 0")
    return sum(
        (weight * one_way_logistic_loss(h, target, "none", loss, validate=validate and k == 0)).mean()
        for k, h in enumerate(heads)
    )


def npe_adjust(logits: torch.Tensor, eta: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """NPE-LA: z~ = z - tau * eta(x). Same argmax as the official z + mean_k (p_k - mean_c p_k)."""
    tensor_arg("logits", logits)
    tensor_arg("eta", eta)
    if logits.shape != eta.shape:
        raise InputError(
            f"eta, logits: eta's shape {tuple(eta.shape)} does not match the logits' {tuple(logits.shape)}"
        )
    out = logits - as_float_scalar("tau", tau) * eta
    if (
        not bool(torch.isfinite(out).all())
        and bool(torch.isfinite(logits).all())
        and bool(torch.isfinite(eta).all())
    ):
        raise InputError(f"tau: {tau!r} * eta overflows {out.dtype}")
    return out
