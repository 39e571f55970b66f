"""Long-tailed data sets, balanced test sets, and CIFAR read from a tiny folder written here."""

import numpy as np
import pytest

from npe_theory.errors import InputError
from npe_theory.priors import count_profile
from npe_train.data.files import DataError, load_cifar, write_fake_cifar
from npe_train.data.longtail import build


@pytest.mark.parametrize("name, shape", [("synthetic", (32,)), ("digits", (64,))])
def test_long_tail_counts_and_balanced_test(name, shape):
    d = build(name, imbalance=10, seed=3)
    assert d.input_shape == shape and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10), d.counts)
    np.testing.assert_array_equal(d.counts, count_profile("exp", 10, int(d.counts[0]), 10))
    test_counts = np.bincount(d.y_test, minlength=10)
    assert len(set(test_counts.tolist())) == 1 and test_counts[0] > 0


def test_digits_train_and_test_do_not_overlap():
    d = build("digits", imbalance=5, seed=0)
    train = {row.tobytes() for row in d.x_train}
    assert not any(row.tobytes() in train for row in d.x_test[:200])


def test_seed_changes_the_subset_not_the_counts():
    a, b = build("synthetic", 20, seed=0), build("synthetic", 20, seed=1)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.x_train, b.x_train)
    c = build("synthetic", 20, seed=0)
    np.testing.assert_array_equal(a.x_train, c.x_train)


def test_mnist1d_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    import random

    state, py_state = np.random.get_state(), random.getstate()
    d = build("mnist1d", 100, seed=0)
    assert d.input_shape == (1, 40) and d.counts[0] == 450 and d.counts[-1] == 4
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global generators are left alone
    assert random.getstate() == py_state
    assert list(tmp_path.glob(".cache/npe/mnist1d_*.npz"))  # cached for the next run


@pytest.mark.parametrize("classes", [10, 100])
def test_fake_cifar_round_trip(tmp_path, classes):
    write_fake_cifar(tmp_path, classes, train_per_class=12, test_per_class=3)
    x, y, xt, yt = load_cifar(tmp_path, classes)
    assert x.shape == (12 * classes, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [12] * classes and np.bincount(yt).tolist() == [3] * classes
    d = build(f"cifar{classes}", imbalance=4, n_max=12, data_dir=str(tmp_path))
    assert d.counts.tolist()[0] == 12 and d.counts[-1] == 3 and d.x_test.shape[0] == 3 * classes


def test_clear_errors():
    with pytest.raises(DataError, match="^data_dir"):
        build("cifar10", 10, data_dir="/nonexistent/folder")
    with pytest.raises(DataError, match="^data_dir"):
        build("cifar100", 10)
    with pytest.raises(InputError, match="^dataset: unknown data set 'imagenet'"):
        build("imagenet", 10)
    with pytest.raises(DataError, match="^n_max"):
        build("digits", 2, n_max=1000)
    with pytest.raises(ValueError, match="^imbalance"):
        build("synthetic", 0.5)


def test_wide_images_are_scaled_to_8_bits_not_saturated(tmp_path):
    from PIL import Image

    from npe_train.data.files import DataError, read_image

    a = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "i16.png", "RGB", None)[..., 0], np.round(a / 257.0))
    f = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    Image.fromarray(f).save(tmp_path / "f.tiff")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff", "RGB", None)[..., 0], np.round(f * 255))
    Image.fromarray(f * 4).save(tmp_path / "big.tiff")
    with pytest.raises(DataError, match="floating-point image with values up to 4"):
        read_image(tmp_path / "big.tiff", "RGB", None)
    labels = np.array([[0, 3, 7, 1]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "mask.png")  # a 16-bit label map keeps its class ids
    np.testing.assert_array_equal(read_image(tmp_path / "mask.png", "L", None, labels=True), labels)
