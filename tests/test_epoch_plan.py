"""Every step's class shares and the epoch's effective counts from a task's sparse loss weights (``loop/step.step_shares``)
against the dense sums they replace, written out here by brute force: an (positions x classes) table of loss weights,
summed per step and divided by the step's loss terms."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from npe_train.data.segmentation import IGNORE
from npe_train.loop.step import padded_length, step_shares
from npe_train.tasks.classification import Classification
from npe_train.tasks.segmentation import Segmentation


def _dense(table: np.ndarray, terms: np.ndarray, batch: int, n: int):
    """The brute force: a step's class shares are its rows of ``table`` summed over max(its terms, 1)."""
    fractions = np.stack(
        [
            table[i : i + batch].sum(0) / max(terms[i : i + batch].sum(), 1)
            for i in range(0, len(table), batch)
        ]
    )
    return fractions, table[:n].sum(0)


@given(
    n=st.integers(1, 300),
    C=st.integers(1, 12),
    batch=st.integers(2, 64),
    world=st.sampled_from([1, 2, 4]),
    mixed=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(n=33, C=3, batch=16, world=1, mixed=False, seed=0)  # a last step of one sample is dropped
@example(n=5, C=1, batch=64, world=4, mixed=True, seed=1)  # one class, one step, padding to the world size
def test_classification_shares_equal_the_dense_sums(n, C, batch, world, mixed, seed):
    rng = np.random.default_rng(seed)
    batch = max(batch - batch % world, world)
    padded = padded_length(n, world, batch)
    labels = rng.integers(0, C, padded)
    partner = rng.integers(0, C, padded) if mixed else None
    weight = rng.uniform(0, 1, padded) if mixed else None
    task = Classification(None, batch, 0, 1.0, (1.0,), False)
    got, counts = step_shares(task.loss_weights(labels, C, partner, weight), C, batch, padded, n)
    table = np.zeros((padded, C))
    for i in range(padded):  # each sample splits its one loss term between its label and its partner's
        own = 1.0 if weight is None else weight[i]
        table[i, labels[i]] += own
        if mixed:
            table[i, partner[i]] += 1.0 - own
    want, want_counts = _dense(table, np.ones(padded), batch, n)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(counts, want_counts, rtol=1e-12)


@given(
    n=st.integers(1, 12),
    C=st.integers(1, 6),
    side=st.integers(1, 5),
    batch=st.integers(1, 5),
    ignored=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
@example(n=3, C=4, side=2, batch=2, ignored=1.0, seed=0)  # every pixel ignored: no loss term, shares 0
def test_segmentation_shares_equal_the_dense_pixel_counts(n, C, side, batch, ignored, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, (n, side, side))
    labels[rng.uniform(size=labels.shape) < ignored] = IGNORE
    entries = Segmentation(None, batch, 0, 1.0).loss_weights(labels, C)
    got, counts = step_shares(entries, C, batch, n, n)
    table = np.zeros((n, C))
    for i in range(n):  # every valid pixel is a loss term of its class
        for c in labels[i].ravel():
            if c != IGNORE:
                table[i, c] += 1
    want, want_counts = _dense(table, table.sum(1), batch, n)
    np.testing.assert_allclose(entries.terms, table.sum(1))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(counts, want_counts)


def test_entries_out_of_range_are_refused_not_misplaced():
    """An entry of class C would otherwise be counted as class 0 of the next step; a position past the epoch, in a
    step that does not exist."""
    from npe_train.tasks.base import LossWeights

    ones = np.ones(4)
    for position, label in (
        (np.arange(4), np.array([0, 1, 2, 3])),
        (np.array([0, 1, 2, 9]), np.zeros(4, int)),
    ):
        with pytest.raises(ValueError, match="loss_weights"):
            step_shares(LossWeights(position, label, ones, ones), 3, 2, 4, 4)
