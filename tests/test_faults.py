"""Faults: killed and resumed runs, damaged files, two runs in one folder, unwritable outputs, divergence."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from npe.cli import main
from npe_train.loop.train import train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import make_config

# the command line of ``tiny``'s run (what --resume must repeat)
TINY_ARGS = [
    "train",
    "--dataset",
    "synthetic",
    "--imbalance",
    "20",
    "--n-max",
    "100",
    "--epochs",
    "5",
    "--seed",
    "4",
]


def tiny(tmp_path, name="run", **kw):
    base = dict(
        dataset="synthetic",
        imbalance=20,
        n_max=100,
        epochs=5,
        batch_size=64,
        seed=4,
        out=str(tmp_path / name),
    )
    base.update(kw)
    return make_config(**base)


def one_line(capsys, code, expected_code, word):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and word in err, err
    return err


@pytest.mark.parametrize("kills", [(1,), (3,), (1, 2)])
def test_killed_and_resumed_runs_are_bit_identical(tmp_path, kill_after, kills):
    full = train(tiny(tmp_path, "full"), progress=False)
    cfg = tiny(tmp_path, "cut")
    for k in kills:  # killed right after the k-th checkpoint of each attempt, possibly twice
        with pytest.raises(kill_after(k)):
            train(cfg, resume=True, progress=False)
    resumed = train(cfg, resume=True, progress=False)
    for key in ("accuracy", "counts"):
        assert resumed[key] == full[key]
    for key in ("learned", "finite_time", "equilibrium", "lambda_s", "eta_matrix"):
        assert resumed["pem"][key] == full["pem"][key], key
    a = read_checkpoint(tmp_path / "full" / CHECKPOINT)["model"]
    b = read_checkpoint(tmp_path / "cut" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == list(range(5))
    full_lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["lambda_s"] for x in lines] == [x["lambda_s"] for x in full_lines]


@pytest.mark.parametrize(
    "damage", ["empty", "five bytes of JSON", "a header claiming more than the file", "the structure cut"]
)
def test_damaged_checkpoint_is_a_clear_error(tmp_path, kill_after, capsys, damage):
    cfg = tiny(tmp_path)
    with pytest.raises(kill_after(2)):
        train(cfg, progress=False)
    ckpt = tmp_path / "run" / CHECKPOINT
    whole = ckpt.read_bytes()
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "five bytes of JSON":
        ckpt.write_bytes(open(tmp_path / "run" / "config.json", "rb").read()[:5])
    elif damage == "a header claiming more than the file":
        ckpt.write_bytes((2**40).to_bytes(8, "little") + whole[8:100])
    else:  # a well-formed safetensors file whose JSON structure is cut short
        from safetensors.torch import save

        state = read_checkpoint(ckpt)
        text = json.dumps({"format": 5, "epoch": state["epoch"]})[:-3]
        ckpt.write_bytes(
            save({"npe.structure": torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)})
        )
    code = main([*TINY_ARGS, "--out", str(tmp_path / "run"), "--resume", "--quiet"])
    one_line(capsys, code, 2, "checkpoint")


def test_deleted_or_torn_metrics_are_restored_from_the_checkpoint(tmp_path, kill_after, monkeypatch):
    import npe_train.loop.train as tr

    cfg = tiny(tmp_path)
    with pytest.raises(kill_after(2)):
        train(cfg, progress=False)
    (tmp_path / "run" / "metrics.jsonl").write_text('{"epoch": 0, "lo')  # torn
    real, calls = tr.save_checkpoint, {"n": 0}

    def deleting(*args, **kwargs):  # someone deletes metrics.jsonl while the run goes on
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            (tmp_path / "run" / "metrics.jsonl").unlink()

    monkeypatch.setattr(tr, "save_checkpoint", deleting)
    train(cfg, resume=True, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_two_runs_into_one_folder(tmp_path):
    """The second run is refused while the first lives; SIGKILL on the first leaves no stuck lock."""
    out = tmp_path / "shared"
    args = [
        "--dataset",
        "synthetic",
        "--n-max",
        "500",
        "--epochs",
        "400",
        "--eval-every",
        "400",
        "--out",
        str(out),
        "--quiet",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "npe", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / CHECKPOINT).exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / CHECKPOINT).exists(), (
            first.stderr.read() if first.poll() is not None else "first run too slow"
        )
        second = subprocess.run(
            [sys.executable, "-m", "npe", "train", *args, "--resume"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (
            second.returncode == 2
            and "in use by another run" in second.stderr
            and len(second.stderr.strip().splitlines()) == 1
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed mid-run: the lock went with the process, the folder is free again
    from npe_train.run.runfolder import claim

    with claim(out):
        assert (out / ".lock").read_text() == str(os.getpid())


def test_fresh_run_into_a_finished_folder_is_refused_and_mixed_folders_are_refused(tmp_path, capsys):
    cfg = tiny(tmp_path, epochs=2)
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="^out: .* already holds a run"):
        train(tiny(tmp_path, epochs=3), progress=False)
    # a foreign config.json beside the results: compare and sweep refuse the folder
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**config, "seed": 99}))
    one_line(capsys, main(["compare", str(tmp_path / "run")]), 2, "mixes two runs")
    (tmp_path / "run" / "results.json").write_text('{"config": {}}')
    one_line(capsys, main(["compare", str(tmp_path / "run")]), 2, "not a finished run")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_full_or_read_only_output_keeps_what_was_computed(tmp_path, monkeypatch, capsys, err):
    import npe_train.loop.train as tr

    real, calls = tr.save_checkpoint, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(err, os.strerror(err), str(tmp_path / "run" / "checkpoint.pt.tmp"))
        real(*args, **kwargs)

    monkeypatch.setattr(tr, "save_checkpoint", failing)
    code = main(
        ["train", "--dataset", "synthetic", "--epochs", "5", "--out", str(tmp_path / "run"), "--quiet"]
    )
    one_line(capsys, code, 2, os.strerror(err))
    assert read_checkpoint(tmp_path / "run" / CHECKPOINT)["epoch"] == 1  # the last good one is kept


@pytest.mark.parametrize("case", ["under a file", "a folder for a file, a file for a folder"])
def test_output_paths_that_cannot_be_written(tmp_path, capsys, case):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    csv, out = (
        (tmp_path / "afile" / "p.csv", tmp_path / "afile" / "run")
        if case == "under a file"
        else (tmp_path / "adir", tmp_path / "afile")
    )
    one_line(capsys, main(["priors", "--lam", "1e-3", "--classes", "4", "--csv", str(csv)]), 2, "npe: error")
    one_line(
        capsys,
        main(["train", "--dataset", "synthetic", "--epochs", "1", "--out", str(out), "--quiet"]),
        2,
        "npe: error",
    )


def test_diverging_run_stops_with_exit_1(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "3",
            "--lr",
            "1e300",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    one_line(capsys, code, 1, "stopped")


def test_internal_error_prints_one_line_and_a_log(monkeypatch, capsys):
    import npe_theory.cli as tcli

    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(tcli, "cmd_priors", boom)
    code = main(["priors", "--lam", "1e-3"])
    err = one_line(capsys, code, 1, "internal error: RuntimeError: a bug")
    log = err.strip().rsplit("full traceback in ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read() and "a bug" in open(log).read()
    os.unlink(log)


def test_results_record_the_environment(tmp_path):
    res = train(tiny(tmp_path, epochs=1), progress=False)
    env = res["environment"]
    assert (
        env["threads"] == torch.get_num_threads()
        and env["torch"] == torch.__version__
        and res["schema"] == "npe-run/2"
    )
    assert np.isfinite(res["train_seconds"])


def test_a_data_set_that_cannot_be_built_leaves_no_folder(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    one_line(capsys, code, 2, "data_dir")
    assert not (tmp_path / "run").exists()


def test_resume_keeps_the_time_of_every_segment(tmp_path, kill_after):
    cfg = tiny(tmp_path)
    with pytest.raises(kill_after(3)):
        train(cfg, progress=False)
    first = [json.loads(x)["seconds"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    res = train(cfg, resume=True, progress=False)
    lines = [json.loads(x)["seconds"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[: len(first)] == first and all(
        b > a for a, b in zip(lines, lines[1:])
    )  # the clock continues
    assert res["train_seconds"] == lines[-1]
    again = train(cfg, resume=True, progress=False)  # a finished run: nothing trains, nothing is re-timed
    assert again["train_seconds"] == res["train_seconds"]


def test_resume_with_other_epochs_says_what_changed_and_why(tmp_path, capsys):
    train(tiny(tmp_path, epochs=2), progress=False)
    args = ["train", "--dataset", "synthetic", "--imbalance", "20", "--n-max", "100", "--seed", "4"]
    code = main([*args, "--epochs", "3", "--out", str(tmp_path / "run"), "--resume", "--quiet"])
    err = one_line(capsys, code, 2, "epochs")
    assert "follows from --epochs" in err and "give a new --out" in err


def test_compare_skips_an_unfinished_folder(tmp_path, capsys):
    train(tiny(tmp_path, epochs=2), progress=False)
    (tmp_path / "half").mkdir()
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "half")]) == 0
    captured = capsys.readouterr()
    assert (
        "skipped" in captured.err and str(tmp_path / "half") in captured.err and "synthetic" in captured.out
    )


def test_the_default_folder_names_epochs_and_lr_when_not_the_defaults():
    assert make_config().resolved().out == "runs/mnist1d-npe-ir100-seed0"
    assert make_config(epochs=5, lr=0.1).resolved().out == "runs/mnist1d-npe-ir100-e5-lr0.1-seed0"


def test_a_fifo_in_place_of_the_checkpoint_is_refused_not_read_forever(tmp_path, kill_after, capsys):
    import os

    cfg = tiny(tmp_path)
    with pytest.raises(kill_after(2)):
        train(cfg, progress=False)
    ckpt = tmp_path / "run" / CHECKPOINT
    ckpt.unlink()
    os.mkfifo(ckpt)
    code = main([*TINY_ARGS, "--out", str(tmp_path / "run"), "--resume", "--quiet"])
    one_line(capsys, code, 2, "not a regular file")
