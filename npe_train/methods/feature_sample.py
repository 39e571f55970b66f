"""The feature rows each training step gave the PEM, a few per class, gathered on the device for the replay.

The finite-time replay (docs/regimes.md) repeats the PEM's optimizer steps on the features the steps
produced. Features move within an epoch (most in the first), and a spread class is not its mean,
so the replay takes each step's own rows: per step and class at most ``size`` of them, chosen by a
hash of the row's position (pixels of one image are not all taken together, and no random generator
is drawn from, so training is unchanged). Rows stay on the device and cross to the host every
``FLUSH`` steps: one synchronization per ``FLUSH`` steps, not per step. Imports: torch only.
"""

from __future__ import annotations

import torch

BUDGET = 2**18  # feature values kept per step at most (rows x width), before a class is sampled down
MAX_ROWS = 64  # per class and step; a batch rarely holds more of one class
FLUSH = 16  # steps between transfers to the host
_NO_KEY = 2**32  # above every hash key: a row that is never taken
_MIX = 2654435761  # Knuth's multiplicative hash constant


def rows_per_class(num_classes: int, width: int) -> int:
    """Rows kept per class and step: min(64, 2^18 / (C D)), at least 2."""
    return max(2, min(MAX_ROWS, BUDGET // max(1, num_classes * width)))


def step_rows(h: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, size: int, num_classes: int):
    """(rows (m, D), labels (m,), weights (m,)), m = min(n, C * size): each class's ``size`` rows of smallest hash key
    ``((j mod 2^31) * 2654435761) mod 2^32`` among those with a positive weight; the slots left over have weight 0.
    A batch of at most ``size`` rows comes back whole, in its own order."""
    n = len(labels)
    if (
        n <= size
    ):  # no class can have more than size rows: every row is kept, in batch order (a dozen small ops saved per step)
        return h, labels.to(torch.int64), weight
    j = torch.arange(n, device=h.device, dtype=torch.int64)
    key = torch.where(weight > 0, (j * _MIX) % _NO_KEY, torch.full_like(j, _NO_KEY))
    labels = labels.to(torch.int64)
    order = torch.argsort(labels * (2 * _NO_KEY) + key)
    sorted_labels = labels[order]
    rank = torch.arange(n, device=h.device) - torch.searchsorted(sorted_labels, sorted_labels)
    keep = (rank < size) & (key[order] < _NO_KEY)  # in sorted order
    first = torch.argsort((~keep).to(torch.int8), stable=True)[
        : min(n, num_classes * size)
    ]  # the kept ones first
    pick = order[first]
    return h[pick], labels[pick], torch.where(keep[first], weight[pick], torch.zeros_like(weight[pick]))


class StepRows:
    """Each step's sampled rows, held on the device until ``FLUSH`` steps are collected."""

    def __init__(self, num_classes: int, width: int):
        self.C, self.size = num_classes, rows_per_class(num_classes, width)
        self.held: list[tuple] = []
        self.step = 0  # the epoch's step index of the next ``add``
        self.start = 0  # the first step not yet flushed

    def add(self, h: torch.Tensor, terms: list) -> None:
        """One step's rows: ``terms`` the (labels, weights) each row counts toward (``task.feature_terms``)."""
        for t, w in terms:
            self.held.append((self.step, *step_rows(h.float(), t, w.float(), self.size, self.C)))
        self.step += 1

    def full(self) -> bool:
        return self.step - self.start >= FLUSH

    def flush(self):
        """The steps added since the last flush: (first step, number of steps, (rows (n, D), labels (n,), weights (n,),
        step of each row (n,) counted from the first)), NumPy, rows and weights float64; None when there is none."""
        if self.step == self.start:
            return None
        held, self.held, first, self.start = self.held, [], self.start, self.step
        steps = torch.cat(
            [torch.full((len(t),), s - first, dtype=torch.int64, device=t.device) for s, _, t, _ in held]
        )
        out = [torch.cat([part[i] for part in held]) for i in (1, 2, 3)]
        return (
            first,
            self.step - first,
            (
                out[0].double().cpu().numpy(),
                out[1].cpu().numpy(),
                out[2].double().cpu().numpy(),
                steps.cpu().numpy(),
            ),
        )


OUTPUT_BUDGET = 2**25  # feature values (rows x D) an epoch may keep on the device: 128 MB in float32


class EpochOutputs:
    """Every step's feature rows and labels, in step order, for the prior report of an epoch without another forward pass.

    The PEM trained on exactly these features (training-mode BatchNorm, the epoch's crops and flips, the backbone as it was
    at each step). Kept only while each row has one label of weight one (no mixing, no dense maps) and the epoch fits
    ``OUTPUT_BUDGET``; ``result()`` is None otherwise.
    """

    def __init__(self, rows: int, width: int):
        self.rows, self.width = rows, width
        self.too_large = rows * width > OUTPUT_BUDGET
        self.valid = not self.too_large
        self.parts: list[tuple] = []

    def why_skipped(self) -> str:
        """What a run is told when its epochs are too large to keep: what it loses, and what it still gets."""
        return (
            f"the per-epoch prior report and the forecasts are skipped: they read an epoch's feature rows, kept on the "
            f"training device up to {OUTPUT_BUDGET:,} values, and an epoch here has {self.rows:,} x {self.width} = "
            f"{self.rows * self.width:,}; the run reports at its evaluations (--eval-every N for more of them; "
            f"docs/report.md, 'Which epochs report at scale')"
        )

    def add(self, h: torch.Tensor, terms: list) -> None:
        if not self.valid:
            return
        if (
            len(terms) != 1 or terms[0][1] is not None or h.ndim != 2
        ):  # mixed labels or dense maps: no one row per label
            self.valid, self.parts = False, []
            return
        self.parts.append((h, terms[0][0]))

    def result(self):
        """(features (n, D), labels (n,)) as device tensors, or None."""
        if not (self.valid and self.parts):
            return None
        return torch.cat([p[0] for p in self.parts]), torch.cat([p[1] for p in self.parts])
