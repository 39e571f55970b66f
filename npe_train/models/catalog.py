"""The networks ``npe train`` can build, one registered entry each (docs/extending.md).

An entry builds a *backbone* for an input shape: a module whose forward returns features, (B, D) for
classification or (B, D, h, w) for dense prediction, with their width as ``out_features``; the classifier
and the PEM go on top (``classifiers.NPENet``, ``dense.DenseNPENet``). A *family* entry (``prefix=True``)
takes the rest of a ``family:NAME`` model name: ``torchvision:resnet18``, ``timm:convnext_atto``.

    @register_model("mynet", inputs="(C, L) signals", batchnorm=False, help="...")
    def mynet(input_shape, num_classes, weights=None, name=None): ...   # returns the backbone

Imports: ``npe_theory`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from npe_theory.errors import InputError
from npe_theory.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    """``build(input_shape, num_classes, weights, name)``: the backbone (``name`` is the part after ``family:`` for a family, else
    the entry's own name). ``task``: "classification" or "segmentation"; ``inputs``: what inputs it takes (help
    text); ``batchnorm``: it normalizes with batch statistics (training-mode and eval-mode features then differ);
    ``weights``: it can start from a local state_dict (``--weights``); ``prefix``: a family, named ``family:NAME``;
    ``option``: what an optional ``:VALUE`` part sets (the builder gets the VALUE as ``name``), "" for none, and
    ``read_option``: the function that reads it, raising an InputError naming ``model`` for a VALUE it does not take
    (called wherever a model name is checked, so a config is refused before any work)."""

    build: Callable
    help: str
    task: str = "classification"
    inputs: str = ""
    batchnorm: bool = False
    weights: bool = False
    prefix: bool = False
    option: str = ""
    read_option: Callable[[str], object] | None = None


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, **meta):
    """Decorator: register ``build(input_shape, num_classes, weights=None, name=None) -> backbone`` under ``name``."""

    def add(build):
        MODELS.register(name, ModelEntry(build=build, **meta))
        return build

    return add


def split_name(name) -> tuple[str, str]:
    """(registry key, the name its builder gets): ``torchvision:resnet18`` -> ("torchvision", "resnet18")."""
    if not isinstance(name, str):
        raise InputError(f"model: expected a network name, got {name!r:.60}")
    family, sep, rest = name.partition(":")
    return (family, rest) if sep else (name, name)


def model_entry(name) -> ModelEntry:
    """The entry a model name refers to; InputError naming ``model`` otherwise (a family needs ``family:NAME``)."""
    key, rest = split_name(name)
    entry = MODELS.get(key)
    if entry.prefix and (not rest or rest == key):
        raise InputError(f"model: {key} is a family of networks; name one as {key}:NAME")
    if not entry.prefix and not entry.option and key != name:
        raise InputError(
            f"model: {key} takes no ':NAME' part (families: {', '.join(MODELS.where(lambda e: e.prefix))})"
        )
    if entry.option and key != name:
        entry.read_option(rest)
    return entry


def check_images(name: str, input_shape, channels: int | None = None) -> None:
    """InputError naming ``model`` unless ``input_shape`` is (C, H, W) (with C = ``channels`` when given)."""
    if len(input_shape) != 3 or (channels is not None and input_shape[0] != channels):
        want = "(3, height, width)" if channels == 3 else "(channels, height, width)"
        raise InputError(f"model: {name} needs {want} images, got inputs of shape {tuple(input_shape)}")


def model_choices(task: str) -> list[str]:
    """How the help lists the networks of a task: names, and ``family:NAME`` for families."""
    return [
        f"{n}:NAME" if e.prefix else f"{n}[:{e.option}]" if e.option else n
        for n, e in MODELS.items()
        if e.task == task
    ]
