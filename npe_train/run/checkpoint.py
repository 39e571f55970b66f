"""The checkpoint: what a resumed run needs, written and read side by side, with no code in it.

``checkpoint.safetensors`` (format 6; format 5 is read too) holds every tensor of the run's state (the network, the
optimizer's buffers, the random generators, the PEM trace's arrays) in the safetensors format, which is a JSON header
and raw bytes and cannot hold code, and the rest of the state (the optimizer's and schedule's settings, the epoch,
the config, the metrics lines) as one JSON text that points at those tensors by name. It is read the same way on every torch.
The earlier ``checkpoint.pt`` (formats 3 and 4, written with ``torch.save``) is still read, with
``torch.load(weights_only=True)`` and only on a torch that reads it safely (``models/weights.py``); the next
checkpoint of a resumed run is written in format 6 and replaces it. Every field read back is checked before use,
and a bad one is an ``InputError`` naming the file and the field (docs/reliability.md).

The run's folder is not part of its identity: ``out`` is left out of the settings a resume must
match, so a moved or copied run folder continues where it stopped.
Imports: npe_theory, torch, ``config.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from npe_theory.errors import InputError
from npe_theory.io import atomic_write
from npe_theory.runfiles import FieldFault, check_config, check_metrics_lines, loads_strict

from ..methods.trace import Trace
from ..models.weights import load_safetensors, torch_load
from .config import TrainConfig

CHECKPOINT = "checkpoint.safetensors"
LEGACY = (
    "checkpoint.pt"  # formats 3 and 4 (torch.save): read on a torch that reads them safely, then replaced
)
FORMAT = 6
# 1: pickled NumPy arrays and dicts (needed the unrestricted unpickler); 2: no replay state; neither is read any more.
# 3: the class shares as one small tensor per epoch; 4: packed into one (saving 200 epochs took 5 ms more); 3 and 4
# are torch.save files. 5: safetensors with a JSON structure. 6: the trace keeps each epoch's number of steps, not its
# class shares (nothing read them back; at 1,000 classes they made a 200-epoch checkpoint 700 MB).
READ = (3, 4, 5, 6)
STRUCTURE = "npe.structure"  # the tensor (UTF-8 bytes) holding a safetensors checkpoint's JSON structure
TENSOR, KEYED = "$tensor", "$keyed"  # the structure's markers: a stored tensor; a dict with non-string keys
PLACE_ONLY = ("out", "tensorboard")  # settings that say where a run (or its log) lives, not what it is


def _tensors(value):
    """The trace with every NumPy array as a tensor (weights_only=True reads tensors, not arrays)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, dict):
        return {k: _tensors(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tensors(v) for v in value]
    return value


def _steps_of_older(trace, num_classes: int, damaged):
    """A format 3-5 trace (each step's class shares kept, one (steps, C) array per epoch, packed into one in 4 and 5)
    with its epochs' step counts in their place, the shares checked as those versions did; a current one as it is."""
    if not isinstance(trace, dict) or "fractions" not in trace or "steps" in trace:
        return trace
    fractions = trace.pop("fractions")
    if isinstance(fractions, dict):  # formats 4 and 5: {"steps": [...], "shares": (total steps, C)}
        steps, shares = fractions.get("steps"), fractions.get("shares")
        fractions = (
            np.split(shares, np.cumsum(steps)[:-1])
            if isinstance(steps, list)
            and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in steps)
            and isinstance(shares, np.ndarray)
            and shares.ndim == 2
            and len(shares) == sum(steps)
            else None
        )
    if not (
        isinstance(fractions, list)
        and all(
            isinstance(b, np.ndarray)
            and b.ndim == 2
            and len(b) > 0
            and b.shape[1] == num_classes
            and b.dtype.kind == "f"
            and np.all(np.isfinite(b))
            for b in fractions
        )
    ):
        raise damaged("trace.fractions", f"are not finite arrays of class shares over {num_classes} classes")
    return {**trace, "steps": [len(b) for b in fractions]}


def _arrays(value):
    """Inverse of ``_tensors``: the trace's tensors back as NumPy arrays."""
    if isinstance(value, torch.Tensor):
        return value.cpu().numpy()
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


def _flatten(value, tensors: dict):
    """``value`` as JSON with every tensor moved into ``tensors`` (named by its place) and replaced by a marker."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = (
            value.detach().cpu().contiguous().clone()
        )  # safetensors stores no shared or strided storage
        return {TENSOR: key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not {TENSOR, KEYED} & set(value):
            return {k: _flatten(v, tensors) for k, v in value.items()}
        return {
            KEYED: [[k, _flatten(v, tensors)] for k, v in value.items()]
        }  # the optimizer's state by param index
    if isinstance(value, (list, tuple)):
        return [_flatten(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"checkpoint: cannot store a {type(value).__name__}"
    )  # ours to fix: nothing else is written


def _unflatten(value, tensors: dict):
    """Inverse of ``_flatten``; a marker naming no stored tensor or a malformed keyed dict raises FieldFault."""
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            key = value[TENSOR]
            if not isinstance(key, str) or key not in tensors:
                raise FieldFault("structure", "a reference to a stored tensor")
            return tensors[key]
        if set(value) == {KEYED}:
            pairs = value[KEYED]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], (int, str)) for p in pairs
            ):
                raise FieldFault("structure", "a list of key-value pairs")
            return {k: _unflatten(v, tensors) for k, v in pairs}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def serialize(state: dict) -> bytes:
    """A checkpoint's state as the bytes of a safetensors file: its tensors, and the JSON structure as bytes."""
    from safetensors.torch import save

    tensors: dict = {}
    structure = json.dumps(_flatten(state, tensors))
    tensors[STRUCTURE] = torch.frombuffer(bytearray(structure.encode()), dtype=torch.uint8)
    return save(tensors, metadata={"format": f"npe-checkpoint/{FORMAT}"})


def read_checkpoint(path) -> dict:
    """The state dict of a checkpoint file of any format this version reads (``checkpoint.safetensors``, or an
    earlier ``checkpoint.pt`` on a torch that reads it safely), its structure checked but not yet its fields (the
    readers below check those against the run). For inspection, tools and tests."""
    path = Path(path)
    label = "checkpoint"
    if path.name == LEGACY or path.suffix == ".pt":
        return torch_load(path, label, "a checkpoint")
    tensors = load_safetensors(path, label)
    raw = tensors.pop(STRUCTURE, None)
    if raw is None or raw.dtype != torch.uint8 or raw.ndim != 1:
        raise InputError(
            f"{label}: {path} is a safetensors file but not a checkpoint of ours (no {STRUCTURE})"
        )
    try:
        return _unflatten(loads_strict(bytes(raw.numpy()).decode("utf-8")), tensors)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise InputError(
            f"{label}: {path}: its structure is not valid JSON; delete it to start the run over"
        ) from None
    except FieldFault as fault:
        raise InputError(f"{label}: {path}: {fault.args[0]} is not {fault.args[1]}") from None


def write_checkpoint(path, state: dict) -> None:
    """Write a checkpoint's state dict as a safetensors file, atomically (serialized in memory first)."""
    data = serialize(state)
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def checkpoint_in(folder) -> Path | None:
    """The checkpoint file of a run folder: ``checkpoint.safetensors``, else an earlier ``checkpoint.pt``, else None."""
    for name in (CHECKPOINT, LEGACY):
        if (Path(folder) / name).exists():
            return Path(folder) / name
    return None


@dataclass(frozen=True)
class Trainables:
    """What a checkpoint saves and a resume restores besides the trace: the network, its optimizer and learning-rate
    schedule, and the batch-order generator."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    gen: torch.Generator


def save_checkpoint(
    path: Path,
    epoch: int,
    cfg: TrainConfig,
    parts: Trainables,
    trace: Trace,
    metrics: list[dict],
    written: list[str] | None = None,
) -> None:
    """Write the run's state after ``epoch``. Serialized in memory first, so a full disk surfaces as an
    OSError (ENOSPC) from the write itself; ``atomic_write`` then removes the partial file and keeps the
    last good checkpoint. ``written``: every line of ``metrics`` already as JSON (``metrics.write_metrics``)."""
    lines = (
        json.dumps(metrics)
        if written is None or len(written) != len(metrics)
        else "[" + ",".join(w.rstrip("\n") for w in written) + "]"
    )
    state = {
        "format": FORMAT,
        "model": parts.model.state_dict(),
        "optimizer": parts.opt.state_dict(),
        "scheduler": parts.sched.state_dict(),
        "generator": parts.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "epoch": epoch,
        "config": json.dumps(asdict(cfg)),
        "metrics": lines,
        "trace": _tensors(trace.as_dict()),
    }
    write_checkpoint(path, state)
    legacy = Path(path).with_name(LEGACY)
    if legacy.exists():  # a run resumed from the earlier format now has its state in the new one
        legacy.unlink()


# settings added after runs were written without them, with the value those runs had in effect
SINCE = {"report_every": 1}  # the per-epoch report ran every epoch before it had a cadence


def identity(config: dict) -> dict:
    """The settings that make a run what it is (its folder left out; a setting an earlier version did not write takes
    the value that version used)."""
    return {**SINCE, **{k: v for k, v in config.items() if k not in PLACE_ONLY}}


def _read(path: Path, cfg: TrainConfig, device, damaged) -> dict:
    """The checkpoint's dict (tensors on the CPU), its format and settings checked."""
    try:
        ckpt = read_checkpoint(path)
    except InputError as exc:
        raise InputError(f"{exc}; delete it to start the run over") from None
    if not isinstance(ckpt, dict):
        raise damaged("content", f"is a {type(ckpt).__name__}, not a checkpoint")
    if ckpt.get("format") not in READ:
        raise damaged("format", f"is {ckpt.get('format')!r}, expected {FORMAT} (written by another version)")
    saved = _json_field(ckpt, "config", dict, damaged)
    try:
        check_config(saved)
    except FieldFault as fault:
        raise damaged(fault.args[0], f"is not {fault.args[1]}") from None
    if identity(saved) != identity(asdict(cfg)):
        changed = sorted(k for k in identity(asdict(cfg)) if saved.get(k) != asdict(cfg)[k])
        why = ""
        if {"weight_decay", "pem_weight_decay"} & set(changed) and cfg.target_lambda_s is not None:
            why = (
                "; the PEM's weight decay follows from --epochs, --lr and the steps per epoch (--target-lambda-s), "
                "so changing them changes it"
            )
        raise InputError(
            f"resume: the run in {path.parent} was made with other settings ({', '.join(changed) or 'unknown keys'})"
            f"{why}; a run cannot be extended or changed: give a new --out"
        )
    return ckpt


def read_finished(path: Path, cfg: TrainConfig, model, device, num_classes: int, num_samples: int) -> Trace:
    """A finished run's network into ``model`` and its PEM trace (``npe eval``); the checkpoint checked as on resume."""

    def damaged(field: str, why: str):
        return InputError(f"checkpoint: {path}: {field} {why}")

    ckpt = _read(path, cfg, device, damaged)
    if ckpt.get("epoch") != cfg.epochs - 1:
        raise damaged("epoch", f"is {ckpt.get('epoch')!r}: the run has not finished its {cfg.epochs} epochs")
    trace = _checked_trace(ckpt, cfg.epochs, num_classes, num_samples, damaged)
    try:
        model.load_state_dict(ckpt.get("model"))
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise damaged("model", f"does not fit this run's network ({type(exc).__name__})") from None
    return trace


def load_checkpoint(
    path: Path, cfg: TrainConfig, parts: Trainables, device, num_classes: int, num_samples: int
) -> tuple[int, Trace, list[dict]]:
    """Restore everything ``save_checkpoint`` wrote; returns (the next epoch, the PEM trace, the metrics lines so far)."""

    def damaged(field: str, why: str):
        return InputError(f"checkpoint: {path}: {field} {why}; delete the file to start the run over")

    ckpt = _read(path, cfg, device, damaged)
    epoch = ckpt.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < cfg.epochs:
        raise damaged("epoch", f"is {epoch!r}, expected an integer in [0, {cfg.epochs})")
    metrics = _json_field(ckpt, "metrics", list, damaged)
    if len(metrics) != epoch + 1:
        raise damaged("metrics", f"do not hold one line per epoch 0..{epoch}")
    try:
        check_metrics_lines(metrics)  # the same check as metrics.jsonl's (npe_theory.runfiles)
    except FieldFault as fault:
        raise damaged(
            "metrics", f"are not metrics.jsonl's lines ({fault.args[0]} is not {fault.args[1]})"
        ) from None
    trace = _checked_trace(ckpt, epoch + 1, num_classes, num_samples, damaged)
    for field, restore in (
        ("model", parts.model.load_state_dict),
        ("optimizer", parts.opt.load_state_dict),
        ("scheduler", parts.sched.load_state_dict),
        ("generator", parts.gen.set_state),
        ("torch_rng", torch.set_rng_state),
    ):
        value = ckpt.get(field)
        if value is None:
            raise damaged(field, "is missing")
        try:
            restore(
                value.cpu()
                if field in ("generator", "torch_rng") and isinstance(value, torch.Tensor)
                else value
            )
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise damaged(field, f"does not fit this run ({type(exc).__name__})") from None
    return epoch + 1, trace, metrics


def _json_field(ckpt: dict, field: str, kind: type, damaged):
    text = ckpt.get(field)
    if not isinstance(text, str):
        raise damaged(field, "is missing or not JSON text")
    try:
        value = loads_strict(
            text
        )  # NaN, Infinity and oversized numbers refused, as in the run folder's files
    except (ValueError, RecursionError):
        raise damaged(field, "is not valid JSON") from None
    except FieldFault as fault:
        raise damaged(field, f"holds {fault.args[0]}, not {fault.args[1]}") from None
    if not isinstance(value, kind):
        raise damaged(field, f"is not a JSON {kind.__name__}")
    return value


def _checked_trace(ckpt: dict, epochs: int, num_classes: int, num_samples: int, damaged) -> Trace:
    """The checkpoint's trace after ``epochs`` epochs, its shapes checked (``_check_trace``)."""
    trace = _steps_of_older(_arrays(ckpt.get("trace")), num_classes, damaged)
    _check_trace(trace, epochs, num_classes, num_samples, damaged)
    return Trace.from_dict(trace)


def _check_trace(trace, epochs: int, num_classes: int, num_samples: int, damaged) -> None:
    """The trace's shape: one learning rate and one number of steps per epoch; initial PEM weights (K, C, D) or None,
    and the replay's heads and momentum buffers of the same shapes; the last epoch's samples as indices into the
    training set."""
    if not isinstance(trace, dict) or not {
        "lrs",
        "steps",
        "init_weight",
        "init_bias",
        "replay",
        "stream",
    } <= set(trace):
        raise damaged("trace", "is missing or incomplete")
    lrs, steps = trace["lrs"], trace["steps"]
    if not (
        isinstance(lrs, list)
        and len(lrs) == epochs
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in lrs)
    ):
        raise damaged("trace.lrs", f"are not {epochs} finite learning rates")
    if not (
        isinstance(steps, list)
        and len(steps) == epochs
        and all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in steps)
    ):
        raise damaged("trace.steps", f"are not {epochs} positive step counts")
    weight, bias = trace["init_weight"], trace["init_bias"]
    if weight is not None and not (
        isinstance(weight, np.ndarray)
        and weight.ndim == 3
        and weight.shape[1] == num_classes
        and isinstance(bias, np.ndarray)
        and bias.shape == weight.shape[:2]
        and weight.dtype.kind == bias.dtype.kind == "f"
        and np.all(np.isfinite(weight))
        and np.all(np.isfinite(bias))
    ):
        raise damaged("trace.init_weight", "does not match the PEM")
    replay = trace["replay"]
    if weight is not None and replay is None:
        raise damaged("trace.replay", "is missing for a linear PEM that has trained")
    if replay is not None and not (
        weight is not None
        and isinstance(replay, dict)
        and all(
            isinstance(replay.get(k), np.ndarray)
            and replay[k].shape == shape
            and replay[k].dtype.kind == "f"
            and np.all(np.isfinite(replay[k]))
            for k, shape in (
                ("weight", weight.shape),
                ("bias", bias.shape),
                ("velocity_weight", weight.shape),
                ("velocity_bias", bias.shape),
            )
        )
    ):
        raise damaged("trace.replay", "is not the PEM's replayed heads and momentum buffers")
    stream = trace["stream"]
    if not (
        isinstance(stream, dict)
        and isinstance(stream.get("counts"), np.ndarray)
        and stream["counts"].shape == (num_classes,)
        and stream["counts"].dtype.kind in "fiu"
        and np.all(np.isfinite(stream["counts"]))
        and np.all(stream["counts"] >= 0)
    ):
        raise damaged("trace.stream", "is not this run's class counts")
    index = None if stream is None else stream.get("index")
    if index is not None and not (
        isinstance(index, np.ndarray)
        and index.ndim == 1
        and index.dtype.kind in "iu"
        and (index.size == 0 or (index.min() >= 0 and index.max() < num_samples))
        and np.unique(index).size == index.size
    ):  # a draw without replacement
        raise damaged(
            "trace.stream.index", f"is not a list of distinct training samples in [0, {num_samples})"
        )
