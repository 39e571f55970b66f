"""Backbones that return penultimate features, and the network that joins them to a classifier and a PEM.

Bring your own backbone: ``attach_pem(backbone, num_classes)`` puts a classifier and a PEM on any
``nn.Module`` that returns (B, D) features; ``from_torchvision(model, num_classes)`` first replaces a
torchvision-style model's final Linear (under ``fc``, ``classifier``, ``head`` or ``heads``) and
measures D by one forward pass. ``timm:NAME`` models lose their classifier through timm's own
``reset_classifier(0)``. Each backbone is a registered model (``catalog.MODELS``).
Imports: torch, torchvision and timm (lazily), ``npe_theory``, ``catalog.py`` and ``pem.py``.
"""

from __future__ import annotations

import math
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from npe_theory.errors import InputError
from npe_theory.validate import class_count, instance, nonnegative_int, positive_int

from .catalog import MODELS, check_images, model_entry, register_model, split_name
from .pem import MAX_PARAMETERS, PriorEstimator
from .weights import read_state_dict


class MLP(nn.Module):
    def __init__(self, in_features: int, width: int = 256, depth: int = 2):
        super().__init__()
        layers, d = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(nn.Flatten(), *layers)
        self.out_features = width

    def forward(self, x):
        return self.net(x)


class CNN1D(nn.Module):
    """A small 1D CNN for MNIST-1D (40-step signals): three conv layers, global average pooling."""

    def __init__(self, in_channels: int = 1, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.out_features = width

    def forward(self, x):
        return self.net(x)


class CNN2D(nn.Module):
    """A small 2-D CNN for 28x28 to 32x32 images: three 3x3 conv + BatchNorm stages (16, 32, 64 channels), the first two
    followed by 2x2 max pooling, then global average pooling to 64-d features. About 2 M multiply-adds per 28x28 image,
    so an epoch of 2,000 images takes seconds on a laptop CPU."""

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()

        def stage(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            *stage(in_channels, width),
            nn.MaxPool2d(2),
            *stage(width, 2 * width),
            nn.MaxPool2d(2),
            *stage(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_features = 4 * width

    def forward(self, x):
        return self.net(x)


class _Block(nn.Module):
    """CIFAR basic block with the parameter-free shortcut of He et al. (option A): subsample and zero-pad."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin if (stride != 1 or cin != cout) else 0
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.pad or self.stride != 1:
            short = F.pad(
                x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)
            )
        return F.relu(out + short)


class ResNet32(nn.Module):
    """The CIFAR ResNet-32 of the long-tail literature: 3 stages x 5 blocks, 16/32/64 channels, 64-d features."""

    def __init__(self, in_channels: int = 3, blocks: int = 5):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(_Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_features = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)


class CosineClassifier(nn.Module):
    """z_c = scale * cos(w_c, h): the normalized classifier of LDAM (Cao et al. 2019), no bias. ``scale`` sets the
    logits' range, so the softmax can still be confident."""

    def __init__(self, feature_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim).uniform_(-1, 1))

    def forward(self, h):
        return self.scale * F.normalize(h, dim=1) @ F.normalize(self.weight, dim=1).t()


CLASSIFIERS = {"linear": lambda d, c, scale: nn.Linear(d, c), "cosine": CosineClassifier}


class NPENet(nn.Module):
    """backbone -> features h -> (classifier logits z, PEM heads). The PEM reads the same features as the classifier."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_pems: int = 1,
        pem_hidden: int | None = None,
        pem_detach: bool = False,
        feature_dim: int | None = None,
        classifier: str = "linear",
        scale: float = 30.0,
    ):
        super().__init__()
        self.backbone = instance(
            "backbone", backbone, nn.Module, "a torch.nn.Module that returns (B, D) features"
        )
        feature_dim = feature_dim if feature_dim is not None else getattr(backbone, "out_features", None)
        if feature_dim is None:
            raise InputError(
                "feature_dim: the backbone has no out_features attribute; give the width of the features it returns"
            )
        self.feature_dim = positive_int("feature_dim", feature_dim, maximum=MAX_PARAMETERS)
        num_classes = class_count("num_classes", num_classes)
        num_pems = nonnegative_int("num_pems", num_pems, maximum=MAX_PARAMETERS)
        if self.feature_dim * num_classes > MAX_PARAMETERS:  # checked before anything is allocated
            raise InputError(
                f"feature_dim, num_classes: a {self.feature_dim} x {num_classes} classifier has more than "
                f"{MAX_PARAMETERS} weights"
            )
        if not isinstance(classifier, str) or classifier not in CLASSIFIERS:
            raise InputError(f"classifier: unknown {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
        self.classifier = CLASSIFIERS[classifier](self.feature_dim, num_classes, scale)
        # num_pems = 0 builds the same network without a PEM (for overhead measurements)
        self.pem = (
            PriorEstimator(self.feature_dim, num_classes, num_pems, pem_hidden, pem_detach)
            if num_pems
            else None
        )

    def forward(self, x):
        """(logits, PEM heads (K, B, C) or None, features)."""
        h = self.backbone(x)
        return self.classifier(h), self.pem.heads_output(h) if self.pem is not None else None, h


def attach_pem(
    backbone: nn.Module,
    num_classes: int,
    feature_dim: int | None = None,
    num_pems: int = 1,
    pem_hidden: int | None = None,
    pem_detach: bool = False,
) -> NPENet:
    """Any feature extractor ``backbone(x) -> h (B, D)`` with a linear classifier ``z = W h + b`` and a PEM ``eta(h)`` on top.

    ``feature_dim`` is D (read from ``backbone.out_features`` when omitted). The result's forward
    returns ``(logits, PEM heads (K, B, C), features)``, what ``npe_train.train`` and the report expect.
    """
    return NPENet(backbone, num_classes, num_pems, pem_hidden, pem_detach, feature_dim)


def strip_head(model: nn.Module) -> nn.Module:
    """Replace the last ``nn.Linear`` under a torchvision-style model's head in place by ``nn.Identity``; returns the model.

    The head is the first of ``fc`` (ResNet, RegNet), ``classifier`` (VGG, MobileNet, EfficientNet,
    ConvNeXt), ``head`` (Swin) and ``heads`` (ViT, whose Linear is ``heads.head``) that holds a Linear,
    found by walking its modules, whatever their names.
    """
    for name in ("fc", "classifier", "head", "heads"):
        head = getattr(model, name, None)
        if not isinstance(head, nn.Module):
            continue
        last = [path for path, m in head.named_modules() if isinstance(m, nn.Linear)]
        if not last:
            continue
        path = f"{name}.{last[-1]}" if last[-1] else name
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
        return model
    raise InputError(
        f"model: found no nn.Linear under fc, classifier, head or heads of {model.__class__.__name__}; "
        f"use attach_pem(backbone, num_classes, feature_dim) with a backbone that returns features"
    )


def feature_width(backbone: nn.Module, input_shape) -> int:
    """D, from one forward pass of two zero inputs of ``input_shape`` in eval mode (nothing is changed): ``(2, D)`` expected."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(2, *input_shape))
    except (RuntimeError, ValueError, AssertionError) as exc:  # a network built for another input size
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"input_shape: the backbone does not take inputs {tuple(input_shape)} ({first}); give the (C, H, W) "
            "of your data"
        ) from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"model: the backbone without its head returns {shape} for inputs {tuple(input_shape)}, not (batch, features); "
            f"use attach_pem(backbone, num_classes, feature_dim) with a backbone that returns pooled features"
        )
    return int(out.shape[1])


def from_torchvision(
    model: nn.Module,
    num_classes: int,
    num_pems: int = 1,
    pem_hidden: int | None = None,
    pem_detach: bool = False,
    input_shape=None,
) -> NPENet:
    """A torchvision classifier with its final Linear replaced by our classifier and a PEM; the feature width is
    measured by one forward pass at ``input_shape`` (default: the model's own ``image_size`` when it has one, as
    torchvision's ViTs do, else 3 x 224 x 224)."""
    instance("model", model, nn.Module, "a torchvision-style torch.nn.Module")
    if input_shape is None:
        size = getattr(model, "image_size", None)
        input_shape = (3, size, size) if isinstance(size, int) else (3, 224, 224)
    input_shape = _input_shape(input_shape)
    backbone = strip_head(model)
    return attach_pem(
        backbone, num_classes, feature_width(backbone, input_shape), num_pems, pem_hidden, pem_detach
    )


MAX_INPUT_VALUES = (
    3 << 26
)  # one probe sample: 3 channels of the largest image a data set may hold (2^26 pixels)


def _input_shape(value) -> tuple[int, ...]:
    """A (C, H, W)-like shape of positive ints whose probe batch (two samples) stays small."""
    if not isinstance(value, (tuple, list)) or not value:
        raise InputError(f"input_shape: expected a shape such as (3, 224, 224), got {value!r}")
    shape = tuple(positive_int("input_shape", v, maximum=MAX_INPUT_VALUES) for v in value)
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise InputError(
            f"input_shape: {shape} holds more than the {MAX_INPUT_VALUES} values a probe may use"
        )
    return shape


def _load_state(model: nn.Module, weights: str, name: str) -> None:
    state = read_state_dict(weights)
    try:
        model.load_state_dict(state)
    except (OSError, RuntimeError, pickle.UnpicklingError, AttributeError, TypeError) as exc:
        raise InputError(f"weights: cannot load {weights} into {name} ({str(exc).splitlines()[0]})") from None


def torchvision_backbone(name: str, weights: str | None = None) -> nn.Module:
    """``torchvision.models.get_model(name)``, untrained or from a local state_dict file (never downloaded)."""
    try:
        import torchvision
    except ImportError:
        raise InputError(
            f"model: torchvision:{name} needs torchvision (pip install 'npe-toolkit[vision]')"
        ) from None
    except (
        RuntimeError
    ) as exc:  # e.g. a CUDA torchvision wheel beside a CPU-only torch: its C ops do not load
        raise InputError(
            f"model: torchvision is installed but does not load with this torch ({exc}); "
            f"install the torchvision build made for torch {torch.__version__}"
        ) from None
    if name not in torchvision.models.list_models():
        raise InputError(f"model: torchvision has no model {name!r} (see torchvision.models.list_models())")
    model = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        _load_state(model, weights, name)
    return strip_head(model)


def timm_backbone(name: str, weights: str | None = None) -> nn.Module:
    """``timm.create_model(name)`` without its classifier (``reset_classifier(0)``: pooled features), untrained or from a
    local state_dict of the full model (never downloaded)."""
    try:
        import timm
    except ImportError:
        raise InputError(f"model: timm:{name} needs timm (pip install 'npe-toolkit[timm]')") from None
    except RuntimeError as exc:
        raise InputError(f"model: timm is installed but does not load with this torch ({exc})") from None
    if name not in timm.list_models():
        raise InputError(f"model: timm has no model {name!r} (see timm.list_models())")
    model = timm.create_model(name, pretrained=False)
    if weights is not None:
        _load_state(model, weights, name)
    model.reset_classifier(0)
    return model


@register_model(
    "torchvision",
    prefix=True,
    inputs="(3, H, W) images",
    batchnorm=True,
    weights=True,
    help="a torchvision classifier, untrained or from --weights, its final Linear removed",
)
def _torchvision(input_shape, num_classes, weights=None, name=None):
    check_images(f"torchvision:{name}", input_shape, 3)
    return torchvision_backbone(name, weights)


@register_model(
    "timm",
    prefix=True,
    inputs="(3, H, W) images",
    batchnorm=True,
    weights=True,
    help="a timm model, untrained or from --weights, without its classifier",
)
def _timm(input_shape, num_classes, weights=None, name=None):
    check_images(f"timm:{name}", input_shape, 3)
    return timm_backbone(name, weights)


def mlp_width(name: str | None) -> int:
    """The width ``mlp:WIDTH`` names (256 for plain ``mlp``); InputError naming ``model`` for anything but a whole
    number from 1 to 65,536."""
    if name in (None, "mlp"):
        return 256
    if not (isinstance(name, str) and name.isdigit() and 1 <= int(name) <= 1 << 16):
        raise InputError(f"model: mlp:WIDTH takes a whole width from 1 to 65536, got mlp:{name!s:.40}")
    return int(name)


@register_model(
    "mlp",
    option="WIDTH",
    read_option=mlp_width,
    inputs="any shape (flattened)",
    help="two ReLU layers of 256, or of WIDTH (mlp:64); no BatchNorm",
)
def _mlp(input_shape, num_classes, weights=None, name=None):
    return MLP(math.prod(input_shape), width=mlp_width(name))


@register_model(
    "cnn1d", inputs="(C, L) signals", batchnorm=True, help="three 1-D conv + BatchNorm layers, 64-d features"
)
def _cnn1d(input_shape, num_classes, weights=None, name=None):
    if len(input_shape) != 2:
        raise InputError(f"model: cnn1d needs (channels, length) inputs, got {tuple(input_shape)}")
    return CNN1D(input_shape[0])


@register_model(
    "cnn2d",
    inputs="(C, H, W) images",
    batchnorm=True,
    help="three 2-D conv + BatchNorm stages, 64-d features",
)
def _cnn2d(input_shape, num_classes, weights=None, name=None):
    check_images("cnn2d", input_shape)
    return CNN2D(input_shape[0])


@register_model(
    "resnet32",
    inputs="(C, H, W) images",
    batchnorm=True,
    help="the CIFAR ResNet-32 of the long-tail literature",
)
def _resnet32(input_shape, num_classes, weights=None, name=None):
    check_images("resnet32", input_shape)
    return ResNet32(input_shape[0])


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    num_pems: int = 1,
    pem_hidden: int | None = None,
    pem_detach: bool = False,
    weights: str | None = None,
    classifier: str = "linear",
    scale: float = 30.0,
) -> NPENet:
    """The registered classification backbone ``name`` with our classifier and PEM on top. A backbone without
    ``out_features`` has its feature width measured by one forward pass at ``input_shape``."""
    entry = model_entry(name)
    if entry.task != "classification":
        raise InputError(
            f"model: {name} is a {entry.task} network; a classification data set needs one of the classification ones"
        )
    if weights is not None and not entry.weights:
        raise InputError(
            f"weights: {name} does not load a state_dict (only {', '.join(MODELS.where(lambda e: e.weights))} do)"
        )
    backbone = entry.build(tuple(input_shape), num_classes, weights, split_name(name)[1])
    width = getattr(backbone, "out_features", None)
    if entry.prefix or width is None:
        width = feature_width(backbone, input_shape)
    return NPENet(backbone, num_classes, num_pems, pem_hidden, pem_detach, width, classifier, scale)
