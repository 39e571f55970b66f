"""Mixing methods as the training loop uses them: none, or UniMix (``unimix.py``), each one object.

A mixing object pairs the positions of an epoch before it starts (``pair``) and turns an epoch's
shard into batches with their loss terms (``batches``); the loop never asks which one it has.
Imports: torch and ``unimix.py``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from .unimix import mix_batch


class Mixing(Protocol):
    """The contract the loop relies on (``NoMixing`` is the plain case)."""

    def pair(
        self, labels: np.ndarray, counts, local_batch: int, world: int, gen: torch.Generator, epoch: int
    ): ...

    def batches(self, feed, plan, local: int): ...


class NoMixing:
    """Every sample alone: one loss term per batch, ``(y, None)``."""

    def pair(
        self, labels: np.ndarray, counts, local_batch: int, world: int, gen: torch.Generator, epoch: int
    ):
        """(partner positions, share of the sample's own label) for the epoch's padded order, or None: no mixing."""
        return None

    def batches(self, feed, plan, local: int):
        """(x, loss terms) per local batch of ``plan``'s shard, fetched through ``feed``."""
        for x, y in feed.epoch(plan.shard, plan.draws, local):
            yield x, [(y, None)]


class UniMixing(NoMixing):
    """UniMix with Beta(``a``, ``a``) and partner exponent ``tau``, in epochs before ``until`` (None: every epoch)."""

    def __init__(self, a: float, tau: float, until: int | None = None):
        self.a, self.tau, self.until = a, tau, until

    def active(self, epoch: int) -> bool:
        return self.until is None or epoch < self.until

    def pair(self, labels, counts, local_batch, world, gen, epoch):
        """Each rank mixes within its own local batches: rank r's batches are positions r, r + world, ... in runs of
        ``local_batch``. The factors are kept as the float32 values the steps use."""
        if not self.active(epoch):
            return None
        padded = len(labels)
        weight, partner_pos = np.ones(padded), np.arange(padded)
        count_t = torch.as_tensor(counts, dtype=torch.float64)
        for r in range(world):
            mine = np.arange(r, padded, world)
            for i in range(0, len(mine), local_batch):
                pos = mine[i : i + local_batch]
                partner, xi = mix_batch(labels[pos], count_t, self.tau, self.a, gen)
                partner_pos[pos], weight[pos] = pos[partner], xi.astype(np.float32)
        return partner_pos, weight

    def batches(self, feed, plan, local: int):
        """Each local batch followed by its partners, fetched as one batch of twice the size, split and mixed:
        x = xi x_i + (1 - xi) x_j, terms (y, xi) and (y2, 1 - xi)."""
        if plan.partner is None:
            yield from super().batches(feed, plan, local)
            return
        chunks = [
            (plan.shard[i : i + local], plan.partner[i : i + local]) for i in range(0, len(plan.shard), local)
        ]
        both = torch.cat([torch.cat(c) for c in chunks])
        both_draws = None
        if plan.draws is not None:
            both_draws = torch.cat(
                [
                    torch.cat([plan.draws[i : i + local], plan.partner_draws[i : i + local]])
                    for i in range(0, len(plan.shard), local)
                ]
            )
        sizes = [2 * len(c[0]) for c in chunks]
        start = 0
        for (x, y), size in zip(feed.epoch(both, both_draws, 2 * local), sizes):
            half = size // 2
            xi = plan.xi[start // 2 : start // 2 + half].to(x.device)
            start += size
            shape = (-1, *([1] * (x.dim() - 1)))
            yield (
                xi.view(shape) * x[:half] + (1 - xi).view(shape) * x[half:],
                [(y[:half], xi), (y[half:], 1 - xi)],
            )
