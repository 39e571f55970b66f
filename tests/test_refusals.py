"""Input that must be refused in one line (exit 2) naming what is wrong, by class of fault (docs/reliability.md):
a value that should be refused becoming a default, an option ignored by the data set it was given for, run files
read back without their writer's checks, unbounded work, and errors from below reaching the user raw."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from npe.cli import main
from npe_train.loop.train import train
from npe_train.run.config import make_config


def one_line(capsys, code, word):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("npe: warning")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err and word in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished synthetic run (read-only for the tests: each tampers a copy)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(make_config(dataset="synthetic", imbalance=10, n_max=60, epochs=2, out=str(out)), progress=False)
    return out


def images(root, counts=(12, 9, 6), size=8):
    for c, n in enumerate(counts):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 40 * c + i, dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.png"
            )
    return root


ALL_IMAGES = "".join(f"c{c}/{i}.png {c}\n" for c, n in enumerate((12, 9, 6)) for i in range(n))


def list_args(tmp_path, lines: str | None = ALL_IMAGES) -> list[str]:
    """The list data set over ``images``' folder, one list file for both splits (``lines`` None: the file exists already)."""
    images(tmp_path / "imgs")
    if lines is not None:
        (tmp_path / "list.txt").write_text(lines)
    listed = str(tmp_path / "list.txt")
    return [
        "--dataset",
        "list",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--train-list",
        listed,
        "--test-list",
        listed,
    ]


# ---- results.json read back by `npe priors --from`: the shared checks of npe_theory.runfiles ----


class Raw(str):
    """JSON text npe never writes (NaN, a number beyond float64, an integer beyond int64), spliced in as it is."""


TAMPERED = {
    "NaN counts": (("counts",), Raw("[" + ", ".join(["NaN"] * 10) + "]"), "NaN"),
    "infinite counts": (("counts",), Raw("[" + ", ".join(["1e400"] * 10) + "]"), "1e400"),
    "huge integer counts": (
        ("counts",),
        Raw("[" + ", ".join(["1" + "0" * 400] * 10) + "]"),
        "an integer below 2^63",
    ),
    "string counts": (("counts",), ["a"] * 10, "counts"),
    "boolean counts": (("counts",), [True] * 10, "counts"),
    "ragged counts": (("counts",), [[1, 2]] + [3] * 9, "counts"),
    "absurd counts": (("counts",), [1e300] * 10, "counts"),
    "boolean norms": (("pem", "mean_norm_sq"), [True] * 10, "pem.mean_norm_sq"),
    "string norms": (("pem", "mean_norm_sq"), "x", "pem.mean_norm_sq"),
    "short learned": (("pem", "learned"), [1.0], "pem.learned"),
    "zero PEM decay": (("config", "pem_weight_decay"), 0, "config.pem_weight_decay"),
    "boolean PEM decay": (("config", "pem_weight_decay"), True, "config.pem_weight_decay"),
    "string alpha": (("config", "alpha"), "1", "config.alpha"),
    "a list for the config": (("config",), [1], "config"),
    "a list for the report": (("pem",), [], "pem"),
}


@pytest.mark.parametrize("case", TAMPERED)
def test_a_tampered_results_json_is_named_not_an_internal_error(finished, tmp_path, capsys, case):
    path, value, word = TAMPERED[case]
    edited = copy.deepcopy(json.loads((finished / "results.json").read_text()))
    where = edited
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = "@@raw@@" if isinstance(value, Raw) else value
    text = json.dumps(edited)
    (tmp_path / "results.json").write_text(
        text.replace('"@@raw@@"', value) if isinstance(value, Raw) else text
    )
    err = one_line(capsys, main(["priors", "--from", str(tmp_path)]), word)
    assert err.startswith("npe: error: --from:")


# ---- values refused, never replaced by a default ----


@pytest.mark.parametrize(
    "argv",
    [
        ["priors", "--lam", "1e-3", "--csv", ""],
        ["check", "--json", ""],
        ["ufm", "--json", ""],
        ["figures", "--out", ""],
        ["train", "--dataset", "synthetic", "--out", ""],
        ["sweep", "--out", ""],
        ["reproduce", "baselines_cpu", "--out", "", "--dry-run"],
    ],
    ids=lambda a: " ".join(a[:1] + [a[-2] if a[-1] in ("", "--dry-run") else a[-1]]),
)
def test_an_empty_path_is_refused_not_the_current_folder(tmp_path, capsys, argv):
    one_line(capsys, main(argv), "an empty value")
    assert not any(tmp_path.iterdir())  # nothing written where the command ran


def test_a_zero_norm_is_a_value_not_the_default(capsys):
    one_line(capsys, main(["priors", "--lam", "1e-3", "--norm-sq", "0"]), "feature_norm_sq")


def test_the_api_refuses_empty_paths():
    with pytest.raises(ValueError, match="^out: .*non-empty"):
        make_config(dataset="synthetic", out="")


# ---- options the data set does not read: refused, never ignored ----


@pytest.mark.parametrize(
    "extra, word",
    [
        (["--data-dir", "."], "data_dir: the synthetic data set does not read it"),
        (["--image-size", "8"], "image_size: the synthetic data set does not read it"),
        (["--test-fraction", "0.3"], "test_fraction: the synthetic data set does not read it"),
    ],
)
def test_a_data_set_option_the_data_set_does_not_read_is_refused(tmp_path, capsys, extra, word):
    one_line(capsys, main(["train", "--dataset", "synthetic", *extra, "--out", str(tmp_path / "r")]), word)


def test_the_device_pipeline_is_not_swapped_for_the_loader(tmp_path, capsys):
    argv = ["train", *list_args(tmp_path), "--pipeline", "device", "--out", str(tmp_path / "r")]
    one_line(capsys, main(argv), "pipeline")


def test_eval_refuses_a_data_folder_its_data_set_does_not_read(finished, capsys):
    one_line(capsys, main(["eval", str(finished), "--data-dir", str(finished)]), "data_dir")
    assert not list(finished.glob("eval-data-*.json"))  # no file whose name says another test set was used


def test_datasets_given_with_another_data_set_are_refused(tmp_path):
    import torch

    pairs = torch.utils.data.TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="^datasets: the synthetic data set does not read your Datasets"):
        train(
            make_config(dataset="synthetic", out=str(tmp_path / "r")), datasets=(pairs, pairs), progress=False
        )


# ---- a baseline's settings given to a method that does not read them: refused, never ignored ----


@pytest.mark.parametrize(
    "extra, word",
    [
        (
            ["--method", "ce", "--cb-beta", "0.99"],
            "cb_beta: the ce method does not read it (read by cb_ce, cb_focal)",
        ),
        (["--method", "cb_ce", "--focal-gamma", "2"], "focal_gamma: the cb_ce method does not read it"),
        (
            ["--method", "balanced_softmax", "--ldam-scale", "10"],
            "ldam_scale: the balanced_softmax method does not read it",
        ),
        (["--method", "ldam_drw", "--wb-lr", "0.1"], "wb_lr: the ldam_drw method does not read it"),
        (["--method", "ce", "--drw-beta", "0.99"], "drw_beta: the ce method has no deferred re-weighting"),
        (["--mix-tau", "0.5"], "mix_tau: a UniMix setting without --mix unimix"),
    ],
)
def test_a_setting_the_method_does_not_read_is_refused(tmp_path, capsys, extra, word):
    one_line(capsys, main(["train", "--dataset", "synthetic", *extra, "--out", str(tmp_path / "r")]), word)


def test_every_method_takes_the_settings_it_reads_and_every_setting_has_a_reader(tmp_path):
    from dataclasses import fields

    from npe_train.methods.catalog import METHODS
    from npe_train.run.config import METHOD_OPTIONS, TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    readers = set()
    for name in METHODS.names():
        for option in METHODS.get(name).reads:
            readers.add(option)
            value = defaults[option] * 0.5 if isinstance(defaults[option], float) else 1
            make_config(dataset="synthetic", method=name, out=str(tmp_path / "r"), **{option: value})
    assert readers == set(METHOD_OPTIONS)  # a new method's setting is checked like the others
    # a deferred re-weighting asked for by epoch takes its beta with any method
    make_config(dataset="synthetic", method="ce", drw_epoch=3, drw_beta=0.99, out=str(tmp_path / "r"))


# ---- bounded work ----


def test_more_threads_than_cores_are_refused(tmp_path, capsys, monkeypatch):
    from npe_theory.validate import usable_cores

    many = str(usable_cores() + 1)
    base = ["train", "--dataset", "synthetic", "--epochs", "1", "--out"]
    one_line(capsys, main([*base, str(tmp_path / "a"), "--threads", many]), "threads: ")
    monkeypatch.setenv("OMP_NUM_THREADS", many)
    one_line(capsys, main([*base, str(tmp_path / "b")]), "OMP_NUM_THREADS: ")
    monkeypatch.setenv("OMP_NUM_THREADS", "²")
    one_line(capsys, main([*base, str(tmp_path / "c")]), "OMP_NUM_THREADS: expected a positive integer")


def test_a_tau_grid_beyond_its_bound_is_refused():
    with pytest.raises(ValueError, match="^tau_grid: 257 values"):
        make_config(dataset="synthetic", tau_grid=[0.5] * 257)


def test_an_image_batch_beyond_its_bound_is_refused():
    with pytest.raises(ValueError, match="^image_size: a batch of 64 RGB images at 4096x4096"):
        make_config(dataset="folder", data_dir="x", image_size=4096)


def test_an_image_folder_beyond_the_memory_available_is_refused_before_it_is_read(
    tmp_path, capsys, monkeypatch
):
    import npe_theory.io

    images(tmp_path / "imgs")
    monkeypatch.setattr(npe_theory.io, "memory_budget", lambda: 10_000)  # bytes: the 27 images need more
    argv = [
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "r"),
    ]
    one_line(capsys, main(argv), "GiB available")


# ---- errors from below ----


@pytest.mark.parametrize("device", ["xla", "meta", "cpu:3", "cuda:x", "hpu"])
def test_a_device_the_loop_cannot_run_on_is_named(tmp_path, capsys, device):
    one_line(
        capsys,
        main(["train", "--dataset", "synthetic", "--device", device, "--out", str(tmp_path / "r")]),
        "device",
    )


@pytest.mark.parametrize(
    "env, word",
    [
        ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "-1"}, "WORLD_SIZE"),
        ({"WORLD_SIZE": "2"}, "RANK: WORLD_SIZE is 2"),
        ({"LOCAL_RANK": "x"}, "LOCAL_RANK"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "99999"}, "MASTER_PORT"),
    ],
)
def test_a_bad_launch_environment_names_the_variable(tmp_path, capsys, monkeypatch, env, word):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    one_line(capsys, main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "r")]), word)


def test_a_label_int_refuses_is_a_named_line_not_an_internal_error(tmp_path, capsys):
    argv = list_args(tmp_path, "c0/0.png 0\nc1/0.png \u00b2\n")  # '²'.isdigit() is True, int('²') fails
    one_line(capsys, main(["train", *argv, "--out", str(tmp_path / "r")]), "line 2")


def test_a_dataloader_workers_error_is_its_own_message(tmp_path, capsys):
    argv = ["train", *list_args(tmp_path), "--workers", "1", "--epochs", "1", "--out", str(tmp_path / "r")]
    (tmp_path / "imgs" / "c1" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 3)
    err = one_line(capsys, main(argv), "cannot read image")
    assert "DataLoader worker process" not in err and "Original Traceback" not in err


@pytest.mark.parametrize(
    "what, word",
    [
        ("an image", "not a regular file"),
        ("a CIFAR batch", "data_batch_1"),
        ("a split list", "not a regular file"),
    ],
)
def test_a_fifo_in_place_of_an_input_file_is_refused_not_read_forever(tmp_path, capsys, what, word):
    import os

    from npe_train.data.files import write_fake_cifar

    if what == "an image":
        images(tmp_path / "imgs")
        os.unlink(tmp_path / "imgs" / "c0" / "0.png")
        os.mkfifo(tmp_path / "imgs" / "c0" / "0.png")
        argv = ["--dataset", "folder", "--data-dir", str(tmp_path / "imgs")]
    elif what == "a CIFAR batch":
        root = write_fake_cifar(tmp_path / "cifar", 10, train_per_class=4, test_per_class=2)
        os.unlink(root / "cifar-10-batches-py" / "data_batch_1")
        os.mkfifo(root / "cifar-10-batches-py" / "data_batch_1")
        argv = ["--dataset", "cifar10", "--data-dir", str(root), "--n-max", "4"]
    else:
        os.mkfifo(tmp_path / "list.txt")
        argv = list_args(tmp_path, lines=None)
    one_line(capsys, main(["train", *argv, "--epochs", "1", "--out", str(tmp_path / "r")]), word)
