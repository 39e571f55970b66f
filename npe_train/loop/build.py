"""Builders: the one place that reads a ``TrainConfig`` and turns it into the objects the loop runs (docs/architecture.md).

Data-set and method names are looked up here and nowhere below: the data, the network, the task
(classification or dense prediction), the objective, the mixing method, the class stream, the
optimizer and its schedule. Below these, functions take explicit values. Imports: everything under
``loop/`` (``data/``, ``models/``, ``methods/``, ``tasks/``, ``run/``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import torch

from npe_theory.dynamics import lambda_s, steps_per_epoch
from npe_theory.errors import InputError
from npe_theory.report import EQUILIBRIUM_LAMBDA_S, report_cadence

from ..data.catalog import DATASETS, DataRequest, dataset
from ..data.stream import parse_schedule
from ..methods.catalog import MethodSettings, method
from ..methods.mixing import NoMixing, UniMixing
from ..methods.objective import Objective
from ..methods.stages import stage_epochs
from ..methods.trace import PemRecipe
from ..models.classifiers import build_model
from ..models.dense import build_seg_model
from ..models.pem import pem_param_groups
from ..run.config import TrainConfig
from ..tasks.classification import Classification
from ..tasks.segmentation import Segmentation
from ..tasks.stream import FixedStream, ShiftingStream
from .step import padded_length


def run_label(cfg: TrainConfig) -> str:
    """What the progress bar calls the run: data set and method."""
    return f"{cfg.dataset} {cfg.method}"


def dense(cfg: TrainConfig) -> bool:
    """The data set labels every pixel (segmentation)."""
    return dataset(cfg.dataset).task == "segmentation"


def data_request(cfg: TrainConfig, datasets=None) -> DataRequest:
    """The settings that choose the run's data; a shifting stream's training set is a pool of n_max samples of every class
    (imbalance 1). ``datasets``: a user's (train, test[, validation]) torch Datasets for the ``torch`` data set."""
    if datasets is not None and "datasets" not in dataset(cfg.dataset).reads:
        readers = ", ".join(DATASETS.where(lambda e: "datasets" in e.reads))
        raise InputError(
            f"datasets: the {cfg.dataset} data set does not read your Datasets (give dataset={readers!r} to train on "
            "them); they would be ignored"
        )
    return DataRequest(
        imbalance=1.0 if cfg.shift else cfg.imbalance,
        profile=cfg.profile,
        n_max=cfg.n_max,
        seed=cfg.seed,
        data_dir=cfg.data_dir,
        image_size=cfg.image_size,
        test_fraction=cfg.test_fraction,
        lists={"train": cfg.train_list, "test": cfg.test_list, "val": cfg.val_list},
        datasets=None if datasets is None else tuple(datasets),
        lt_generator=cfg.lt_generator,
    )


def build_data(cfg: TrainConfig, datasets=None):
    """The training, test and validation sets of the registered data set (``data/catalog.py``)."""
    return dataset(cfg.dataset).build(data_request(cfg, datasets))


def build_network(cfg: TrainConfig, data):
    """The backbone with its PEM heads, for the data's input shape and class count."""
    args = (
        cfg.model,
        data.input_shape,
        data.num_classes,
        cfg.num_pems,
        cfg.pem_hidden,
        cfg.pem_detach,
        cfg.weights,
    )
    if dense(cfg):
        return build_seg_model(*args)
    head = method(cfg.method).classifier  # a cosine classifier for LDAM, at the scale its loss assumes
    return build_model(*args, classifier=head, scale=cfg.ldam_scale)


def pem_recipe(cfg: TrainConfig) -> PemRecipe:
    return PemRecipe(
        weight_decay=cfg.pem_weight_decay, momentum=cfg.momentum, alpha=cfg.alpha, loss=cfg.pem_loss
    )


def build_task(cfg: TrainConfig):
    """Classification, or segmentation for a dense data set."""
    if dense(cfg):
        return Segmentation(pem_recipe(cfg), cfg.batch_size, cfg.seed, cfg.tau)
    return Classification(pem_recipe(cfg), cfg.batch_size, cfg.seed, cfg.tau, cfg.tau_grid, cfg.augment)


def method_settings(cfg: TrainConfig, counts) -> MethodSettings:
    """What the method's loss is made from: the run's tau, training class counts and epochs."""
    return MethodSettings(
        tau=cfg.tau,
        counts=np.asarray(counts),
        epochs=cfg.epochs,
        cb_beta=cfg.cb_beta,
        focal_gamma=cfg.focal_gamma,
        ldam_max_margin=cfg.ldam_max_margin,
        ldam_scale=cfg.ldam_scale,
        wb_epochs=stage_epochs(cfg.epochs) if cfg.wb_epochs is None else cfg.wb_epochs,
        wb_lr=cfg.wb_lr,
        wb_weight_decay=cfg.wb_weight_decay,
        wb_max_norm=cfg.wb_max_norm,
    )


def build_objective(cfg: TrainConfig, counts) -> Objective:
    """The registered method's classifier loss (``methods/catalog.py``) + alpha * the PEM loss."""
    m = method(cfg.method)
    return Objective(
        classifier_loss=m.make(method_settings(cfg, counts)),
        alpha=cfg.alpha,
        pem_loss=cfg.pem_loss,
        drw_epoch=drw_epoch(cfg),
        drw_beta=cfg.drw_beta,
    )


def drw_epoch(cfg: TrainConfig) -> int | None:
    """The epoch the deferred re-weighting starts: --drw-epoch, else the method's share of the epochs (LDAM-DRW's code:
    160 of 200), else None (never)."""
    if cfg.drw_epoch is not None:
        return cfg.drw_epoch
    share = method(cfg.method).drw
    if callable(share):
        return share(method_settings(cfg, None))
    return None if share is None else int(round(share * cfg.epochs))


def build_stages(cfg: TrainConfig):
    """The method's stage hooks (``methods/stages.py``), or None for a one-stage method."""
    make = method(cfg.method).stages
    return None if make is None else make(method_settings(cfg, None))


def build_mixing(cfg: TrainConfig):
    return UniMixing(cfg.mix_a, cfg.mix_tau, cfg.mix_until) if cfg.mix == "unimix" else NoMixing()


def build_stream(cfg: TrainConfig, data):
    """The whole training set every epoch, or the shifting stream of ``cfg.shift`` drawn from the data as a pool.
    Every profile of a stream is checked against the pool here, before a run folder exists."""
    shifts = parse_schedule(cfg.shift, cfg.epochs)
    if not shifts:
        return FixedStream(data.counts, len(data.y_train))
    return ShiftingStream(
        cfg.profile, cfg.imbalance, shifts, data.y_train, data.num_classes, pem_recipe(cfg), cfg.batch_size
    )


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Linear warmup over ``warmup_epochs``, then cosine to 0 or x gamma after each milestone."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def planned_lambda_s(cfg: TrainConfig, steps, epochs: int | None = None) -> float:
    """lambda*s the schedule will give: weight_decay * sum_e lr * lr_factor(e) * steps_e / (1 - momentum), over ``epochs``
    epochs of the same schedule (default the config's), ``steps`` one count per epoch or one for all."""
    epochs = cfg.epochs if epochs is None else epochs
    sched = replace(cfg, epochs=epochs) if epochs != cfg.epochs else cfg
    steps = np.broadcast_to(np.asarray(steps, dtype=np.float64), (epochs,))
    return lambda_s(
        cfg.pem_weight_decay, [cfg.lr * lr_factor(sched, e) * steps[e] for e in range(epochs)], cfg.momentum
    )


def planned_steps(stream, batch_size: int, world: int, epochs: int) -> list[int]:
    """Steps per epoch the loop will take: ceil(padded samples / batch size), padded to a multiple of the world size."""
    return [
        steps_per_epoch(padded_length(stream.samples_at(e), world, batch_size), batch_size)
        for e in range(epochs)
    ]


def build_schedule(cfg: TrainConfig, data, world: int = 1):
    """(cfg, stream): the class stream, and the config with the weight decay ``--target-lambda-s`` asks for (the stream
    is made again only then, since a shifting stream's adaptation report reads the weight decay)."""
    if cfg.target_lambda_s is None:
        return cfg, build_stream(cfg, data)
    cfg = with_target_lambda_s(
        cfg, build_stream(replace(cfg, pem_weight_decay=cfg.pem_weight_decay or 1.0), data), world
    )
    return cfg, build_stream(cfg, data)


def report_every(cfg: TrainConfig, data, model) -> int:
    """The per-epoch report's cadence: ``--report-every`` when given, else from the report's estimated cost against
    training's (``npe_theory.report.report_cadence``). Computed from the data and the network, so a resumed run
    reports the same epochs; the config keeps None ("by cost") and results.json the cadence used. A lean run reports
    at its evaluations only (every ``epochs`` epochs)."""
    width = getattr(model, "feature_dim", None)
    if cfg.lean and cfg.report_every is None:
        return cfg.epochs
    if cfg.report_every is not None or width is None:
        return cfg.report_every or 1
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return report_cadence(data.counts, width, max(parameters, 1))


MAX_SENSIBLE_DECAY = 0.1  # a weight decay above this shrinks every weight by more than lr/10 a step


def with_target_lambda_s(cfg: TrainConfig, stream, world: int = 1) -> TrainConfig:
    """``cfg`` with the weight decay that gives lambda*s = ``target_lambda_s`` (unchanged when none is set): lambda*s is
    linear in the weight decay for a fixed schedule."""
    if cfg.target_lambda_s is None:
        return cfg
    per_unit = planned_lambda_s(
        replace(cfg, pem_weight_decay=1.0), planned_steps(stream, cfg.batch_size, world, cfg.epochs)
    )
    wd = float(cfg.target_lambda_s / per_unit)
    if (
        wd > MAX_SENSIBLE_DECAY
    ):  # the schedule's learning rates sum to little: the decay, not the loss, would drive training
        warnings.warn(
            f"pem_weight_decay: lambda*s = {cfg.target_lambda_s:g} with this schedule needs a PEM weight decay of "
            f"{wd:.3g} (the learning rates sum to {per_unit * (1 - cfg.momentum):.3g} over the run): a run this "
            f"short is not trained; give more --epochs, a larger --lr or --pem-weight-decay"
            + (" (with --shared-decay the backbone takes it too)" if cfg.shared_decay else ""),
            stacklevel=2,
        )
    return replace(cfg, pem_weight_decay=wd, weight_decay=wd if cfg.shared_decay else cfg.weight_decay)


def reach_equilibrium(
    cfg: TrainConfig, steps_taken: list[int], lam_s: float, target: float = EQUILIBRIUM_LAMBDA_S
) -> dict | None:
    """For a run short of lambda*s = ``target``: the weight decay that reaches it with this schedule (lambda*s is linear in
    it), and the epochs that reach it with this weight decay (the same schedule stretched; None beyond 100x the run).
    None when the run got there."""
    if lam_s >= target or not steps_taken:
        return None
    steps = float(np.mean(steps_taken))
    lo, hi = (
        cfg.epochs,
        cfg.epochs,
    )  # lambda*s grows with the epochs of a stretched schedule: double, then bisect
    while planned_lambda_s(cfg, steps, hi) < target and hi <= 100 * cfg.epochs:
        lo, hi = hi, 2 * hi
    epochs = None
    if planned_lambda_s(cfg, steps, hi) >= target:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if planned_lambda_s(cfg, steps, mid) >= target else (mid, hi)
        epochs = hi
    return {
        "target_lambda_s": target,
        "lambda_s": lam_s,
        "pem_weight_decay": cfg.pem_weight_decay * target / lam_s,
        "epochs": epochs,
    }


def build_optimizer(cfg: TrainConfig, model):
    """SGD with momentum and weight decay on every parameter (the PEM's included), and its per-epoch schedule."""
    groups = pem_param_groups(model, cfg.pem_weight_decay, cfg.weight_decay)  # the PEM at its own decay
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
