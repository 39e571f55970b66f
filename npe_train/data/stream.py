"""A class distribution that changes during training: count profiles per epoch, drawn from a fixed pool (docs/adaptation.md).

``--shift EPOCH=PROFILE:IMBALANCE`` (repeatable) switches the stream at the start of EPOCH (0-based:
epoch 20 is the 21st) to the profile PROFILE (``exp``, ``step``, or ``reversed``: the exponential
profile with the class order reversed) at head-over-tail ratio IMBALANCE. Before the first shift
the stream follows the run's own ``profile`` and ``imbalance``. The pool holds ``n_max`` samples of
every class; each epoch draws its profile's counts from it without replacement, by the run's
seeded generator, so an epoch of the stream is a fresh long-tailed subset of one fixed pool.
Imports: NumPy, torch and ``npe_theory`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from npe_theory.errors import InputError
from npe_theory.priors import count_profile

STREAM_PROFILES = ("exp", "step", "reversed")
_SHIFT = re.compile(r"^\s*(\d+)\s*=\s*([a-z]+)\s*:\s*([0-9.eE+]+)\s*$")


@dataclass(frozen=True)
class Shift:
    epoch: int
    profile: str
    imbalance: float

    def __str__(self) -> str:
        return f"{self.epoch}={self.profile}:{self.imbalance:g}"


def parse_shift(entry: str, epochs: int) -> Shift:
    """``"EPOCH=PROFILE:IMBALANCE"`` -> Shift, with EPOCH in [1, epochs), PROFILE in STREAM_PROFILES, IMBALANCE >= 1."""
    m = _SHIFT.match(entry) if isinstance(entry, str) else None
    if m is None:
        raise InputError(f"shift: expected EPOCH=PROFILE:IMBALANCE (e.g. 20=reversed:100), got {entry!r}")
    epoch, profile = int(m.group(1)), m.group(2)
    try:
        imbalance = float(m.group(3))
    except ValueError:
        raise InputError(f"shift: imbalance {m.group(3)!r} in {entry!r} is not a number") from None
    if profile not in STREAM_PROFILES:
        raise InputError(
            f"shift: unknown profile {profile!r} in {entry!r}; choose from {', '.join(STREAM_PROFILES)}"
        )
    if not (np.isfinite(imbalance) and imbalance >= 1):
        raise InputError(f"shift: imbalance must be a number >= 1 in {entry!r}")
    if not 1 <= epoch < epochs:
        raise InputError(f"shift: epoch {epoch} in {entry!r} must lie in [1, epochs = {epochs})")
    return Shift(epoch, profile, imbalance)


def parse_schedule(entries, epochs: int) -> list[Shift]:
    """The shifts, sorted by epoch; two at one epoch are an error."""
    shifts = sorted((parse_shift(e, epochs) for e in entries), key=lambda s: s.epoch)
    for a, b in zip(shifts, shifts[1:]):
        if a.epoch == b.epoch:
            raise InputError(f"shift: two shifts at epoch {a.epoch} ({a} and {b})")
    return shifts


def profile_counts(profile: str, num_classes: int, n_max: int, imbalance: float) -> np.ndarray:
    """N_c of a stream profile: exp or step (head first), or reversed (the exp profile, tail first)."""
    counts = count_profile("exp" if profile == "reversed" else profile, num_classes, n_max, imbalance)
    return counts[::-1].copy() if profile == "reversed" else counts


def stream_counts(
    profile: str, imbalance: float, shifts: list[Shift], epoch: int, num_classes: int, n_max: int
) -> np.ndarray:
    """The class counts the stream draws in ``epoch``: the last shift at or before it, else the run's own profile."""
    current = [s for s in shifts if s.epoch <= epoch]
    if current:
        profile, imbalance = current[-1].profile, current[-1].imbalance
    return profile_counts(profile, num_classes, n_max, imbalance)


def stale_counts(
    profile: str, imbalance: float, shifts: list[Shift], epoch: int, num_classes: int, n_max: int
) -> np.ndarray | None:
    """The counts before the most recent shift at or before ``epoch`` (what a post-hoc rule fixed then would still use)."""
    current = [s for s in shifts if s.epoch <= epoch]
    if not current:
        return None
    return stream_counts(profile, imbalance, shifts, current[-1].epoch - 1, num_classes, n_max)


def pool_by_class(y: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The pool's sample indices of every class."""
    return [np.flatnonzero(y == c) for c in range(num_classes)]


def draw_stream(gen: torch.Generator, pool: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """One epoch's sample indices: counts[c] of class c's pool, without replacement, by ``gen``."""
    picks = []
    for members, n in zip(pool, counts):
        if n > len(members):
            raise InputError(
                f"shift: the stream asks for {n} samples of a class whose pool holds {len(members)}"
            )
        picks.append(members[torch.randperm(len(members), generator=gen)[: int(n)].numpy()])
    return np.concatenate(picks)
