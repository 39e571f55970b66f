"""The one configuration of a training run: a dataclass, read from TOML and overridden by flags."""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from npe_theory._validate import nonnegative_int, positive_int

from .data import DATASETS
from .models import MODELS
from .pipeline import PIPELINES

METHODS = ("npe", "ce", "la_loss")
SCHEDULES = ("cosine", "step")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEFAULT_MODEL = {"synthetic": "mlp", "digits": "mlp", "mnist1d": "cnn1d", "cifar10": "resnet32", "cifar100": "resnet32"}


@dataclass
class TrainConfig:
    """Defaults: the CPU main job (MNIST-1D-LT, imbalance 100). configs/*.toml hold the CIFAR-LT recipes."""

    dataset: str = "mnist1d"
    model: str | None = None  # None: mlp (synthetic, digits), cnn1d (mnist1d), resnet32 (cifar)
    method: str = "npe"  # npe: CE + alpha * PEM (joint); ce: CE; la_loss: CE(z + tau log pi) (Bayias)
    profile: str = "exp"
    imbalance: float = 100.0
    n_max: int | None = None  # head-class count; None: the data set's default
    data_dir: str | None = None  # folder holding cifar-10-batches-py/ or cifar-100-python/
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on every parameter, PEM included (as the official code)
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # step schedule: lr x gamma after these epochs
    gamma: float = 0.1
    warmup_epochs: int = 0
    alpha: float = 1.0  # PEM loss weight
    num_pems: int = 1
    pem_hidden: int | None = None  # None: linear PEM (the closed form applies); an int: Linear-ReLU-Linear
    pem_loss: str = "logistic"  # logistic (the paper) or exp (Proposition 1's tail)
    pem_detach: bool | None = None  # None: joint for npe, a detached probe for the baselines
    tau: float = 1.0  # logit-adjustment strength at inference (and in la_loss)
    tau_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    augment: bool | None = None  # None: crop + flip for CIFAR, none otherwise
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    amp: bool | None = None  # bf16 autocast; None: on CUDA only (bf16 on a CPU without native support is slow)
    compile: str = "none"  # torch.compile mode: none | default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs
    pipeline: str = "device"  # device: data set resident on the device; loader: a standard DataLoader (the reference)
    workers: int = 4  # DataLoader worker processes (loader pipeline only)
    eval_every: int = 1
    out: str | None = None  # None: runs/<dataset>-<method>-ir<imbalance>-seed<seed>

    def resolved(self) -> "TrainConfig":
        """Fill the None defaults that depend on other fields, and check every value."""
        cfg = TrainConfig(**asdict(self))
        if cfg.model is None and cfg.dataset in DEFAULT_MODEL:
            cfg.model = DEFAULT_MODEL[cfg.dataset]
        if cfg.pem_detach is None:
            cfg.pem_detach = cfg.method != "npe"
        if cfg.augment is None:
            cfg.augment = cfg.dataset.startswith("cifar")
        if isinstance(cfg.compile, bool):  # configs written before compile took a mode
            cfg.compile = "default" if cfg.compile else "none"
        if cfg.out is None:
            cfg.out = f"runs/{cfg.dataset}-{cfg.method}-ir{cfg.imbalance:g}-seed{cfg.seed}"
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(name, msg):
            raise ValueError(f"{name}: {msg}")

        for name, allowed in (("dataset", DATASETS), ("model", MODELS), ("method", METHODS), ("schedule", SCHEDULES),
                              ("profile", ("exp", "step")), ("pem_loss", ("logistic", "exp")), ("compile", COMPILE_MODES),
                              ("pipeline", PIPELINES)):
            if getattr(self, name) not in allowed:
                bad(name, f"unknown {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        if not (isinstance(self.imbalance, (int, float)) and math.isfinite(self.imbalance) and self.imbalance >= 1):
            bad("imbalance", f"must be a number >= 1 (head over tail count), got {self.imbalance!r}")
        for name in ("epochs", "batch_size", "num_pems", "eval_every"):
            setattr(self, name, positive_int(name, getattr(self, name)))  # a NumPy integer becomes a plain int (JSON)
        for name in ("lr", "alpha", "gamma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad(name, f"expected a number > 0, got {v!r}")
        for name in ("weight_decay", "momentum", "tau"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, f"expected a number >= 0, got {v!r}")
        for name in ("amp", "augment", "pem_detach"):
            if getattr(self, name) not in (None, True, False):
                bad(name, f"expected true or false, got {getattr(self, name)!r}")
        if self.augment and not self.dataset.startswith("cifar"):
            bad("augment", f"crop + flip needs images (cifar10, cifar100), not {self.dataset}")
        self.workers = nonnegative_int("workers", self.workers)
        if self.weight_decay == 0 and self.method == "npe":
            bad("weight_decay", "must be > 0 for NPE: without it the PEM output grows without bound")
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.epochs:
            bad("warmup_epochs", f"must lie in [0, epochs), got {self.warmup_epochs}")
        if self.n_max is not None and (not isinstance(self.n_max, int) or self.n_max < 1):
            bad("n_max", f"expected None or an integer >= 1, got {self.n_max!r}")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones):
            bad("milestones", f"expected epochs >= 1, got {self.milestones!r}")
        if not self.tau_grid or any(not isinstance(t, (int, float)) or t < 0 for t in self.tau_grid):
            bad("tau_grid", f"expected numbers >= 0, got {self.tau_grid!r}")


def load_toml(path) -> dict:
    """Config keys from a TOML file (flat, or under a [train] table); unknown keys are an error."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config: no file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {path} is not valid TOML ({exc})") from None
    raw = raw.get("train", raw)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"config: unknown key(s) {', '.join(unknown)} in {path}")
    return raw


def make_config(file: str | None = None, **overrides) -> TrainConfig:
    """Defaults < TOML file < explicit overrides (None values are ignored), then resolved and checked."""
    values = load_toml(file) if file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = TrainConfig(**values)
    except TypeError as exc:
        raise ValueError(f"config: {exc}") from None
    return cfg.resolved()
