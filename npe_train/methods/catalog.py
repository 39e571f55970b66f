"""The training methods ``npe train --method`` knows, one registered entry each (docs/methods.md, docs/extending.md).

A method is the loss the classifier trains with (``objective.ClassifierLoss``), made from the run's
``MethodSettings``, and how it is usually combined with a PEM: ``joint_pem`` (the PEM loss reaches the
backbone, as NPE trains it) or a detached probe beside the method (the backbone trains exactly as the
method alone, and the probe's prior can still be read and used for NPE-LA). ``--pem-detach`` /
``--no-pem-detach`` put a PEM on top of any method either way. Optional parts a method may declare:
its classifier head (``classifier``), a deferred re-weighting by default (``drw``), and a hook run
on the network and optimizer at the start of each epoch and after each step (``stages``, for
two-stage methods).

    register_method("mymethod", Method(make=lambda s: MyLoss(s.tau), help="..."))

Imports: torch, NumPy, ``npe_theory`` and ``objective.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from npe_theory.registry import Registry

from .baselines import LDAM, ClassBalanced
from .objective import CrossEntropy, LogitAdjusted
from .stages import WeightBalancing


@dataclass(frozen=True)
class MethodSettings:
    """What a method's loss may be built from: ``tau`` (logit adjustment), the training ``counts`` (C,), the run's
    ``epochs``, and the baselines' own settings (``cb_beta``, ``focal_gamma``, ``ldam_max_margin``, ``ldam_scale``, and
    Weight Balancing's second stage: ``wb_epochs``, ``wb_lr``, ``wb_weight_decay``, ``wb_max_norm``)."""

    tau: float = 1.0
    counts: np.ndarray | None = None
    epochs: int = 1
    cb_beta: float = 0.9999
    focal_gamma: float = 1.0
    ldam_max_margin: float = 0.5
    ldam_scale: float = 30.0
    wb_epochs: int = 10
    wb_lr: float = 0.01
    wb_weight_decay: float = 0.1
    wb_max_norm: float = 0.1


@dataclass(frozen=True)
class Method:
    """A registered method: ``make(settings) -> ClassifierLoss`` and how it is run (module docstring). ``drw``: its
    deferred re-weighting starts at this fraction of the epochs, or at the epoch ``drw(settings)`` returns, unless
    ``--drw-epoch`` says otherwise (None: none). ``stages``: ``stages(settings) -> object`` with
    ``start_epoch(epoch, model, optimizer)`` and ``after_step(model)`` (``methods/stages.py``; None: one stage).
    ``same_as``: another method this one equals (tested), said in the help. ``reads``: the baselines' settings of
    ``MethodSettings`` it is built from (one given for a method that does not read it is refused, never ignored)."""

    make: Callable[[MethodSettings], object]
    help: str
    joint_pem: bool = False
    classifier: str = "linear"
    drw: float | Callable[[MethodSettings], int] | None = None
    stages: Callable | None = None
    same_as: str | None = None
    reads: tuple[str, ...] = ()


METHODS: Registry[Method] = Registry("method")


def register_method(name: str, method: Method) -> Method:
    return METHODS.register(name, method)


def method(name) -> Method:
    return METHODS.get(name)


register_method(
    "npe",
    Method(
        lambda s: CrossEntropy(), "CE + alpha * the PEM's one-way loss, trained jointly (NPE)", joint_pem=True
    ),
)
register_method(
    "ce", Method(lambda s: CrossEntropy(), "plain cross-entropy (a detached PEM probe beside it)")
)
register_method(
    "la_loss",
    Method(
        lambda s: LogitAdjusted(s.tau),
        "the logit-adjusted loss CE(z + tau ln pi) (Menon et al.; Prior-LT's Bayias)",
    ),
)
register_method(
    "balanced_softmax",
    Method(
        lambda s: LogitAdjusted(1.0),
        "Balanced Softmax, CE(z + ln pi) (Ren et al. 2020): the la_loss method at tau 1",
        same_as="la_loss",
    ),
)
register_method(
    "drw",
    Method(
        lambda s: CrossEntropy(),
        "CE with deferred re-weighting: effective-number class weights "
        "(beta --drw-beta) from --drw-epoch (default 0.8 of the epochs)",
        drw=0.8,
    ),
)
register_method(
    "cb_ce",
    Method(
        lambda s: ClassBalanced(s.counts, s.cb_beta),
        "class-balanced CE: weights (1 - beta) / "
        "(1 - beta^N_c), beta --cb-beta, summing to C (Cui et al. 2019)",
        reads=("cb_beta",),
    ),
)
register_method(
    "cb_focal",
    Method(
        lambda s: ClassBalanced(s.counts, s.cb_beta, "focal", s.focal_gamma),
        "class-balanced softmax focal loss, (1 - p_y)^gamma CE with --focal-gamma (Cui et al. 2019)",
        reads=("cb_beta", "focal_gamma"),
    ),
)
register_method(
    "ldam_drw",
    Method(
        lambda s: LDAM(s.counts, s.ldam_max_margin, s.ldam_scale),
        "LDAM-DRW (Cao et al. 2019): margins ~ N_c^(-1/4), largest --ldam-max-margin, on cosine "
        "logits scaled by --ldam-scale, deferred re-weighting from --drw-epoch (default 0.8 of the epochs)",
        classifier="cosine",
        drw=0.8,
        reads=("ldam_max_margin", "ldam_scale"),
    ),
)
register_method(
    "ldam",
    Method(
        lambda s: LDAM(s.counts, s.ldam_max_margin, s.ldam_scale),
        "LDAM without the deferred re-weighting",
        classifier="cosine",
        reads=("ldam_max_margin", "ldam_scale"),
    ),
)
register_method(
    "weight_balancing",
    Method(
        lambda s: CrossEntropy(),
        "Weight Balancing (Alshammari et al. 2022): CE at the tuned --weight-decay, then the last --wb-epochs "
        "retrain the classifier alone with class-balanced CE (beta --drw-beta), weight decay --wb-weight-decay, "
        "a cosine rate from --wb-lr and per-class MaxNorm (--wb-max-norm)",
        drw=lambda s: s.epochs - s.wb_epochs,
        stages=lambda s: WeightBalancing(s.epochs, s.wb_epochs, s.wb_lr, s.wb_weight_decay, s.wb_max_norm),
        reads=("wb_epochs", "wb_lr", "wb_weight_decay", "wb_max_norm"),
    ),
)
