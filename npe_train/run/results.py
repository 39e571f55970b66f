"""``results.json``: its schema version, what it records about the machine, and the one typed reader.

``npe compare``, ``npe sweep``, ``npe eval`` and the plots all read runs through ``read_results``, whose checks are
``npe_theory.runfiles``' (shared with ``npe priors --from``): a foreign, partial or tampered file is refused in one
place, with one clear message.
Imports: ``npe_theory`` only.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.runfiles import SCHEMA, read_config_file, read_results_file

__all__ = ["SCHEMA", "RunResults", "environment", "read_results"]


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
    """Read ``RUN/results.json`` (or a results.json path), checked by ``npe_theory.runfiles``; InputError naming the
    file and the field when it is not a finished run of ours, or when its config.json belongs to another run."""
    path = Path(run)
    path = path / "results.json" if path.is_dir() or not path.suffix else path
    if not path.is_file():
        raise InputError(f"RUN_DIR: no results.json in {path.parent} (a finished run writes it)")
    raw = read_results_file(path, "RUN_DIR")
    config_path = path.with_name("config.json")
    if config_path.exists():
        config = read_config_file(config_path, "RUN_DIR")
        if config != raw["config"]:
            raise InputError(
                f"RUN_DIR: {path.parent} mixes two runs (results.json and config.json have other settings)"
            )
    return RunResults(path, raw["config"], raw["counts"], raw["accuracy"], raw["pem"], raw)
