"""What the loop trains on over time: the whole training set every epoch, or a shifting class stream drawn from a pool
(docs/adaptation.md). The loop asks a stream for the epoch's counts and samples and, at the end, for what it adds to
results.json; it never asks which kind it has. Imports: NumPy, torch, ``data/``, ``methods/`` and the rest of ``tasks/``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from npe_theory.errors import InputError

from ..data.stream import Shift, draw_stream, pool_by_class, stale_counts, stream_counts
from ..methods.trace import PemRecipe, Trace
from .adaptation import adaptation_report
from .base import Now


class Stream(Protocol):
    """The contract the loop relies on (``FixedStream`` is the plain case)."""

    def samples_at(self, epoch: int) -> int: ...

    def counts_at(self, epoch: int) -> np.ndarray: ...

    def draw(self, gen: torch.Generator, epoch: int) -> np.ndarray | None: ...

    def now(self, epoch: int, trace: Trace) -> Now: ...

    def results(self, metrics: list[dict]) -> dict: ...


class FixedStream:
    """Every epoch trains on the whole training set: ``num_samples`` samples whose class counts are ``counts``."""

    def __init__(self, counts: np.ndarray, num_samples: int):
        self.counts, self.num_samples = counts, num_samples

    def samples_at(self, epoch: int) -> int:
        """The number of samples the epoch trains on."""
        return self.num_samples

    def counts_at(self, epoch: int) -> np.ndarray:
        return self.counts

    def stale_at(self, epoch: int) -> np.ndarray | None:
        return None

    def draw(self, gen: torch.Generator, epoch: int) -> np.ndarray | None:
        """The epoch's samples: None, all of them (no draw is made from ``gen``)."""
        return None

    def now(self, epoch: int, trace: Trace) -> Now:
        """The stream at ``epoch`` as an evaluation reads it; ``trace.stream``: the last epoch's samples and effective
        counts."""
        last = trace.stream or {}
        return Now(self.counts_at(epoch), last.get("counts"), last.get("index"), self.stale_at(epoch))

    def results(self, metrics: list[dict]) -> dict:
        return {}


class ShiftingStream(FixedStream):
    """A stream that follows ``profile`` at ``imbalance`` and switches at each of ``shifts``; every epoch draws its
    counts without replacement from a pool of ``n_max`` samples per class (``pool_labels``: the pool's labels).
    ``recipe`` and ``batch_size`` drive the finite-time model of how fast the PEM follows each shift."""

    def __init__(
        self,
        profile: str,
        imbalance: float,
        shifts: list[Shift],
        pool_labels: np.ndarray,
        num_classes: int,
        recipe: PemRecipe,
        batch_size: int,
    ):
        pool_counts = np.bincount(pool_labels, minlength=num_classes)
        self.profile, self.imbalance, self.shifts, self.num_classes = profile, imbalance, shifts, num_classes
        self.n_max, self.recipe, self.batch_size, self.pool_counts = (
            int(pool_counts.max()),
            recipe,
            batch_size,
            pool_counts,
        )
        self.pool = pool_by_class(pool_labels, num_classes)
        for epoch in [0] + [
            s.epoch for s in shifts
        ]:  # every profile of the stream must fit the pool, before a folder is made
            try:
                self.counts_at(epoch)
            except InputError as exc:
                raise InputError(
                    f"shift: the stream of epoch {epoch} does not fit the pool ({exc})"
                ) from None

    def samples_at(self, epoch: int) -> int:
        return int(self.counts_at(epoch).sum())

    def counts_at(self, epoch: int) -> np.ndarray:
        return stream_counts(self.profile, self.imbalance, self.shifts, epoch, self.num_classes, self.n_max)

    def stale_at(self, epoch: int) -> np.ndarray | None:
        return stale_counts(self.profile, self.imbalance, self.shifts, epoch, self.num_classes, self.n_max)

    def draw(self, gen: torch.Generator, epoch: int) -> np.ndarray:
        """The epoch's sample indices: ``counts_at(epoch)[c]`` of class c's pool, drawn by ``gen``."""
        return draw_stream(gen, self.pool, self.counts_at(epoch))

    def results(self, metrics: list[dict]) -> dict:
        """results.json's ``stream`` (pool counts, shifts, counts per epoch), ``adaptation`` and ``adaptation_series``."""
        adaptation = adaptation_report(metrics, self.shifts, self.recipe, self.batch_size)
        return {
            "stream": {
                "pool_counts": self.pool_counts.tolist(),
                "shifts": [str(s) for s in self.shifts],
                "counts_per_epoch": [self.counts_at(e).tolist() for e in range(len(metrics))],
            },
            "adaptation": adaptation["shifts"],
            "adaptation_series": adaptation["series"],
        }
