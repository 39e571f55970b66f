"""One run folder, one owner: an exclusive lock that a killed process cannot leave behind.

The lock is an advisory ``flock`` on ``OUT/.lock``; the kernel drops it when the process exits,
however it exits (SIGKILL included), so a stale lock file is harmless. A second run into the
same folder while the first is alive is refused. A fresh run (no ``--resume``) into a folder that
already holds a run's files is refused too, so a new config never sits beside an old
``results.json`` (docs/reliability.md).
Imports: ``npe_theory``, ``methods/trace.py`` and the rest of ``run/``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.io import ensure_folder, write_json

RUN_FILES = ("checkpoint.safetensors", "checkpoint.pt", "results.json", "metrics.jsonl")
last_claimed: Path | None = None  # the folder this process last held: where the command line puts a crash log


@contextmanager
def claim(out: Path, owner: bool = True):
    """Hold ``out`` for this process for the duration of the block (a no-op for ranks that do not write)."""
    if not owner:
        yield
        return
    import fcntl

    ensure_folder(out)
    fd = os.open(out / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(
                f"out: {out} is in use by another run (process {holder}); wait for it or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        global last_claimed
        last_claimed = out
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_fresh(out: Path, resuming: dict | None = None) -> None:
    """Refuse to start a new run where another run's files are (resuming is the way to continue one).

    ``resuming``: the identity (settings less the folder) of a run asked to resume that has no checkpoint
    yet. A folder killed before its first checkpoint holds only ``config.json`` and an empty
    ``metrics.jsonl``; when that config is this run's, the run starts over there.
    """
    found = [name for name in RUN_FILES if (out / name).exists()]
    if resuming is not None and found == ["metrics.jsonl"] and (out / "metrics.jsonl").stat().st_size == 0:
        from npe_theory.runfiles import read_config_file

        from .checkpoint import identity

        try:
            saved = read_config_file(out / "config.json", "resume")
        except InputError:
            saved = None
        if isinstance(saved, dict) and identity(saved) == resuming:
            return
        raise InputError(
            f"resume: {out} holds the start of another run (its config.json differs or is unreadable); "
            f"choose another --out"
        )
    if found:
        raise InputError(
            f"out: {out} already holds a run ({', '.join(found)}); continue it with --resume, "
            f"or choose another --out"
        )


def open_run(
    out: Path, cfg, parts, device, resume: bool, main: bool, num_classes: int, num_samples: int
) -> tuple[int, dict, list[dict]]:
    """(first epoch, PEM trace, metrics lines): from the checkpoint when resuming, else fresh in a folder holding no
    other run (or, with ``resume``, one killed before its first checkpoint: it starts over). Writes config.json and
    the metrics so far."""
    from ..methods.trace import Trace
    from .checkpoint import checkpoint_in, identity, load_checkpoint
    from .metrics import write_metrics

    start, trace, metrics = 0, Trace.start(parts.model), []
    saved = checkpoint_in(out) if resume else None
    if saved is not None:
        start, trace, metrics = load_checkpoint(saved, cfg, parts, device, num_classes, num_samples)
    elif main:
        check_fresh(out, identity(asdict(cfg)) if resume else None)
    if main:
        write_metrics(out, metrics)
        write_json(out / "config.json", asdict(cfg))
    return start, trace, metrics
