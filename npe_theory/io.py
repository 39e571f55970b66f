"""Writing results that a person and a program can both read."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a sibling temporary path, then rename it over ``path``.

    A reader (or a resumed run) never sees half a file; folders are made as needed. On failure (a full
    disk, a read-only folder) the old ``path`` stays as it was and the partial temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
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
        raise InputError(f"{label}: cannot write {path}: {blocker} is a file, not a folder")
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{label}: {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise InputError(f"{label}: {path} is a folder, not a file")


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


MAX_TEXT_BYTES = 16 << 20  # a config, settings, counts or results file; far larger ones are not ours
MAX_ARRAY_BYTES = 8 << 30  # one .npy file loaded into memory


def memory_budget() -> int:
    """Bytes one data set may take in memory: ``MAX_ARRAY_BYTES``, or the machine's available memory when that is
    less (Linux: MemAvailable of /proc/meminfo; elsewhere the physical memory)."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = MAX_ARRAY_BYTES
    return min(MAX_ARRAY_BYTES, available)


def check_memory(label: str, nbytes: int, what: str) -> None:
    """Refuse, before allocating, work whose arrays would take more than ``memory_budget()``: InputError naming
    ``label`` and what would not fit."""
    budget = memory_budget()
    if nbytes > budget:
        raise InputError(
            f"{label}: {what} would take {nbytes / 2**30:.1f} GiB, more than the {budget / 2**30:.1f} GiB available "
            f"for it (smaller images, fewer samples or a machine with more memory)"
        )


def open_regular(path, label: str, limit: int | None = None, error=InputError):
    """``path`` opened for reading in binary, only if it is a regular file (at most ``limit`` bytes when given).

    Opened with O_NONBLOCK and checked by fstat on the open descriptor, so a FIFO, a device or a socket is refused
    without blocking (opening a FIFO for reading otherwise waits for a writer forever) and the check is of the file
    actually read. ``error`` (InputError or a subclass) starting with ``label`` for anything else."""
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{label}: no file {path}") from None
    except IsADirectoryError:
        raise error(f"{label}: {path} is a folder, not a file") from None
    except OSError as exc:
        raise error(f"{label}: cannot read {path} ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{label}: {path} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{label}: {path} is not a regular file (a FIFO, device or socket is not read)")
        if limit is not None and info.st_size > limit:
            raise error(f"{label}: {path} is {info.st_size} bytes, more than the {limit} this file may hold")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path, label: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a small regular file, its size checked before reading (``/dev/zero`` or a FIFO is
    refused, not read forever). InputError starting with ``label`` when absent, a folder, too large or not text."""
    path = Path(path)
    try:
        with open_regular(path, label, limit) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path} ({exc.strerror})") from None
    if len(data) > limit:
        raise InputError(f"{label}: {path} is more than the {limit} bytes this file may hold")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{label}: {path} is not UTF-8 text") from None


def read_json(path, label: str, limit: int = MAX_TEXT_BYTES):
    """``json.loads`` of ``read_text``: InputError naming ``label`` for bad or absurdly nested JSON."""
    path = Path(path)
    try:
        return json.loads(read_text(path, label, limit))
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: {path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"{label}: {path} is nested too deeply to be ours") from None


def read_toml_table(path, label: str, table: str) -> dict:
    """The settings of a small TOML file: its ``[table]`` when present, else the whole file; InputError naming
    ``label`` for bad TOML or a ``table`` key that is not a table."""
    import tomllib

    try:
        raw = tomllib.loads(read_text(path, label))
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise InputError(f"{label}: {path} is not valid TOML ({exc.__class__.__name__}: {exc})") from None
    raw = raw.get(table, raw)
    if not isinstance(raw, dict):
        raise InputError(f"{label}: [{table}] in {path} must be a table of settings")
    return raw


def _npy_header(fh, path: Path, label: str, limit: int):
    """(shape, dtype) from a .npy header, checked against the file's real size and ``limit`` before any allocation."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(fh, max_header_size=10000)
    offset = fh.tell()
    if dtype.hasobject:
        raise InputError(f"{label}: {path} holds Python objects, not numbers (not loaded)")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    available = path.stat().st_size - offset
    if claimed > limit:
        raise InputError(f"{label}: {path} claims {claimed} bytes of data, more than the {limit} allowed")
    if claimed > available:
        raise InputError(
            f"{label}: {path} claims shape {shape} ({claimed} bytes) but holds {available} (a truncated or forged file)"
        )
    return shape, dtype


def read_array(path, label: str, required: bool = True, limit: int = MAX_ARRAY_BYTES):
    """``np.load(path)`` without pickles, its header checked first (no allocation beyond what the file holds);
    None when absent and not ``required``. Failures raise InputError starting with ``label`` (the argument or
    file the user named), never a NumPy traceback."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        if required:
            raise InputError(f"{label}: no file {path}")
        return None
    try:
        with open_regular(path, label) as fh:  # a FIFO or a device in its place is refused, not read
            _npy_header(fh, path, label, limit)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError, MemoryError) as exc:
        if isinstance(exc, InputError):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InputError(f"{label}: {path} is not a NumPy array file ({reason})") from None
