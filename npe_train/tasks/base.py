"""What a task is: the parts of training and evaluation that differ between, say, classification and dense prediction.

The training loop (``loop/``) holds no task branch; it asks a task object six things, and a seventh if it has it:

- ``loss_weights(labels, num_classes, partner=None, weight=None)``: per position of an epoch, the loss weight each of
  its classes carries, as ``LossWeights`` entries (position, class, weight; a position may have several, and a class
  it does not have none, so nothing is n x C), and the number of loss terms per position (``(n,)``); every step's
  class shares are summed from them; ``partner``/``weight``: a mixing method's partner labels and the share of the
  sample's own label;
- ``loss_terms(pairs)``: a batch's loss terms, ``[(labels, per-sample weights or None), ...]``, as
  the objective takes them (a task may reweight);
- ``feature_terms(h, terms)``: the feature rows and ``(labels, weights)`` the class-mean features
  of the trace are summed from;
- ``evaluate(model, held, trace, now)``: results.json's ``accuracy`` (and more) and ``pem``;
- ``figures(out, model, held)``: the task's own PNGs beside the run's common ones;
- ``advise(model, held, report)``: results.json's ``advice`` from data the test set is not (docs/metrics.md);
- optionally ``step_report(model, held, trace, now, outputs)``: the prior report of an epoch that is not evaluated,
  from the feature rows its steps computed (``methods/feature_sample.EpochOutputs``), or None; a task without it
  reports only at its evaluations.

``Held`` is what every evaluation reads, made once per run; ``Now`` is the class stream at the
evaluated epoch. Imports: torch, ``data/`` and ``device/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

import numpy as np
import torch

from ..data.longtail import LongTailData
from ..device.distributed import Dist
from ..methods.trace import Trace


@dataclass
class Held:
    """The run's data, its training and test inputs on the device, the input preparer, this process's rank."""

    data: LongTailData
    x_train: torch.Tensor
    x_test: torch.Tensor
    prepare: Callable
    rank_info: Dist


@dataclass
class Now:
    """The class stream at an epoch: ``counts`` (post-hoc LA and the count groups), ``report_counts`` (what the PEM's
    loss saw, mixing weights summed; None: ``counts``), ``train_index`` (the stream's samples; None: all), and
    ``stale_counts`` (the counts before the last shift; None without one)."""

    counts: np.ndarray
    report_counts: np.ndarray | None = None
    train_index: np.ndarray | None = None
    stale_counts: np.ndarray | None = None


class LossWeights(NamedTuple):
    """An epoch's loss weights, sparse: entry i puts ``weight[i]`` of class ``label[i]`` at ``position[i]`` (a position's
    entries of one class add up); ``terms`` (n,): the loss terms at each position (a step's shares divide by their sum)."""

    position: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    terms: np.ndarray


class Task(Protocol):
    """The six things the loop asks a task (module docstring); ``step_report`` is optional and so not part of it."""

    def loss_weights(
        self, labels: np.ndarray, num_classes: int, partner=None, weight=None
    ) -> LossWeights: ...

    def loss_terms(self, pairs) -> list: ...

    def feature_terms(self, h: torch.Tensor, terms) -> tuple: ...

    def evaluate(self, model, held: Held, trace: Trace, now: Now) -> dict: ...

    def figures(self, out, model, held: Held) -> None: ...

    def advise(self, model, held: Held, report: dict) -> dict: ...


def train_mode_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of each batch of a training-mode pass over n samples; a last batch of one sample joins the batch before
    (BatchNorm cannot normalize one sample, e.g. after global pooling)."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))
