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
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {why(path, exc)}") from None
    return path


def ensure_folder(folder) -> Path:
    """``mkdir -p``; an OSError whose message names the folder and says what is in the way."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot make folder {folder}: {why(folder / '_', exc)}") from None
    return folder


def check_writable(label: str, path, folder: bool = False) -> None:
    """Fail early, before long work, when ``path`` cannot become a file (or a folder): ValueError naming ``label``."""
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise ValueError(f"{label}: cannot write {path}: {blocker} is a file, not a folder")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{label}: {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise ValueError(f"{label}: {path} is a folder, not a file")


def why(path: Path, exc: OSError) -> str:
    """A reason a person can act on: a file standing where a folder is needed, a folder where a file goes."""
    blocker = _file_in_the_way(path)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    if path.is_dir():
        return f"{path} is a folder"
    return exc.strerror or str(exc)


def _file_in_the_way(path: Path) -> Path | None:
    """The first ancestor of ``path`` that exists but is not a folder (so nothing can be made below it)."""
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


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
