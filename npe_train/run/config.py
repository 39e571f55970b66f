"""The one list of training settings: a dataclass, read from TOML, overridden by flags made from it.

Every field carries its help text; ``add_config_flags`` turns the fields into ``npe train`` flags
(types from the annotations), so a setting cannot exist in one place and not the other.
Imports: ``npe_theory`` and the names of ``data/`` and ``models/``; the builders in ``loop/build.py``
are what read a config, and code below them takes explicit values.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.io import read_toml_table
from npe_theory.losses import LOSSES
from npe_theory.validate import nonnegative_int, positive_int, usable_cores

from ..data.catalog import DATASETS, dataset
from ..data.longtail import LT_GENERATORS, PROFILES
from ..data.pipeline import PIPELINES
from ..data.stream import parse_schedule
from ..methods.catalog import METHODS
from ..models.catalog import model_choices, model_entry

MIXES = ("none", "unimix")
# the baselines' own settings: each read by the methods that list it (methods/catalog.py, Method.reads)
METHOD_OPTIONS = (
    "cb_beta",
    "focal_gamma",
    "ldam_max_margin",
    "ldam_scale",
    "wb_epochs",
    "wb_lr",
    "wb_weight_decay",
    "wb_max_norm",
)
SCHEDULES = ("cosine", "step")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_COUNT = 10**7  # epochs, batch size, heads, ...: bounded work, a clear error above
MAX_N_MAX = 10**5  # head-class count: 20x the largest of the long-tailed benchmarks (Places-LT: 4,980)
MAX_IMAGE_SIZE = 4096  # resized images are held in memory
MAX_TAU_GRID = 256  # tau values of the recorded sweep: each scores every rule on the test and validation sets
MAX_BATCH_BYTES = 2 << 30  # one float32 batch of images at --image-size: refused above, before any is read
#: lambda*s the default weight decay is set for: every run at or above it sat within 0.05 nats of its equilibrium on four
#: data sets (docs/regimes.md); a fixed weight decay gives lambda*s 0.4 on one set and 2.4 on another
DEFAULT_LAMBDA_S = 1.5


def setting(default, help, **flag):
    """A config field with its help text (and extra argparse options for its flag); ``help`` may be a function, called when
    the flags are made, for text that lists a registry (a plugin's entries then appear in it)."""
    kw = {"default_factory": (lambda: list(default))} if isinstance(default, list) else {"default": default}
    return field(**kw, metadata={"help": help, "flag": flag})


def field_default(f):
    """A config field's default value (a list setting's is made by its factory)."""
    return f.default if f.default is not MISSING else f.default_factory()


@dataclass
class TrainConfig:
    """Defaults: the CPU main job (MNIST-1D-LT, imbalance 100). The shipped recipes (``shipped_recipes``) hold others."""

    dataset: str = setting("mnist1d", lambda: _choices(DATASETS, "the data sets"))
    model: str | None = setting(
        None,
        lambda: (
            f"{' | '.join(model_choices('classification'))}; segmentation: "
            f"{' | '.join(model_choices('segmentation'))} (default: by data set)"
        ),
    )
    method: str = setting("npe", lambda: _choices(METHODS, "the methods"))
    profile: str | None = setting(
        None, f"count profile: {' | '.join(PROFILES)} (default: exp; natural for folder and npy)"
    )
    lt_generator: str = setting(
        "toolkit",
        "which samples make the long-tailed subset: toolkit (the run's seeded generator) "
        "| ldam (the LDAM-DRW code's CIFAR-LT subset: a NumPy RandomState(seed) shuffling "
        "each class in turn; docs/data.md)",
    )
    imbalance: float = setting(100.0, "head over tail count of the exp and step profiles")
    n_max: int | None = setting(None, "head-class count (default: by data set)")
    data_dir: str | None = setting(
        None, "folder with cifar-10-batches-py/ or cifar-100-python/, an image folder, or X.npy + y.npy"
    )
    image_size: int | None = setting(
        None, "folder data set: resize images to this square size (default: keep; all must agree)"
    )
    test_fraction: float = setting(
        0.2,
        "folder and npy data without a test split: held-out share of the smallest class, taken from every class",
    )
    weights: str | None = setting(
        None, "torchvision backbone: a local state_dict file to start from (nothing is downloaded)"
    )
    epochs: int = setting(60, "training epochs")
    batch_size: int = setting(64, "global batch size")
    lr: float = setting(0.05, "peak learning rate")
    momentum: float = setting(0.9, "SGD momentum (0: plain SGD)")
    weight_decay: float | None = setting(
        None,
        "SGD weight decay of the backbone and classifier (default: the data set's standard value, "
        "docs/data.md); the PEM's too unless --pem-weight-decay or --target-lambda-s is given",
    )
    pem_weight_decay: float | None = setting(
        None,
        "the PEM's own SGD weight decay, which sets its scale (lambda*s) and what the report predicts "
        f"(default: --weight-decay if given, else the value --target-lambda-s {DEFAULT_LAMBDA_S:g} sets)",
    )
    target_lambda_s: float | None = setting(
        None,
        "set the PEM's weight decay so it feels lambda*s = X by the end, computed from this data set's "
        "steps per epoch and the schedule (overrides --pem-weight-decay; 1 or more reaches equilibrium; "
        f"default {DEFAULT_LAMBDA_S:g} when no weight decay is given)",
    )
    shared_decay: bool = setting(
        False,
        "one weight decay for every parameter: the backbone takes the PEM's (the recipe before the PEM had "
        "its own; docs/regimes.md compares the two)",
    )
    schedule: str = setting("cosine", f"{' | '.join(SCHEDULES)}")
    milestones: list[int] = setting([], "step schedule: epochs after which lr x gamma")
    gamma: float = setting(0.1, "step schedule: lr factor at each milestone")
    warmup_epochs: int = setting(0, "linear learning-rate warmup epochs")
    alpha: float | None = setting(
        None, "PEM loss weight (default 1; 0.1 for segmentation, as the paper's ADE20K run)"
    )
    num_pems: int = setting(1, "number of PEM heads, averaged")
    pem_hidden: int | None = setting(
        None, "hidden width of an MLP PEM (default: linear PEM, where the closed form applies)"
    )
    pem_loss: str = setting("logistic", lambda: _choices(LOSSES, "the PEM's one-way loss"))
    pem_detach: bool | None = setting(
        None,
        "keep the PEM loss from the backbone (default: joint for npe, a detached probe for the baselines)",
    )
    mix: str = setting(
        "none",
        f"{' | '.join(MIXES)}: mix every sample with a tail-favouring partner from its batch (Prior-LT)",
    )
    mix_a: float = setting(0.8, "UniMix: Beta(a, a) part of the mixing factor")
    mix_tau: float = setting(
        -0.1, "UniMix: partners drawn with probability proportional to n_y^mix_tau (< 0 favours the tail)"
    )
    mix_until: int | None = setting(None, "UniMix: mix in epochs before this one only (default: every epoch)")
    shift: list[str] = setting(
        [],
        "change the class distribution of the stream at the start of EPOCH (repeatable); "
        "PROFILE: exp | step | reversed; the training set becomes a pool of n_max per class",
        action="extend",
        metavar="EPOCH=PROFILE:IMBALANCE",
    )
    drw_epoch: int | None = setting(
        None,
        "deferred re-weighting: from this epoch (0-based) the classifier loss weighs "
        "classes by their effective number (default: the method's, 0.8 of the epochs for "
        "drw and ldam_drw; none for the others)",
    )
    drw_beta: float = setting(
        0.9999, "deferred re-weighting: beta of the effective-number weights (1 - beta) / (1 - beta^N_c)"
    )
    cb_beta: float = setting(0.9999, "cb_ce, cb_focal: beta of the class-balanced weights")
    focal_gamma: float = setting(1.0, "cb_focal: focusing exponent gamma of (1 - p_y)^gamma")
    ldam_max_margin: float = setting(0.5, "ldam, ldam_drw: the rarest class's margin")
    ldam_scale: float = setting(30.0, "ldam, ldam_drw: scale s of the cosine logits")
    wb_epochs: int | None = setting(
        None,
        "weight_balancing: the last epochs of the run, which retrain the classifier alone (stage 2; "
        "default 10, or a fifth of the epochs in a run shorter than 50)",
    )
    wb_lr: float = setting(0.01, "weight_balancing: stage 2's initial learning rate (cosine to 0)")
    wb_weight_decay: float = setting(0.1, "weight_balancing: the classifier's weight decay in stage 2")
    wb_max_norm: float = setting(
        0.1,
        "weight_balancing: MaxNorm radius as a share of the classifier's row-norm range at stage 2's start "
        "(r = min + share * (max - min))",
    )
    tau: float = setting(1.0, "logit-adjustment strength at inference (and in la_loss)")
    tau_grid: list[float] = setting(
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0], "tau values of the recorded tau sweep"
    )
    augment: bool | None = setting(None, "crop + flip (default: on for CIFAR, off otherwise)")
    seed: int = setting(0, "seed of the data subset, initialization and batch order")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    amp: bool | None = setting(None, "bf16 autocast (default: on CUDA only)")
    compile: str = setting(
        "none",
        f"torch.compile mode: {' | '.join(COMPILE_MODES)} (bare flag: default)",
        nargs="?",
        const="default",
        metavar="MODE",
    )
    pipeline: str | None = setting(
        None,
        f"{' | '.join(PIPELINES)}: data set on the device, or a standard DataLoader (default: device; loader for "
        "data sets read from disk as batches need them)",
    )
    workers: int | None = setting(
        None, "DataLoader worker processes (loader pipeline; default 4, at most the cores less one)"
    )
    threads: int | None = setting(
        None,
        "CPU threads for torch and BLAS (default: OMP_NUM_THREADS if set, else 1: more "
        "threads are several times slower on a busy machine; results depend on the count)",
    )
    eval_every: int | None = setting(
        None, "test-set evaluation every N epochs, 0: the last only (default 0, 1 with --shift)"
    )
    forecast_at: list[float] = setting(
        [0.1, 0.25, 0.5],
        "forecast the final PEM after the epochs that end these shares of the run (a linear PEM, one label per "
        "sample; metrics.jsonl and the progress output say where it is headed; none: an empty list in a config file)",
    )
    report_every: int | None = setting(
        None,
        "the per-epoch prior report every N epochs (evaluations always report); default: every epoch when it is "
        "cheap, else the smallest N at which its estimated cost stays within a twentieth of training's "
        "(docs/report.md, 'The report at scale')",
    )
    lean: bool = setting(
        False,
        "the cheaper report for many classes or short runs (docs/report.md, 'A lean run'): the prior report at "
        "evaluations only (unless --report-every is given), no per-step replay (so no finite-time reference and no "
        "forecasts), no figures (npe plot RUN_DIR draws them afterwards)",
    )
    out: str | None = setting(
        None,
        "run folder (default runs/<dataset>-<method>-ir<imbalance>[-e<epochs>][-lr<lr>]-seed<seed>, "
        "epochs and lr when not the defaults)",
    )
    train_list: str | None = setting(
        None,
        "list data set: the training split, one 'relative/path label' line per image "
        "(paths under --data-dir)",
        metavar="FILE",
    )
    test_list: str | None = setting(None, "list data set: the test split (same format)", metavar="FILE")
    val_list: str | None = setting(
        None,
        "list data set: a validation split for the advice (default: unused training images)",
        metavar="FILE",
    )
    tensorboard: str | None = setting(
        None,
        "also write the per-epoch scalars of metrics.jsonl to this TensorBoard log folder "
        "(needs the tensorboard package)",
        metavar="DIR",
    )

    def resolved(self) -> "TrainConfig":
        """Fill the None defaults that depend on other fields, and check every value."""
        cfg = TrainConfig(**asdict(self))
        entry = dataset(cfg.dataset)  # an unknown name is reported before anything else is read
        dense = entry.task == "segmentation"
        if cfg.alpha is None:
            cfg.alpha = 0.1 if dense else 1.0
        cfg.eval_every = (
            (1 if cfg.shift else 0) if cfg.eval_every is None else cfg.eval_every
        )  # a stream: accuracy after shifts
        if cfg.pem_weight_decay is None and cfg.target_lambda_s is None:
            if cfg.weight_decay is not None and not cfg.shared_decay:
                cfg.pem_weight_decay = cfg.weight_decay  # one decay given: every parameter takes it
            else:  # the PEM's decay follows from the data set's steps (loop/build.py)
                cfg.target_lambda_s = DEFAULT_LAMBDA_S
        if cfg.shared_decay:
            cfg.weight_decay = cfg.pem_weight_decay  # None until the target sets it (loop/build.py)
        elif cfg.weight_decay is None:
            cfg.weight_decay = entry.weight_decay  # the backbone keeps its data set's standard decay
        if cfg.model is None:
            cfg.model = entry.model
        if cfg.profile is None:
            cfg.profile = "natural" if entry.natural else "exp"
        if (
            cfg.pipeline is None
        ):  # samples that stay on disk are read by DataLoader workers; an explicit choice is checked
            cfg.pipeline = "loader" if entry.on_disk else "device"
        if cfg.image_size is None:  # 0 is not "the default": validate refuses it
            cfg.image_size = entry.image_size
        if cfg.workers is None:  # the main process needs a core too
            cfg.workers = max(0, min(4, usable_cores() - 1))
        if cfg.pem_detach is None and cfg.method in METHODS:
            cfg.pem_detach = not METHODS.get(cfg.method).joint_pem
        if cfg.augment is None:
            cfg.augment = entry.augment
        if isinstance(cfg.compile, bool):  # configs written before compile took a mode
            cfg.compile = "default" if cfg.compile else "none"
        cfg.validate()
        if cfg.out is None:  # the epochs and lr join the name when they are not the defaults
            base = TrainConfig()
            extra = "".join(
                f"-{tag}{getattr(cfg, key):g}"
                for key, tag in (("epochs", "e"), ("lr", "lr"))
                if getattr(cfg, key) != getattr(base, key)
            )
            cfg.out = f"runs/{cfg.dataset}-{cfg.method}-ir{cfg.imbalance:g}{extra}-seed{cfg.seed}"
        return cfg

    def _check_numbers(self, bad) -> None:
        """The numeric settings: finite, in range; the weight decays' combinations."""
        numbers = (
            "imbalance",
            "lr",
            "alpha",
            "gamma",
            "weight_decay",
            "momentum",
            "tau",
            "test_fraction",
            "mix_a",
            "mix_tau",
            "drw_beta",
            "cb_beta",
            "focal_gamma",
            "ldam_max_margin",
            "ldam_scale",
            "wb_lr",
            "wb_weight_decay",
            "wb_max_norm",
        )
        decays = ("weight_decay", "pem_weight_decay")
        for name in [
            n for n in (*numbers, "pem_weight_decay") if n not in decays or getattr(self, n) is not None
        ]:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v):
                bad(name, f"expected a finite number, got {v!r}")
        if self.imbalance < 1:
            bad("imbalance", f"must be a number >= 1 (head over tail count), got {self.imbalance!r}")
        for name in ("drw_beta", "cb_beta"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, f"expected a number in [0, 1), got {getattr(self, name)!r}")
        for name in ("focal_gamma", "ldam_max_margin", "wb_weight_decay", "wb_max_norm"):
            if getattr(self, name) < 0:
                bad(name, f"expected a number >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "alpha", "gamma", "mix_a", "ldam_scale", "wb_lr"):
            if getattr(self, name) <= 0:
                bad(name, f"expected a number > 0, got {getattr(self, name)!r}")
        if self.pem_weight_decay is None and self.target_lambda_s is None:
            bad("pem_weight_decay", "give the PEM's weight decay or --target-lambda-s")
        if self.weight_decay is None and not (self.shared_decay and self.target_lambda_s is not None):
            bad("weight_decay", "give the backbone's weight decay (or --shared-decay with --target-lambda-s)")
        if not isinstance(self.shared_decay, bool):
            bad("shared_decay", f"expected true or false, got {self.shared_decay!r}")
        for name in [n for n in ("weight_decay", "tau") if getattr(self, n) is not None]:
            if getattr(self, name) < 0:
                bad(name, f"expected a number >= 0, got {getattr(self, name)!r}")

    def _check_data_options(self, entry, bad) -> None:
        """The data set's options: one it does not read is refused, never ignored."""
        default_fraction = TrainConfig.__dataclass_fields__["test_fraction"].default
        for option, given in (
            ("data_dir", self.data_dir is not None),
            ("image_size", self.image_size is not None),
            ("test_fraction", self.test_fraction != default_fraction),
        ):  # a setting the data set would not read is refused: a run must not look as if it used it
            if given and option not in entry.reads:
                readers = DATASETS.where(lambda e: option in e.reads)
                bad(
                    option,
                    f"the {self.dataset} data set does not read it (it is read by {', '.join(readers) or 'none'})",
                )

    def _check_method_options(self, bad) -> None:
        """A baseline's setting, the deferred re-weighting's beta or a UniMix setting given where the method or mixing
        does not read it is refused, never ignored (each method lists what it reads)."""
        defaults = {f.name: field_default(f) for f in fields(TrainConfig)}
        method = METHODS.get(self.method)
        for name in METHOD_OPTIONS:
            if getattr(self, name) != defaults[name] and name not in method.reads:
                readers = METHODS.where(lambda m: name in m.reads)
                bad(name, f"the {self.method} method does not read it (read by {', '.join(readers)})")
        if self.drw_beta != defaults["drw_beta"] and method.drw is None and self.drw_epoch is None:
            bad(
                "drw_beta",
                f"the {self.method} method has no deferred re-weighting (give --drw-epoch for one)",
            )
        if self.lean and self.forecast_at and self.forecast_at != defaults["forecast_at"]:
            bad(
                "forecast_at",
                "a lean run makes no forecasts (they start from the replay, which --lean turns off)",
            )
        if self.mix == "none":
            for name in ("mix_a", "mix_tau", "mix_until"):
                if getattr(self, name) != defaults[name]:
                    bad(name, "a UniMix setting without --mix unimix")

    def _check_lists_and_sizes(self, entry, bad) -> None:
        """The forecast shares, the tau grid's length and a batch of images at their size: bounded before use."""
        if (
            not isinstance(self.forecast_at, list)
            or len(self.forecast_at) > MAX_TAU_GRID
            or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1
                for s in self.forecast_at
            )
        ):
            bad(
                "forecast_at",
                f"expected at most {MAX_TAU_GRID} shares of the run in (0, 1), got {self.forecast_at!r:.80}",
            )
        if len(self.tau_grid) > MAX_TAU_GRID:
            bad("tau_grid", f"{len(self.tau_grid)} values, more than the {MAX_TAU_GRID} a sweep may score")
        if entry.images and self.image_size is not None:
            batch_bytes = 4 * 3 * self.image_size**2 * self.batch_size
            if batch_bytes > MAX_BATCH_BYTES:
                bad(
                    "image_size",
                    f"a batch of {self.batch_size} RGB images at {self.image_size}x{self.image_size} takes "
                    f"{batch_bytes / 2**30:.1f} GiB, more than {MAX_BATCH_BYTES / 2**30:g} GiB (a smaller --image-size "
                    "or --batch-size)",
                )

    def validate(self) -> None:
        def bad(name, msg):
            raise InputError(f"{name}: {msg}")

        for name in (
            "dataset",
            "method",
            "lt_generator",
            "schedule",
            "pem_loss",
            "compile",
            "pipeline",
            "profile",
            "mix",
        ):
            if not isinstance(getattr(self, name), str):
                bad(name, f"expected a name (a string), got {getattr(self, name)!r}")
        entry = dataset(self.dataset)
        METHODS.get(self.method)
        if self.pem_loss not in LOSSES:
            bad("pem_loss", f"unknown {self.pem_loss!r}; choose from {', '.join(LOSSES)}")
        for name, allowed in (
            ("lt_generator", tuple(LT_GENERATORS)),
            ("schedule", SCHEDULES),
            ("profile", PROFILES),
            ("compile", COMPILE_MODES),
            ("pipeline", PIPELINES),
            ("mix", MIXES),
        ):
            if getattr(self, name) not in allowed:
                bad(name, f"unknown {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if self.model is None:
            bad(
                "model",
                f"no default network for {self.dataset}; choose from {', '.join(model_choices(entry.task))}",
            )
        net = model_entry(self.model)
        if entry.task != "classification" and METHODS.get(self.method).classifier != "linear":
            bad(
                "method",
                f"{self.method} needs a {METHODS.get(self.method).classifier} classifier, defined for classification only",
            )
        dense = entry.task == "segmentation"
        if net.task != entry.task:
            bad(
                "model",
                f"{self.dataset} is a {entry.task} data set; choose a {entry.task} network from "
                f"{', '.join(model_choices(entry.task))}, not {self.model}",
            )
        if dense and self.mix != "none":
            bad(
                "mix", f"UniMix mixes whole-image labels; it is not defined for segmentation ({self.dataset})"
            )
        if dense and self.shift:
            bad(
                "shift",
                f"a shifting class stream is defined for classification, not segmentation ({self.dataset})",
            )
        if dense and self.profile != "natural":
            bad("profile", f"segmentation keeps the data's own pixel counts (natural), not {self.profile}")
        if self.profile == "natural" and not entry.natural:
            bad(
                "profile",
                f"natural (the data's own counts) needs dataset "
                f"{', '.join(DATASETS.where(lambda e: e.natural and e.task == entry.task))}, "
                f"not {self.dataset}",
            )
        if entry.on_disk and self.pipeline != "loader":
            bad(
                "pipeline",
                f"the {self.dataset} data set reads its samples as needed: use the loader pipeline",
            )
        if "lists" not in entry.reads and any(
            getattr(self, n) is not None for n in ("train_list", "test_list", "val_list")
        ):
            bad(
                "train_list",
                f"split lists are read by the list data set (--dataset list), not {self.dataset}",
            )
        self._check_numbers(bad)
        self._check_data_options(entry, bad)
        self._check_method_options(bad)
        if not 0 <= self.momentum < 1:
            bad("momentum", f"expected a number in [0, 1), got {self.momentum!r}")
        if not 0 < self.test_fraction < 1:
            bad("test_fraction", f"expected a number in (0, 1), got {self.test_fraction!r}")
        for name in ("epochs", "batch_size", "num_pems"):
            setattr(
                self, name, positive_int(name, getattr(self, name), maximum=MAX_COUNT)
            )  # a NumPy integer becomes a plain int (JSON)
        for name, most in (
            ("n_max", MAX_N_MAX),
            ("threads", 1024),
            ("pem_hidden", 1 << 16),
            ("image_size", MAX_IMAGE_SIZE),
            ("mix_until", MAX_COUNT),
        ):
            if getattr(self, name) is not None:
                setattr(self, name, positive_int(name, getattr(self, name), maximum=most))
        for name in ("amp", "augment", "pem_detach"):
            if not (getattr(self, name) is None or isinstance(getattr(self, name), bool)):
                bad(name, f"expected true or false, got {getattr(self, name)!r}")
        if self.augment and not entry.images:
            bad(
                "augment",
                f"crop + flip needs images ({', '.join(DATASETS.where(lambda e: e.images and e.task == 'classification'))}), "
                f"not {self.dataset}",
            )
        if self.report_every is not None:
            self.report_every = positive_int("report_every", self.report_every, maximum=MAX_COUNT)
        for name, most in (("workers", 1024), ("warmup_epochs", None), ("eval_every", MAX_COUNT)):
            setattr(self, name, nonnegative_int(name, getattr(self, name), maximum=most))
        if self.drw_epoch is not None:
            self.drw_epoch = nonnegative_int("drw_epoch", self.drw_epoch, maximum=MAX_COUNT)
        if self.method == "weight_balancing" and self.epochs < 2:
            bad("epochs", "weight_balancing trains in two stages: give at least 2 epochs")
        if self.wb_epochs is not None:
            self.wb_epochs = positive_int("wb_epochs", self.wb_epochs, maximum=MAX_COUNT)
        if self.method == "weight_balancing" and self.wb_epochs is not None and self.wb_epochs >= self.epochs:
            bad(
                "wb_epochs",
                f"stage 2 takes the last {self.wb_epochs} of {self.epochs} epochs; give fewer than --epochs",
            )
        if self.wb_max_norm > 1:
            bad("wb_max_norm", f"expected a share in [0, 1] of the row-norm range, got {self.wb_max_norm!r}")
        self.seed = nonnegative_int("seed", self.seed, maximum=2**63 - 1)
        if self.target_lambda_s is not None and (
            isinstance(self.target_lambda_s, bool)
            or not isinstance(self.target_lambda_s, (int, float))
            or not _finite(self.target_lambda_s)
            or not 0 < self.target_lambda_s <= 1e3
        ):
            bad("target_lambda_s", f"expected a number in (0, 1000], got {self.target_lambda_s!r}")
        if self.weight_decay == 0 and self.pem_weight_decay == 0:
            bad(
                "weight_decay",
                "must be > 0 for the PEM: without it its output grows without bound "
                "(give --pem-weight-decay to decay the PEM alone)",
            )
        if self.pem_weight_decay is not None and not self.pem_weight_decay > 0:
            bad(
                "pem_weight_decay",
                "must be > 0: without it the PEM output (joint, or the baselines' probe) grows without bound",
            )
        if self.warmup_epochs >= self.epochs:
            bad("warmup_epochs", f"must lie in [0, epochs), got {self.warmup_epochs}")
        if not isinstance(self.milestones, list) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones
        ):
            bad("milestones", f"expected a list of epochs >= 1, got {self.milestones!r}")
        if (
            not isinstance(self.tau_grid, list)
            or not self.tau_grid
            or any(
                isinstance(t, bool) or not isinstance(t, (int, float)) or not _finite(t) or t < 0
                for t in self.tau_grid
            )
        ):
            bad("tau_grid", f"expected a list of numbers >= 0, got {self.tau_grid!r:.80}")
        self._check_lists_and_sizes(entry, bad)
        if not isinstance(self.shift, list) or not all(isinstance(e, str) for e in self.shift):
            bad("shift", f"expected a list of EPOCH=PROFILE:IMBALANCE entries, got {self.shift!r}")
        if self.shift:
            parse_schedule(self.shift, self.epochs)
            if self.profile not in ("exp", "step"):
                bad("shift", f"a shifting stream starts from the exp or step profile, not {self.profile}")
        for name in (
            "data_dir",
            "weights",
            "out",
            "device",
            "tensorboard",
            "train_list",
            "test_list",
            "val_list",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                # an empty path would be the current folder, an empty device the default: refused, not guessed
                bad(name, f"expected a path or name (a non-empty string), got {value!r}")


def _choices(registry, what: str) -> str:
    """``name: help`` of every entry of a registry, for a flag's help."""
    return f"{what}: " + "; ".join(f"{name}: {entry.help}" for name, entry in registry.items())


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond the float range
        return False


def _flag_type(annotation) -> tuple[type, bool]:
    """(element type, is a list) of a field annotation such as ``int | None`` or ``list[float]``."""
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        base = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(base) is list:
        return typing.get_args(base)[0], True
    return base, False


def add_config_flags(parser: argparse.ArgumentParser, exclude=()) -> list[str]:
    """One flag per TrainConfig field (``--no-NAME`` too for booleans), default None = "not given"; returns the field names."""
    hints = typing.get_type_hints(TrainConfig)
    names = []
    for f in fields(TrainConfig):
        if f.name in exclude:
            continue
        kind, is_list = _flag_type(hints[f.name])
        default = field_default(f)
        text = f.metadata["help"]() if callable(f.metadata["help"]) else f.metadata["help"]
        # a help text that explains its default already does not get a second, bare "(default None)"
        shown = "" if default is None and "default" in text else f" (default {default!r})"
        flag, help_text = "--" + f.name.replace("_", "-"), f"{text}{shown}"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action="store_const", const=True, help=help_text)
            parser.add_argument(
                "--no-" + flag[2:], dest=f.name, action="store_const", const=False, help=f"turn {flag} off"
            )
        else:
            options = {
                "type": kind,
                "nargs": "+" if is_list else None,
                "help": help_text,
                **f.metadata["flag"],
            }
            parser.add_argument(flag, dest=f.name, **options)
        names.append(f.name)
    return names


RECIPES = "recipes"  # package data of npe_train: the shipped recipes (configs/ in a checkout links to it)


def shipped_recipes() -> dict[str, Path]:
    """{name: file} of the recipes that ship with the package (``mnist1d_lt_equilibrium``, ``cifar100_lt``, ...)."""
    from importlib.resources import files

    folder = Path(str(files("npe_train") / RECIPES))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def recipe_path(file) -> Path:
    """The settings file ``file`` when it exists; else the shipped recipe of that name (with or without ``.toml`` and a
    folder, so ``configs/cifar100_lt.toml`` works outside a checkout too)."""
    path = Path(file)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if path.stem in shipped and (path.suffix in ("", ".toml")):
        return shipped[path.stem]
    raise InputError(f"config: {file} is neither a file nor a shipped recipe ({', '.join(shipped)})")


def load_toml(path) -> dict:
    """Config keys from a TOML file or shipped recipe name (flat, or under a [train] table); unknown keys are an error."""
    path = recipe_path(path)
    raw = read_toml_table(path, "config", "train")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"config: unknown key(s) {', '.join(unknown)} in {path}")
    return raw


def make_config(file: str | None = None, **overrides) -> TrainConfig:
    """Defaults < TOML file < explicit overrides (None values are ignored), then resolved and checked.

    A bad value that came from the file is reported with the file's name.
    """
    from_file = load_toml(file) if file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise InputError(f"config: unknown setting(s) {', '.join(unknown)}")
    try:
        return TrainConfig(**{**from_file, **given}).resolved()
    except InputError as exc:
        key = str(exc).split(":")[0]
        if key in from_file and key not in given:
            raise InputError(f"config: {file}: {exc}") from None
        raise
