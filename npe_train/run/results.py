"""``results.json``: its schema version, what it records about the machine, and the one typed reader.

``npe compare``, ``npe sweep`` and the plots all read runs through ``read_results``, so a
foreign, partial or older file is refused in one place, with one clear message.
Imports: ``npe_theory`` only.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.io import read_json

SCHEMA = "npe-run/2"
REQUIRED = ("config", "counts", "epochs", "accuracy", "pem")


def environment() -> dict:
    """What a bit-for-bit rerun needs besides the config: versions, device, thread count."""
    import numpy
    import torch

    return {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


@dataclass(frozen=True)
class RunResults:
    """A finished run as ``npe train`` wrote it; ``raw`` is the whole file."""

    path: Path
    config: dict
    counts: list
    accuracy: dict
    pem: dict
    raw: dict

    @property
    def name(self) -> str:
        return self.path.parent.name

    def accuracy_of(self, rule: str, group: str = "overall"):
        """Mean per-class accuracy of a rule and group; None when the run has no such rule (an older run) or group."""
        return self.accuracy.get(rule, {}).get(group)

    def prior_rmse(self, reference: str):
        m = self.pem["prior_match"].get(reference)
        return None if m is None else m["centered_rmse"]


def read_results(run) -> RunResults:
    """Read ``RUN/results.json`` (or a results.json path); ValueError naming the file when it is not a finished run."""
    path = Path(run)
    path = path / "results.json" if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise InputError(f"RUN_DIR: no results.json in {path.parent} (a finished run writes it)")
    raw = read_json(path, "RUN_DIR")
    if not isinstance(raw, dict):
        raise InputError(f"RUN_DIR: {path} is not a run's results (expected a JSON object)")
    schema = raw.get("schema")
    if schema is not None and schema != SCHEMA:
        raise InputError(f"RUN_DIR: {path} has schema {schema!r}; this version reads {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise InputError(f"RUN_DIR: {path} is not a finished run's results (missing {', '.join(missing)})")
    if (
        not isinstance(raw["pem"], dict)
        or "prior_match" not in raw["pem"]
        or not isinstance(raw["accuracy"], dict)
    ):
        raise InputError(f"RUN_DIR: {path} has no prior report or accuracy table")
    _check_fields(raw, path)
    config_path = path.with_name("config.json")
    if config_path.is_file():
        config = read_json(config_path, "RUN_DIR")
        if config != raw["config"]:
            raise InputError(
                f"RUN_DIR: {path.parent} mixes two runs (results.json and config.json have other settings)"
            )
    return RunResults(path, raw["config"], raw["counts"], raw["accuracy"], raw["pem"], raw)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _check_fields(raw: dict, path: Path) -> None:
    """Every field a reader formats has the type it needs: one line naming the file and the field, never a traceback."""

    def bad(field: str, want: str):
        raise InputError(f"RUN_DIR: {path}: {field} is not {want} (the file was changed or damaged)")

    cfg, pem = raw["config"], raw["pem"]
    if not isinstance(cfg, dict):
        bad("config", "an object of settings")
    for key, want, ok in (
        ("dataset", "a name", lambda v: isinstance(v, str)),
        ("method", "a name", lambda v: isinstance(v, str)),
        ("imbalance", "a number", _number),
        ("seed", "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    ):
        if not ok(cfg.get(key)):
            bad(f"config.{key}", want)
    if not isinstance(raw["epochs"], int) or isinstance(raw["epochs"], bool) or raw["epochs"] < 1:
        bad("epochs", "a positive integer")
    counts = raw["counts"]
    if not isinstance(counts, list) or len(counts) < 2 or not all(_number(c) and c > 0 for c in counts):
        bad("counts", "a list of positive class counts")
    for rule, table in raw["accuracy"].items():
        if not isinstance(table, dict) or not all(
            (isinstance(v, list) and all(x is None or _number(x) for x in v))
            if k == "per_class"
            else (v is None or _number(v))
            for k, v in table.items()
        ):
            bad(f"accuracy.{rule}", "a table of accuracies")
    calibration = raw.get("calibration", {})
    if not isinstance(calibration, dict) or not all(
        isinstance(v, dict) and _number(v.get("ece")) for v in calibration.values()
    ):
        bad("calibration", "a table of ECE values")
    for key in ("lambda_s", "nc1"):
        if pem.get(key) is not None and not _number(pem[key]):
            bad(f"pem.{key}", "a number")
    if "regime" in pem and not isinstance(pem["regime"], str):
        bad("pem.regime", "a name")
    matches = pem["prior_match"]
    if not isinstance(matches, dict) or not isinstance(matches.get("vs_log_counts"), dict):
        bad("pem.prior_match", "a table of references with vs_log_counts")
    for ref, m in matches.items():
        if (
            not isinstance(m, dict)
            or not _number(m.get("centered_rmse"))
            or not (m.get("slope") is None or _number(m["slope"]))
        ):
            bad(f"pem.prior_match.{ref}", "a match with a numeric centered_rmse and slope")
