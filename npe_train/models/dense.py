"""Networks for dense prediction: a per-pixel classifier and a BN-free per-pixel PEM on the decoder's features.

``DenseNPENet(backbone, C)`` joins any ``backbone(x) -> h (B, D, h, w)`` to a 1x1-convolution
classifier and a ``PriorEstimator`` acting per pixel (a linear map per pixel, no normalization: the
BN-free head of docs/segmentation.md). Logits and PEM maps are resized bilinearly to the input size;
since both are affine in h, that equals applying them to bilinearly resized features.

Backbones: ``fcn``, a small encoder-decoder for CPU; ``deeplabv3``, torchvision's DeepLab-V3
(ResNet-50) with its ASPP head up to the last 1x1 convolution (256-d features), untrained or from a
local state_dict (``--weights``), never downloaded.
Imports: torch, torchvision (lazily), ``npe_theory``, ``catalog.py`` and ``pem.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from npe_theory.errors import InputError

from .catalog import check_images, model_entry, register_model
from .pem import PriorEstimator
from .weights import read_state_dict


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FCN(nn.Module):
    """A small encoder-decoder: three stages (full, 1/2, 1/4 resolution), decoded back with skip connections."""

    def __init__(self, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.enc1 = nn.Sequential(_conv(in_channels, width), _conv(width, width))
        self.enc2 = nn.Sequential(_conv(width, 2 * width, 2), _conv(2 * width, 2 * width))
        self.enc3 = nn.Sequential(_conv(2 * width, 4 * width, 2), _conv(4 * width, 4 * width))
        self.dec2 = _conv(4 * width + 2 * width, 2 * width)
        self.dec1 = _conv(2 * width + width, width)
        self.out_features = width

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(
            torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1)
        )
        return self.dec1(
            torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1)
        )


class DeepLabFeatures(nn.Module):
    """torchvision DeepLab-V3: backbone, then the ASPP head without its final 1x1 convolution (256-d maps at 1/8)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.head = nn.Sequential(
            *list(model.classifier.children())[:-1]
        )  # slicing a DeepLabHead rebuilds it without its arguments
        self.out_features = model.classifier[-1].in_channels

    def forward(self, x):
        return self.head(self.backbone(x)["out"])


class DenseNPENet(nn.Module):
    """backbone -> feature maps h -> (per-pixel logits (B, C, H, W), PEM heads (K, B, C, H, W), h (B, D, h, w))."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_pems: int = 1,
        pem_hidden: int | None = None,
        pem_detach: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.out_features
        self.classifier = nn.Conv2d(self.feature_dim, num_classes, 1)
        self.pem = (
            PriorEstimator(self.feature_dim, num_classes, num_pems, pem_hidden, pem_detach)
            if num_pems
            else None
        )

    def forward(self, x):
        h = self.backbone(x)
        size = x.shape[-2:]
        logits = self.classifier(h)
        heads = self.pem.heads_output(h) if self.pem is not None else None
        if h.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            if heads is not None:
                heads = F.interpolate(
                    heads.flatten(0, 1), size=size, mode="bilinear", align_corners=False
                ).unflatten(0, heads.shape[:2])
        return logits, heads, h


def pixel_features(h: torch.Tensor, size) -> torch.Tensor:
    """Feature maps at the label size (bilinear, as the logits and PEM maps are resized)."""
    return (
        h
        if h.shape[-2:] == tuple(size)
        else F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=False)
    )


def deeplabv3(num_classes: int, weights: str | None = None) -> DeepLabFeatures:
    """DeepLab-V3 (ResNet-50) features from torchvision, untrained or loaded from a local state_dict file."""
    try:
        from torchvision.models.segmentation import deeplabv3_resnet50
    except (ImportError, RuntimeError) as exc:
        raise InputError(
            f"model: deeplabv3 needs a torchvision that loads with this torch (pip install 'npe-toolkit[vision]'): {exc}"
        ) from None
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    if weights is not None:
        state = read_state_dict(weights)
        own = model.state_dict()
        usable = {
            k: v
            for k, v in state.items()
            if k in own and isinstance(v, torch.Tensor) and own[k].shape == v.shape
        }
        if not usable:
            raise InputError(f"weights: no tensor of {weights} fits deeplabv3_resnet50")
        model.load_state_dict(
            usable, strict=False
        )  # the final 1x1 convolution is ours (num_classes may differ)
    return DeepLabFeatures(model)


@register_model(
    "fcn",
    task="segmentation",
    inputs="(C, H, W) images",
    batchnorm=True,
    help="a small encoder-decoder for CPU (three stages, skip connections)",
)
def _fcn(input_shape, num_classes, weights=None, name=None):
    check_images("fcn", input_shape)
    return FCN(input_shape[0])


@register_model(
    "deeplabv3",
    task="segmentation",
    inputs="(C, H, W) images",
    batchnorm=True,
    weights=True,
    help="torchvision's DeepLab-V3 (ResNet-50) up to its last 1x1 convolution, untrained or from --weights",
)
def _deeplabv3(input_shape, num_classes, weights=None, name=None):
    check_images("deeplabv3", input_shape)
    return deeplabv3(num_classes, weights)


def build_seg_model(
    name: str,
    input_shape,
    num_classes: int,
    num_pems: int = 1,
    pem_hidden: int | None = None,
    pem_detach: bool = False,
    weights: str | None = None,
) -> DenseNPENet:
    """The registered segmentation backbone ``name`` with a per-pixel classifier and PEM on top."""
    entry = model_entry(name)
    if entry.task != "segmentation":
        raise InputError(
            f"model: {name} is a {entry.task} network; a segmentation data set needs a segmentation one"
        )
    if weights is not None and not entry.weights:
        raise InputError(f"weights: {name} does not load a state_dict")
    return DenseNPENet(
        entry.build(tuple(input_shape), num_classes, weights, name),
        num_classes,
        num_pems,
        pem_hidden,
        pem_detach,
    )
