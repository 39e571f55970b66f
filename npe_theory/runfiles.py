"""The files of a run folder read back: one validator per file type, so no reader can skip the checks.

``read_results_file`` (results.json), ``read_config_file`` (config.json) and ``read_metrics_file``
(metrics.jsonl) parse strictly and check every field a reader of ours formats or computes with: a tampered,
foreign or partial file is one ``InputError`` naming the file and the field, never a traceback, a silent NaN
or a boolean taken for a number. ``check_metrics_lines`` is the metrics check on its own (the checkpoint
holds the same lines). The checkpoint's reader lives beside its writer (``npe_train/run/checkpoint.py``).
No torch: ``npe priors --from RUN`` reads results.json on the base install. docs/reliability.md lists the checks.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError
from .io import read_text
from .validate import MAX_CLASSES

SCHEMA = "npe-run/2"
REQUIRED = ("config", "counts", "epochs", "accuracy", "pem")
MAX_COUNT = 1e15  # samples of one class; far beyond any data set (a count near the float range is not ours)
MAX_INT = 2**63  # npe writes no integer beyond int64; a larger one is not ours (and would overflow NumPy)
MAX_METRICS_LINES = 10**7  # an epoch each (TrainConfig bounds the epochs there)
MAX_METRICS_BYTES = 1 << 30  # per-class lists at 10^5 classes; far beyond any run of ours


class FieldFault(Exception):
    """A field that fails its check: ``args = (field, what it should be)``; the readers turn it into an InputError
    naming the file (the checkpoint's reader names the checkpoint)."""


def strict_json(path, label: str):
    """``json.loads`` that refuses what npe never writes: NaN, Infinity, numbers beyond the float64 range and
    integers beyond int64 (a tampered file, not a run of ours)."""
    path = Path(path)
    return _parse(read_text(path, label), path, label)


def loads_strict(text: str):
    """``json.loads`` refusing NaN, Infinity, numbers beyond float64 and integers beyond int64 (FieldFault);
    JSONDecodeError and RecursionError as json raises them."""

    def constant(name):
        raise FieldFault(name, "a number npe writes (it never writes NaN or Infinity)")

    def integer(digits):
        if len(digits) > 20 or abs(int(digits)) >= MAX_INT:
            raise FieldFault(digits[:20] + ("..." if len(digits) > 20 else ""), "an integer below 2^63")
        return int(digits)

    def number(text):
        value = float(text)
        if not math.isfinite(value):
            raise FieldFault(text[:20], "a number within the float64 range")
        return value

    return json.loads(text, parse_constant=constant, parse_int=integer, parse_float=number)


def _parse(text: str, path: Path, label: str):
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: {path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{label}: {path} is nested too deeply to be ours") from None
    except FieldFault as fault:
        raise InputError(
            f"{label}: {path} holds {fault.args[0]}, not {fault.args[1]} (the file was changed)"
        ) from None


# -- field checks: each returns the value or raises FieldFault(field, what it should be) --------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(obj: dict, key: str, field: str, *, low=None, above=None, none=False):
    """obj[key] as a finite number (not a boolean) >= low / > above; None passes when ``none``."""
    v = obj.get(key)
    if v is None and none:
        return None
    if not _is_number(v) or (low is not None and v < low) or (above is not None and not v > above):
        bound = f" >= {low:g}" if low is not None else f" > {above:g}" if above is not None else ""
        raise FieldFault(field, f"a number{bound}" + (" or null" if none else ""))
    return v


def integer(obj: dict, key: str, field: str, *, low: int = 0, none: bool = False):
    v = obj.get(key)
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise FieldFault(field, f"an integer >= {low}" + (" or null" if none else ""))
    return v


def name(obj: dict, key: str, field: str, *, none: bool = False):
    v = obj.get(key)
    if (v is None and none) or (isinstance(v, str) and v):
        return v
    raise FieldFault(field, "a name (a non-empty string)")


def table(obj: dict, key: str, field: str) -> dict:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise FieldFault(field, "an object")
    return v


def numbers(
    value, field: str, *, length: int | None = None, low=None, above=None, none: bool = False
) -> list:
    """A flat list of finite numbers (None entries too when ``none``), of ``length`` when given."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise FieldFault(
            field, "a list of numbers" + (f" (one per class: {length})" if length is not None else "")
        )
    for v in value:
        if v is None and none:
            continue
        if not _is_number(v) or (low is not None and v < low) or (above is not None and not v > above):
            bound = f" >= {low:g}" if low is not None else f" > {above:g}" if above is not None else ""
            raise FieldFault(field, f"a list of numbers{bound}")
    return value


@contextmanager
def _faults_named(path: Path, label: str):
    """Turn a FieldFault into one InputError line naming the file and the field."""
    try:
        yield
    except FieldFault as fault:
        field, want = fault.args
        raise InputError(
            f"{label}: {path}: {field} is not {want} (the file was changed, damaged or written by another program)"
        ) from None


# -- config.json ----------------------------------------------------------------------------------------------------


def check_config(cfg, field: str = "config") -> dict:
    """A run's settings: an object of JSON scalars and flat lists, with the fields the readers use typed. The full
    check of every setting is ``TrainConfig.validate`` (npe_train), which ``npe eval`` and ``--resume`` also run."""
    if not isinstance(cfg, dict):
        raise FieldFault(field, "an object of settings")
    for key, v in cfg.items():
        leaf = v is None or isinstance(v, (str, int, float))
        flat = isinstance(v, list) and all(x is None or isinstance(x, (str, int, float)) for x in v)
        if not (leaf or flat):
            raise FieldFault(f"{field}.{key}", "a setting (a number, name, true/false, null or a flat list)")
    name(cfg, "dataset", f"{field}.dataset")
    name(cfg, "method", f"{field}.method")
    name(cfg, "pem_loss", f"{field}.pem_loss", none=True)
    number(cfg, "imbalance", f"{field}.imbalance", low=1)
    integer(cfg, "seed", f"{field}.seed")
    integer(cfg, "epochs", f"{field}.epochs", low=1, none=True)
    integer(cfg, "batch_size", f"{field}.batch_size", low=1, none=True)
    number(cfg, "weight_decay", f"{field}.weight_decay", low=0, none=True)
    number(cfg, "pem_weight_decay", f"{field}.pem_weight_decay", above=0, none=True)
    number(cfg, "alpha", f"{field}.alpha", above=0, none=True)
    number(cfg, "tau", f"{field}.tau", low=0, none=True)
    return cfg


def read_config_file(path, label: str) -> dict:
    """config.json of a run folder, parsed strictly and checked (``check_config``)."""
    path = Path(path)
    raw = strict_json(path, label)
    with _faults_named(path, label):
        return check_config(raw, "config.json")


# -- results.json ---------------------------------------------------------------------------------------------------


def check_results(raw) -> dict:
    """Every field of results.json a reader formats or computes with (``read_results_file``)."""
    if not isinstance(raw, dict):
        raise FieldFault("the file", "a run's results (a JSON object)")
    schema = raw.get("schema")
    if schema is not None and schema != SCHEMA:
        raise FieldFault("schema", f"{SCHEMA!r} (the version this one reads)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise FieldFault("the file", f"a finished run's results (it lacks {', '.join(missing)})")
    check_config(raw["config"])
    integer(raw, "epochs", "epochs", low=1)
    counts = raw["counts"]
    if not isinstance(counts, list) or not 2 <= len(counts) <= MAX_CLASSES:
        raise FieldFault("counts", f"a list of 2 to {MAX_CLASSES} class counts")
    numbers(counts, "counts", above=0)
    if max(counts) > MAX_COUNT:
        raise FieldFault(
            "counts", f"a list of class counts up to {MAX_COUNT:g} (more samples than any data set)"
        )
    C = len(counts)
    accuracy = table(raw, "accuracy", "accuracy")
    for rule, groups in accuracy.items():
        if not isinstance(groups, dict):
            raise FieldFault(f"accuracy.{rule}", "a table of accuracies")
        for group, v in groups.items():
            if group == "per_class":
                numbers(v, f"accuracy.{rule}.per_class", length=C, low=0, none=True)
            else:
                number(groups, group, f"accuracy.{rule}.{group}", low=0, none=True)
    calibration = raw.get("calibration", {})
    if not isinstance(calibration, dict):
        raise FieldFault("calibration", "a table of ECE values")
    for rule, v in calibration.items():
        if not isinstance(v, dict):
            raise FieldFault(f"calibration.{rule}", "a table of ECE values")
        number(v, "ece", f"calibration.{rule}.ece", low=0)
    pem = table(raw, "pem", "pem")
    for key in ("lambda_s", "nc1"):
        number(pem, key, f"pem.{key}", low=0, none=True)
    if "regime" in pem:
        name(pem, "regime", "pem.regime")
    for key in ("learned", "predicted", "equilibrium", "implied_log_prior", "learned_eval"):
        if pem.get(key) is not None:
            numbers(pem[key], f"pem.{key}", length=C)
    if pem.get("mean_norm_sq") is not None:
        numbers(pem["mean_norm_sq"], "pem.mean_norm_sq", length=C, low=0)
    matches = table(pem, "prior_match", "pem.prior_match")
    if not isinstance(matches.get("vs_log_counts"), dict):
        raise FieldFault("pem.prior_match.vs_log_counts", "a match table")
    for ref, m in matches.items():
        if not isinstance(m, dict):
            raise FieldFault(f"pem.prior_match.{ref}", "a match table")
        number(m, "centered_rmse", f"pem.prior_match.{ref}.centered_rmse", low=0)
        number(m, "slope", f"pem.prior_match.{ref}.slope", none=True)
    priors = raw.get("priors")
    if priors is not None:
        if not isinstance(priors, dict):
            raise FieldFault("priors", "an object of prior vectors")
        for key, v in priors.items():
            if v is not None:
                numbers(v, f"priors.{key}", length=C, above=0 if key == "counts" else None)
    best = (raw.get("advice") or {}).get("best") if isinstance(raw.get("advice"), dict) else None
    if raw.get("advice") is not None and not isinstance(raw.get("advice"), dict):
        raise FieldFault("advice", "an object")
    if best is not None:
        if not isinstance(best, dict):
            raise FieldFault("advice.best", "a rule and its tau")
        name(best, "rule", "advice.best.rule")
        number(best, "tau", "advice.best.tau", low=0)
    return raw


def read_results_file(path, label: str) -> dict:
    """results.json of a finished run, parsed strictly and checked (``check_results``); ``label`` names the argument
    that pointed at it (RUN_DIR, --from)."""
    path = Path(path)
    raw = strict_json(path, label)
    with _faults_named(path, label):
        return check_results(raw)


# -- metrics.jsonl --------------------------------------------------------------------------------------------------


def _metric_value(v, field: str) -> None:
    if v is None or isinstance(v, str) or _is_number(v):
        return
    if isinstance(v, list):
        numbers(v, field, none=True)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            _metric_value(x, f"{field}.{k}")
        return
    raise FieldFault(field, "a number, a name, a list of numbers or a table of them")


def check_metrics_lines(lines, field: str = "metrics") -> list[dict]:
    """One object per epoch, epochs 0, 1, 2, ... in order, every value a number, name, list of numbers or a table of
    them (booleans are not numbers)."""
    if not isinstance(lines, list) or len(lines) > MAX_METRICS_LINES:
        raise FieldFault(field, f"a list of at most {MAX_METRICS_LINES} epoch lines")
    for i, m in enumerate(lines):
        if not isinstance(m, dict) or m.get("epoch") != i or isinstance(m.get("epoch"), bool):
            raise FieldFault(f"{field} line {i + 1}", f"the line of epoch {i} (an object with epoch {i})")
        for key, v in m.items():
            _metric_value(v, f"{field} line {i + 1}: {key}")
    return lines


def read_metrics_file(path, label: str) -> list[dict]:
    """metrics.jsonl: one JSON object per line (blank lines skipped), parsed strictly and checked."""
    path = Path(path)
    text = read_text(path, label, limit=MAX_METRICS_BYTES)
    lines = [_parse(line, path, label) for line in text.splitlines() if line.strip()]
    with _faults_named(path, label):
        return check_metrics_lines(lines, "metrics.jsonl")
