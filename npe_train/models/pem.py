"""The Prior Estimation Module: BN-free heads on a network's features, averaged (docs/theory.md, section 1).

Sign convention: ``eta`` is the prior signal itself (it grows like ln N_c); the official code's PEM
output is ``p = -eta``. Its loss lives in ``methods/pem_loss.py``. Imports: torch and ``npe_theory`` only.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from npe_theory.errors import InputError, InputTypeError
from npe_theory.validate import as_float_scalar, class_count, instance, positive_int

MAX_PARAMETERS = (
    2**28
)  # bounded memory: a PEM (or classifier) of more weights than this (1 GiB in float32) is refused


def tensor_arg(name: str, value, integer: bool = False) -> torch.Tensor:
    """``value`` if it is a tensor of the right kind (floating point, or integer class ids), else "
    "InputTypeError naming ``name``."""
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if integer and (value.dtype == torch.bool or value.is_floating_point() or value.is_complex()):
        raise InputTypeError(f"{name}: expected integer class ids (torch.long), got {value.dtype}")
    if not integer and not value.is_floating_point():
        raise InputTypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    return value


class PriorEstimator(nn.Module):
    """``num_pems`` BN-free heads on the features, averaged: eta(h) = mean_k head_k(h).

    Each head is ``Linear(in_features, C)`` (initialized N(0, 0.001^2), zero bias, as in the
    official code) or, with ``hidden``, ``Linear -> ReLU -> Linear``. On (B, D, H, W) feature
    maps the heads act per pixel and give (B, C, H, W). ``detach=True`` keeps the PEM loss
    from reaching the backbone.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        num_pems: int = 1,
        hidden: int | None = None,
        detach: bool = False,
        init_std: float = 1e-3,
    ):
        super().__init__()
        in_features, num_pems = (
            positive_int(name, v, maximum=MAX_PARAMETERS)
            for name, v in (("in_features", in_features), ("num_pems", num_pems))
        )
        num_classes = class_count("num_classes", num_classes)
        if hidden is not None:
            hidden = positive_int("hidden", hidden, maximum=MAX_PARAMETERS)
        width = hidden if hidden is not None else num_classes
        if num_pems * (in_features * width + (width * num_classes if hidden else 0)) > MAX_PARAMETERS:
            raise InputError(
                f"in_features, num_classes, num_pems, hidden: more than {MAX_PARAMETERS} PEM weights"
            )
        init_std = as_float_scalar("init_std", init_std, nonnegative=True)
        self.in_features, self.num_classes, self.num_pems, self.hidden, self.detach = (
            in_features,
            num_classes,
            num_pems,
            hidden,
            detach,
        )
        self.heads = nn.ModuleList(self._head(in_features, num_classes, hidden) for _ in range(num_pems))
        for head in self.heads:
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _head(d: int, c: int, hidden: int | None) -> nn.Module:
        return (
            nn.Linear(d, c)
            if hidden is None
            else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, c))
        )

    @property
    def is_linear(self) -> bool:
        return self.hidden is None

    def heads_output(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's output, stacked: (K, B, C) or (K, B, C, H, W)."""
        tensor_arg("features", features)
        if features.dim() not in (2, 4) or features.shape[1] != self.in_features:
            raise InputError(
                f"features: expected (B, {self.in_features}) or (B, {self.in_features}, H, W), got {tuple(features.shape)}"
            )
        weight_dtype = self.heads[0].weight.dtype if self.is_linear else self.heads[0][0].weight.dtype
        if features.dtype != weight_dtype and not torch.is_autocast_enabled(features.device.type):
            features = features.to(
                weight_dtype
            )  # half-precision features into a float32 PEM (autocast does this itself)
        if self.detach:
            features = features.detach()
        if features.dim() == 2:
            return torch.stack([head(features) for head in self.heads])
        if (
            self.is_linear
        ):  # per pixel: all heads as one 1x1 convolution on the (B, D, H, W) maps, no layout change
            weight = torch.cat([head.weight for head in self.heads])[:, :, None, None]
            out = F.conv2d(features, weight, torch.cat([head.bias for head in self.heads]))
            return out.unflatten(1, (self.num_pems, self.num_classes)).movedim(1, 0)
        return torch.stack([head(features.movedim(1, -1)) for head in self.heads]).movedim(-1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """eta(h) = (1/K) sum_k eta_k(h): the heads' mean output, (B, C) for features (B, D) (or per pixel, with the
        class axis second, for (B, D, H, W)). NPE-LA subtracts it from the logits (``npe_adjust``)."""
        return self.heads_output(features).mean(0)


def pem_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of every ``PriorEstimator`` inside ``model`` (its weights and biases)."""
    return {
        f"{prefix}.{name}" if prefix else name: p
        for prefix, m in model.named_modules()
        if isinstance(m, PriorEstimator)
        for name, p in m.named_parameters()
    }


def pem_param_groups(
    model: nn.Module, weight_decay: float, other_weight_decay: float | None = None
) -> list[dict]:
    """Optimizer parameter groups: every PEM weight and bias at ``weight_decay``; the rest of ``model`` at
    ``other_weight_decay`` (default the same). The prior report assumes the PEM's bias is decayed like its weights
    (docs/theory.md, section 2); optimizer factories that exempt biases from decay (Hugging Face Trainer, timm's
    ``create_optimizer_v2`` given a model) break that unless given these groups."""
    instance("model", model, nn.Module, "a torch.nn.Module holding a PriorEstimator")
    wd = as_float_scalar("weight_decay", weight_decay, nonnegative=True)
    other = (
        wd
        if other_weight_decay is None
        else as_float_scalar("other_weight_decay", other_weight_decay, nonnegative=True)
    )
    pem = pem_parameters(model)
    if not pem:
        raise InputError(
            "model: holds no PriorEstimator (attach one with npe_train.models.classifiers.attach_pem)"
        )
    mine = {id(p) for p in pem.values()}
    return [
        {"params": [p for p in model.parameters() if id(p) not in mine], "weight_decay": other},
        {"params": list(pem.values()), "weight_decay": wd},
    ]


def check_pem_decay(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """Names of the PEM parameters that ``optimizer`` leaves without weight decay (a group with weight_decay 0, or not in
    any group), with a warning naming them: the report's closed form, equilibrium and replay assume a decayed PEM."""
    instance("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    instance("model", model, nn.Module, "a torch.nn.Module holding a PriorEstimator")
    decay = {id(p): g.get("weight_decay", 0.0) for g in optimizer.param_groups for p in g["params"]}
    missing = [name for name, p in pem_parameters(model).items() if not decay.get(id(p), 0.0) > 0]
    if missing:
        warnings.warn(
            f"optimizer: no weight decay on PEM parameter(s) {', '.join(missing)}; the prior report assumes the PEM's "
            f"weights and bias are decayed (use npe_train.models.pem.pem_param_groups)",
            stacklevel=2,
        )
    return missing
