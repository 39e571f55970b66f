"""The two data pipelines (device-resident and a standard DataLoader) and torch.compile: same data, same run."""

import shutil

import numpy as np
import pytest
import torch

from npe_train.data.files import CIFAR_MEAN, CIFAR_STD, write_fake_cifar
from npe_train.data.pipeline import DevicePipeline, LoaderPipeline, augment, draw_augmentation, preparer
from npe_train.loop.train import train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import make_config


def torchvision_style(img: np.ndarray, dy: int, dx: int, flip: int) -> np.ndarray:
    """The usual per-image recipe in plain numpy: pad 4 black pixels, crop 32x32 at (dy, dx), flip, then normalize."""
    out = np.pad(img, ((0, 0), (4, 4), (4, 4)))[:, dy : dy + 32, dx : dx + 32]
    if flip:
        out = out[:, :, ::-1]
    return (out.astype(np.float32) / np.float32(255) - CIFAR_MEAN[:, None, None]) / CIFAR_STD[:, None, None]


def test_augment_then_normalize_is_the_standard_recipe():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8)
    draws = draw_augmentation(64, torch.Generator().manual_seed(0))
    assert set(draws[:, 0].tolist()) == set(range(9)) and set(draws[:, 2].tolist()) == {
        0,
        1,
    }  # every offset, both flips
    got = preparer(np.uint8, "cpu")(augment(torch.from_numpy(x), draws)).numpy()
    for b in range(64):
        np.testing.assert_allclose(got[b], torchvision_style(x[b], *draws[b].tolist()), rtol=0, atol=1e-6)
    # the padding is black pixels, not the mean colour: the top rows of a crop at dy = 0 are -mean/std
    at_top = int(np.flatnonzero(draws[:, 0].numpy() == 0)[0])
    np.testing.assert_allclose(got[at_top, :, 0, 0], -CIFAR_MEAN / CIFAR_STD, rtol=1e-6)


@pytest.mark.parametrize("workers, images", [(0, True), (2, True), (2, False)])
def test_both_pipelines_yield_the_same_batches(workers, images):
    """uint8 images with crop + flip, or float vectors (MNIST-1D, synthetic) passed through untouched."""
    rng = np.random.default_rng(1)
    x = (
        rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
        if images
        else rng.normal(size=(50, 1, 40)).astype(np.float32)
    )
    y = rng.integers(0, 10, 50)
    gen = torch.Generator().manual_seed(1)
    order, draws = torch.randperm(50, generator=gen), draw_augmentation(50, gen) if images else None
    fast = DevicePipeline(torch.as_tensor(x), torch.as_tensor(y))
    standard = LoaderPipeline(x, y, "cpu", workers=workers)
    for _epoch in range(2):  # persistent workers take the second epoch's batches
        a, b = list(fast.epoch(order, draws, 16)), list(standard.epoch(order, draws, 16))
        assert [len(t[1]) for t in a] == [len(t[1]) for t in b] == [16, 16, 16, 2]
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
        if not images:
            assert torch.equal(torch.cat([t[0] for t in a]), torch.as_tensor(x)[order])
        order = order.flip(0)


def test_loader_pipeline_trains_the_same_network(tmp_path):
    """On one device the fast path is the standard pipeline, bit for bit: same weights, same accuracy."""
    write_fake_cifar(tmp_path / "data", 10, train_per_class=12, test_per_class=2)
    common = dict(
        dataset="cifar10",
        n_max=12,
        imbalance=4,
        epochs=2,
        batch_size=16,
        data_dir=str(tmp_path / "data"),
        device="cpu",
    )
    fast = train(make_config(out=str(tmp_path / "fast"), **common), progress=False)
    standard = train(
        make_config(out=str(tmp_path / "std"), pipeline="loader", workers=2, **common), progress=False
    )
    assert fast["config"]["augment"] is True
    a = read_checkpoint(tmp_path / "fast" / CHECKPOINT)["model"]
    b = read_checkpoint(tmp_path / "std" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fast["accuracy"] == standard["accuracy"] and fast["pem"]["learned"] == standard["pem"]["learned"]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor on CPU needs a C++ compiler"
)
def test_compiled_run_matches_eager(tmp_path):
    """torch.compile (inductor, with the smaller last batch) reorders float arithmetic, nothing more."""
    common = dict(dataset="synthetic", imbalance=20, epochs=2, batch_size=48, device="cpu", seed=2)
    eager = train(make_config(out=str(tmp_path / "eager"), **common), progress=False)
    compiled = train(make_config(out=str(tmp_path / "compiled"), compile="default", **common), progress=False)
    assert compiled["config"]["compile"] == "default"
    np.testing.assert_allclose(compiled["pem"]["learned"], eager["pem"]["learned"], atol=1e-4)
    for rule in ("argmax", "posthoc_la", "npe_la"):
        assert compiled["accuracy"][rule]["overall"] == pytest.approx(
            eager["accuracy"][rule]["overall"], abs=5e-3
        )


def test_old_boolean_compile_setting_still_reads():
    assert make_config(compile=True).compile == "default" and make_config(compile=False).compile == "none"


@pytest.mark.parametrize("name, shape", [("resnet32", (3, 32, 32)), ("cnn1d", (1, 40)), ("mlp", (20,))])
def test_every_network_compiles_to_one_graph(name, shape):
    """No graph break (PEM heads included): CUDA graphs under --compile reduce-overhead then cover the whole network."""
    from npe_train.models.classifiers import build_model

    explained = torch._dynamo.explain(build_model(name, shape, 10, num_pems=2))(torch.randn(4, *shape))
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
