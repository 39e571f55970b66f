"""The list data set: 'relative/path label' split files (ImageNet-LT style) over a generated tree of images of mixed
sizes, read from disk batch by batch through the DataLoader pipeline with workers."""

import numpy as np
import pytest
import torch
from PIL import Image

from npe.cli import main
from npe_train.data.image_list import OnDisk
from npe_train.loop.build import build_data
from npe_train.loop.train import train
from npe_train.run.config import make_config

COUNTS = [30, 15, 8, 4]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    rng = np.random.default_rng(0)
    lines = {"train": [], "test": [], "val": []}
    for c, n in enumerate(COUNTS):
        (root / "imgs" / f"n{c:03d}").mkdir(parents=True)
        for split, k in (("train", n), ("test", 6), ("val", 3)):
            for i in range(k):
                h = int(rng.integers(20, 48))
                pixels = np.clip(rng.normal(50 + 50 * c, 25, size=(h, h + 3, 3)), 0, 255).astype(np.uint8)
                name = f"imgs/n{c:03d}/{split}_{i}.png"
                Image.fromarray(pixels).save(root / name)
                lines[split].append(f"{name} {c}")
    for split, entries in lines.items():
        (root / f"{split}.txt").write_text("# split\n" + "\n".join(entries) + "\n\n")
    return root


def cfg_for(root, out, **kw):
    return make_config(
        dataset="list",
        data_dir=str(root),
        train_list=str(root / "train.txt"),
        test_list=str(root / "test.txt"),
        val_list=str(root / "val.txt"),
        epochs=2,
        batch_size=16,
        workers=2,
        image_size=16,
        out=str(out),
        **kw,
    )


def test_list_data_trains_from_disk_in_batches(tree, tmp_path, monkeypatch):
    reads = []
    real = OnDisk.load

    def counted(self):
        reads.append(len(self))
        return real(self)

    monkeypatch.setattr(OnDisk, "load", counted)
    cfg = cfg_for(tree, tmp_path / "run")
    data = build_data(cfg)
    assert (
        isinstance(data.x_train, OnDisk)
        and isinstance(data.x_test, OnDisk)
        and data.val_source == "the validation list"
    )
    assert (
        data.counts.tolist() == COUNTS
        and data.x_train.shape == (57, 3, 16, 16)
        and np.bincount(data.y_test).tolist() == [6] * 4
    )
    # normalized by the training images' own per-channel statistics (all 57 are in the sample)
    pixels = real(data.x_train).numpy()
    np.testing.assert_allclose(pixels.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(pixels.std(axis=(0, 2, 3)), 1, atol=1e-3)
    # one image by hand: PIL bilinear resize, then the same normalization
    first = tree / data.x_train.paths[0]
    by_hand = (
        np.asarray(Image.open(first).convert("RGB").resize((16, 16), Image.BILINEAR), np.float32).transpose(
            2, 0, 1
        )
        / 255
    )
    np.testing.assert_allclose(
        data.x_train[0], (by_hand - data.x_train.mean) / data.x_train.std, rtol=1e-6, atol=1e-6
    )
    reads.clear()
    res = train(cfg, progress=False)
    assert res["counts"] == COUNTS and res["config"]["pipeline"] == "loader"
    assert reads and max(reads) <= 256  # evaluation reads batches, never the whole set at once
    assert res["advice"]["validation"] is not None


@pytest.mark.parametrize(
    "line, word",
    [
        ("/etc/passwd 0", "path under"),
        ("../x.png 0", "path under"),
        ("imgs/a.png cat", "label"),
        ("imgs/a.png -1", "label"),
        ("imgs/missing.png 0", "not a file"),
    ],
)
def test_bad_list_lines_are_one_line_errors(tree, tmp_path, capsys, line, word):
    bad = tmp_path / "bad.txt"
    bad.write_text((tree / "train.txt").read_text() + line + "\n")
    code = main(
        [
            "train",
            "--dataset",
            "list",
            "--data-dir",
            str(tree),
            "--train-list",
            str(bad),
            "--test-list",
            str(tree / "test.txt"),
            "--epochs",
            "1",
            "--image-size",
            "8",
            "--workers",
            "0",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and word in err, err


class Pairs(torch.utils.data.Dataset):
    """A user's own Dataset of (input, label) pairs, without a targets attribute (labels are read item by item)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.as_tensor(self.x[i]), int(self.y[i])


@pytest.mark.slow
def test_train_takes_a_users_torch_datasets_and_matches_the_same_arrays_from_files(tmp_path):
    """The same samples as torch Datasets (read as needed) and as X.npy / y.npy files (in memory) train the same run."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), [40, 20, 10, 6])
    x = (rng.normal(size=(len(y), 12)) + y[:, None]).astype(np.float32)
    yt = np.repeat(np.arange(4), 8)
    xt = (rng.normal(size=(len(yt), 12)) + yt[:, None]).astype(np.float32)
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, arr in (("X", x), ("y", y), ("X_test", xt), ("y_test", yt)):
        np.save(folder / f"{name}.npy", arr)
    common = dict(epochs=2, batch_size=16, workers=0, pipeline="loader", seed=1)
    from_files = train(
        make_config(dataset="npy", data_dir=str(folder), out=str(tmp_path / "a"), **common), progress=False
    )
    from_sets = train(
        make_config(dataset="torch", out=str(tmp_path / "b"), **common),
        progress=False,
        datasets=(Pairs(x, y), Pairs(xt, yt)),
    )
    assert from_sets["counts"] == from_files["counts"] == [40, 20, 10, 6]
    assert from_sets["accuracy"] == from_files["accuracy"]
    assert from_sets["pem"]["learned"] == from_files["pem"]["learned"]
    with pytest.raises(ValueError, match="^datasets"):
        train(make_config(dataset="torch", out=str(tmp_path / "c"), **common), progress=False)


def test_a_validation_list_missing_a_class_is_named_before_training(tree, tmp_path, capsys):
    lines = [ln for ln in (tree / "val.txt").read_text().splitlines() if ln and not ln.endswith(" 2")]
    partial = tmp_path / "val_partial.txt"
    partial.write_text("\n".join(lines) + "\n")
    args = ["train", "--dataset", "list", "--data-dir", str(tree), "--train-list", str(tree / "train.txt")]
    args += ["--test-list", str(tree / "test.txt"), "--val-list", str(partial), "--epochs", "2"]
    assert main([*args, "--image-size", "16", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "validation set (the validation list): class 2 has no sample" in err
    ), err
    assert not (tmp_path / "run").exists()  # refused before a run folder is made
