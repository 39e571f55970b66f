"""The CIFAR-LT protocol as the LDAM-DRW code draws it, and the training subset every run records."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from npe_theory.errors import InputError
from npe_train.data.files import load_cifar, write_fake_cifar
from npe_train.data.longtail import build
from npe_train.loop.train import train
from npe_train.run.config import make_config


def _ldam_reference(targets, counts, seed):
    """The LDAM-DRW code's loop, with NumPy's global generator as it uses it."""
    np.random.seed(seed)
    keep = []
    for c, n in zip(np.unique(targets), counts):
        idx = np.where(targets == c)[0]
        np.random.shuffle(idx)
        keep.extend(idx[:n].tolist())
    return np.array(keep)


@pytest.mark.parametrize("seed", [0, 7])
def test_the_ldam_generator_takes_the_ldam_codes_samples(tmp_path, seed):
    write_fake_cifar(tmp_path, 10, train_per_class=30, test_per_class=4)
    x, y, _, _ = load_cifar(tmp_path, 10)
    data = build("cifar10", 10.0, n_max=30, seed=seed, data_dir=str(tmp_path))
    ldam = __import__("npe_train.data.catalog", fromlist=["DataRequest"])
    req = ldam.DataRequest(imbalance=10.0, n_max=30, seed=seed, data_dir=str(tmp_path), lt_generator="ldam")
    got = ldam.dataset("cifar10").build(req)
    want = _ldam_reference(y, got.counts, seed)
    np.testing.assert_array_equal(got.train_index, want)
    np.testing.assert_array_equal(got.y_train, y[want])
    assert got.counts.tolist() == data.counts.tolist() and not np.array_equal(
        got.train_index, data.train_index
    )


def test_results_record_the_subset_and_its_hash(tmp_path):
    res = train(
        make_config(dataset="synthetic", epochs=1, n_max=40, imbalance=10, out=str(tmp_path / "r")),
        progress=False,
    )
    sub = res["train_subset"]
    index = np.array(sub["index"], dtype="<i8")
    assert sub["generator"] == "toolkit" and sub["size"] == sum(res["counts"]) == len(index)
    assert sub["sha256"] == hashlib.sha256(index.tobytes()).hexdigest()
    assert len(np.unique(index)) == len(index)


def test_an_unknown_generator_is_refused():
    with pytest.raises(InputError, match="^lt_generator"):
        make_config(dataset="synthetic", lt_generator="bbn")
