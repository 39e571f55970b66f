"""The rows the replay takes from each training step (npe_train/methods/feature_sample.py), against a brute-force choice."""

import numpy as np
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from npe_train.methods.feature_sample import FLUSH, StepRows, step_rows


def brute_force(labels, weight, size):
    """Per class, the positions of positive weight with the `size` smallest keys (j * 2654435761) mod 2^32."""
    keys = [(j * 2654435761) % 2**32 for j in range(len(labels))]
    out = set()
    for c in set(labels.tolist()):
        mine = sorted((keys[j], j) for j in range(len(labels)) if labels[j] == c and weight[j] > 0)
        out |= {j for _, j in mine[:size]}
    return out


@given(st.integers(1, 60), st.integers(1, 5), st.integers(1, 7), st.integers(0, 2**16))
@example(1, 1, 1, 0)
@example(40, 2, 1, 3)  # every class over its quota
@example(5, 3, 7, 1)  # fewer rows than one class may keep: the fast path returns them all
def test_step_rows_keeps_the_rows_a_brute_force_choice_keeps(n, C, size, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=n)
    weight = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.1, 1.0, size=n))
    h = np.arange(n, dtype=np.float32)[:, None] * np.ones(
        (1, 3), dtype=np.float32
    )  # row j holds j: which rows came back
    rows, got_labels, got_weight = step_rows(
        torch.as_tensor(h), torch.as_tensor(labels), torch.as_tensor(weight, dtype=torch.float32), size, C
    )
    assert len(rows) == min(n, C * size)
    live = got_weight.numpy() > 0
    taken = rows[:, 0].numpy()[live].astype(int)
    assert set(taken.tolist()) == brute_force(labels, weight, size) and len(taken) == len(set(taken.tolist()))
    # each row comes back with its own class and weight (never another row's)
    np.testing.assert_array_equal(got_labels.numpy()[live], labels[taken])
    np.testing.assert_allclose(got_weight.numpy()[live], weight[taken].astype(np.float32))


def test_step_rows_flush_every_few_steps_with_the_step_of_each_row():
    sr = StepRows(num_classes=3, width=2)
    seen = []
    for t in range(FLUSH + 3):
        y = torch.tensor([t % 3, (t + 1) % 3])
        sr.add(torch.full((2, 2), float(t)), [(y, torch.ones(2))])
        if sr.full():
            seen.append(sr.flush())
    seen.append(sr.flush())
    assert sr.flush() is None
    assert [(f, c) for f, c, _ in seen] == [(0, FLUSH), (FLUSH, 3)]
    for first, count, (rows, _labels, _weight, step) in seen:
        np.testing.assert_array_equal(rows[:, 0], step + first)  # a row carries the step that produced it
        assert step.min() >= 0 and step.max() < count and np.all(np.diff(step) >= 0)
