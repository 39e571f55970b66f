"""Writing results that a person and a program can both read."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a sibling temporary path, then rename it over ``path``.

    A reader (or a resumed run) never sees half a file; folders are made as needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def write_json(path, payload, indent: int = 1) -> Path:
    """``payload`` as JSON, written atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=indent) + "\n"))


def write_csv(path, rows: list[dict]) -> Path:
    """Rows of equal keys as CSV with a header line, written atomically."""
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, write)


def read_array(path, label: str, required: bool = True):
    """``np.load(path)`` without pickles; None when absent and not ``required``. Failures raise ValueError
    starting with ``label`` (the argument or file the user named), never a NumPy traceback."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise ValueError(f"{label}: no file {path}")
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ValueError(f"{label}: {path} is not a NumPy array file ({reason})") from None
