"""The trust boundary: no code runs from a file the toolkit reads; sizes are bounded before allocation;
checked input is exit 2, our own bugs exit 1; real faults (a full tmpfs, a read-only mount, SIGTERM,
a folder killed before its first checkpoint, a moved folder) are survived (docs/reliability.md)."""

import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from npe.cli import main
from npe_train.loop.train import train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint, write_checkpoint
from npe_train.run.config import make_config

BASE = [
    "--dataset",
    "synthetic",
    "--imbalance",
    "20",
    "--n-max",
    "100",
    "--epochs",
    "5",
    "--batch-size",
    "64",
    "--seed",
    "4",
    "--quiet",
]


def tiny(out, **kw):
    return make_config(
        **{
            **dict(
                dataset="synthetic", imbalance=20, n_max=100, epochs=5, batch_size=64, seed=4, out=str(out)
            ),
            **kw,
        }
    )


def one_line(capsys, code, expected_code, word):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and word in err, err
    return err


class Marker:
    """Unpickling this calls ``Path.touch`` on the marker path: proof that code from the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ---- no code runs from a file ----


@pytest.mark.parametrize(
    "variant", ["raw pickle", "torch.save of an object", "real checkpoint with an object inside"]
)
def test_crafted_checkpoint_runs_no_code(tmp_path, kill_after, capsys, variant):
    """A pickle in place of the run's checkpoint (the earlier checkpoint.pt, read with weights_only on a safe torch)."""
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    with pytest.raises(kill_after(2)):
        train(tiny(out), progress=False)
    state = read_checkpoint(out / CHECKPOINT)
    (out / CHECKPOINT).unlink()  # only the earlier format is left to read
    ckpt = out / "checkpoint.pt"
    if variant == "raw pickle":
        ckpt.write_bytes(pickle.dumps(Marker(marker)))
    elif variant == "torch.save of an object":
        torch.save({"model": Marker(marker)}, ckpt)
    else:
        state["config"] = Marker(marker)
        torch.save(state, ckpt)
    code = main(["train", *BASE, "--out", str(out), "--resume"])
    one_line(capsys, code, 2, "checkpoint")
    assert not marker.exists(), "code from the checkpoint ran"


def test_crafted_cifar_batch_runs_no_code(tmp_path, capsys):
    from npe_train.data.files import write_fake_cifar

    root, marker = write_fake_cifar(tmp_path / "cifar"), tmp_path / "PWNED"
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": Marker(marker), b"labels": [0]}))
    code = main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(root),
            "--n-max",
            "4",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    one_line(capsys, code, 2, "data_batch_1")
    assert not marker.exists(), "code from the CIFAR batch ran"


def test_real_cifar_batches_still_load(tmp_path):
    """The restricted unpickler reads what torchvision's CIFAR files hold (NumPy arrays, lists, bytes keys), in every protocol."""
    from npe_train.data.files import _unpickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 4, 5):
        path = tmp_path / f"b{protocol}"
        path.write_bytes(
            pickle.dumps({b"data": data, b"labels": [3, 1], b"batch_label": b"x"}, protocol=protocol)
        )
        got = _unpickle(path)
        assert np.array_equal(got[b"data"], data) and got[b"labels"] == [3, 1]


# ---- tampered checkpoint fields ----


@pytest.mark.parametrize(
    "field, value, word",
    [
        ("epoch", -5, "epoch"),
        ("epoch", "2", "epoch"),
        ("epoch", 99, "epoch"),
        ("metrics", "[]", "metrics"),
        ("metrics", "[" * 100000, "metrics"),
        ("trace", None, "trace"),
        ("model", {"x": torch.zeros(1)}, "model"),
        ("generator", torch.zeros(3, dtype=torch.uint8), "generator"),
        ("format", 1, "format"),
    ],
)
def test_tampered_checkpoint_fields_are_named(tmp_path, kill_after, capsys, field, value, word):
    out = tmp_path / "run"
    with pytest.raises(kill_after(2)):
        train(tiny(out), progress=False)
    state = read_checkpoint(out / CHECKPOINT)
    state[field] = value
    write_checkpoint(out / CHECKPOINT, state)
    code = main(["train", *BASE, "--out", str(out), "--resume"])
    one_line(capsys, code, 2, word)


def test_checkpoint_trace_lengths_are_checked(tmp_path, kill_after, capsys):
    out = tmp_path / "run"
    with pytest.raises(kill_after(2)):
        train(tiny(out), progress=False)
    state = read_checkpoint(out / CHECKPOINT)
    state["trace"]["lrs"].append(0.1)  # one more epoch in the trace than the checkpoint says
    write_checkpoint(out / CHECKPOINT, state)
    one_line(capsys, main(["train", *BASE, "--out", str(out), "--resume"]), 2, "trace.lrs")


# ---- user errors against our own bugs ----


@pytest.mark.parametrize("exc", [ValueError("a bug"), TypeError("a bug"), KeyError("a bug")])
def test_internal_value_and_type_errors_are_internal(monkeypatch, capsys, exc):
    import npe_theory.cli as tcli

    def boom(args):
        raise exc

    monkeypatch.setattr(tcli, "cmd_priors", boom)
    err = one_line(capsys, main(["priors", "--lam", "1e-3"]), 1, f"internal error: {type(exc).__name__}")
    os.unlink(err.strip().rsplit("full traceback in ", 1)[1].rstrip(")"))


def test_a_checked_refusal_is_exit_2(monkeypatch, capsys):
    import npe_theory.cli as tcli
    from npe_theory.errors import InputError

    def refuse(args):
        raise InputError("lam: refused")

    monkeypatch.setattr(tcli, "cmd_priors", refuse)
    one_line(capsys, main(["priors", "--lam", "1e-3"]), 2, "lam: refused")


def test_internal_error_during_a_run_logs_into_the_run_folder(tmp_path, monkeypatch, capsys):
    import npe_train.methods.trace as tr

    def broken(*args, **kwargs):
        raise TypeError("a bug in the loop")

    monkeypatch.setattr(tr.Trace, "record_epoch", broken)
    err = one_line(
        capsys, main(["train", *BASE, "--out", str(tmp_path / "run")]), 1, "internal error: TypeError"
    )
    assert str(tmp_path / "run" / "crash.log") in err
    assert "a bug in the loop" in (tmp_path / "run" / "crash.log").read_text()


def test_crash_logs_in_the_temporary_folder_do_not_pile_up(monkeypatch, capsys, tmp_path):
    import tempfile

    import npe.cli as cli
    import npe_theory.cli as tcli

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tcli, "cmd_priors", lambda args: 1 / 0)
    for _ in range(cli.CRASH_LOGS_KEPT + 4):
        main(["priors", "--lam", "1e-3"])
        capsys.readouterr()
    assert len(list(tmp_path.glob("npe-crash-*.log"))) == cli.CRASH_LOGS_KEPT


# ---- sizes bounded before allocation, fields validated ----


def _forged_npy(path, shape, dtype="<f8"):
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 64)


def _report_dump(folder, n=40, c=3, d=4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.arange(n) % c
    np.save(folder / "eta.npy", rng.normal(size=(n, c)))
    np.save(folder / "features.npy", rng.normal(size=(n, d)))
    np.save(folder / "labels.npy", labels)
    (folder / "settings.toml").write_text("weight_decay = 1e-3\nlambda_s = 0.5\n")
    return folder


@pytest.mark.parametrize(
    "case",
    [
        "npy header claims 1e12 rows",
        "npy header of objects",
        "settings /dev/zero",
        "settings 1e7 epochs at batch 1",
        "counts.json nested 100000 deep",
        "counts.json of booleans",
        "settings [pem] not a table",
    ],
)
def test_report_inputs_are_bounded(tmp_path, capsys, case):
    folder = _report_dump(tmp_path / "dump")
    extra = []
    if case == "npy header claims 1e12 rows":
        _forged_npy(folder / "features.npy", (10**12, 4))
    elif case == "npy header of objects":
        _forged_npy(folder / "eta.npy", (40, 3), "|O")
    elif case == "settings /dev/zero":
        extra = ["--settings", "/dev/zero"]
    elif case == "settings 1e7 epochs at batch 1":
        (folder / "settings.toml").write_text(
            "weight_decay = 1e-3\nlr = 0.1\nbatch_size = 1\nepochs = 10000000\n"
        )
    elif case == "counts.json nested 100000 deep":
        (folder / "counts.json").write_text("[" * 100000 + "]" * 100000)
    elif case == "counts.json of booleans":
        (folder / "counts.json").write_text("[true, true, false]")
    else:
        (folder / "settings.toml").write_text("pem = 3\n")
    code = main(["report", str(folder), *extra])
    one_line(capsys, code, 2, "npe: error")


def test_npy_labels_beyond_the_class_limit(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "X.npy", np.zeros((6, 3), np.float32))
    np.save(tmp_path / "d" / "y.npy", np.array([0, 1, 2, 0, 1, 2**40]))
    code = main(
        [
            "train",
            "--dataset",
            "npy",
            "--data-dir",
            str(tmp_path / "d"),
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    one_line(capsys, code, 2, "classes")


def test_npy_without_features_is_refused(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "X.npy", np.zeros((6, 0), np.float32))
    np.save(tmp_path / "d" / "y.npy", np.array([0, 1, 0, 1, 0, 1]))
    code = main(
        [
            "train",
            "--dataset",
            "npy",
            "--data-dir",
            str(tmp_path / "d"),
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    one_line(capsys, code, 2, "no features")


def _png_claiming(path, width, height):
    """A PNG whose header claims width x height (its data is one tiny block): decoded, it would need width*height*3 bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_image_whose_header_claims_30000_squared(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    _png_claiming(tmp_path / "imgs" / "a" / "9.png", 30000, 30000)
    code = main(
        [
            "train",
            "--dataset",
            "folder",
            "--data-dir",
            str(tmp_path / "imgs"),
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    one_line(capsys, code, 2, "9.png")


@pytest.mark.parametrize(
    "flag, value", [("--n-max", "100000000"), ("--image-size", "100000"), ("--pem-hidden", "10000000")]
)
def test_size_flags_are_bounded(tmp_path, capsys, flag, value):
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            flag,
            value,
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    one_line(capsys, code, 2, flag[2:].replace("-", "_"))


def test_tampered_results_json_in_compare(tmp_path, capsys):
    train(tiny(tmp_path / "run", epochs=1), progress=False)
    (tmp_path / "run" / "results.json").write_text("[" * 100000)
    one_line(capsys, main(["compare", str(tmp_path / "run")]), 2, "results.json")


# ---- API classes ----


def test_api_edge_classes():
    from npe_theory.dynamics import lambda_s, loss_slope
    from npe_theory.priors import prior_match
    from npe_theory.report import regime
    from npe_train import PriorEstimator, one_way_logistic_loss
    from npe_train.methods.pem_loss import heads_loss
    from npe_train.tasks.rules import adjusted_logits, expected_calibration_error

    eta = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(
        one_way_logistic_loss(eta, y.to(torch.int8)), one_way_logistic_loss(eta, y)
    )  # any integer ids
    pem = PriorEstimator(4, 3)
    h = torch.randn(5, 4)
    assert torch.allclose(
        pem(h.half()), pem(h.half().float())
    )  # half features into a float32 PEM: the right value
    with pytest.raises(ValueError, match="^init_std"):
        PriorEstimator(4, 3, init_std=float("inf"))
    with pytest.raises(ValueError, match="^weight"):
        heads_loss(eta[None], y, weight=torch.tensor([1.0, float("nan"), 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="^loss"):
        loss_slope(np.zeros(2), "hinge")
    with pytest.raises(ValueError, match="^rule"):
        adjusted_logits("npe_la_typo", np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="^lam_s"):
        regime(float("nan"))
    with pytest.raises(ValueError, match="^weight_decay, lrs"):
        lambda_s(1e308, [1e308])
    m = prior_match(
        [1e-200, 2e-200, 3e-200], [10, 20, 40]
    )  # a spread far below 1: R^2 and slope still numbers
    assert m.r2 == pytest.approx(1.0) and m.slope == pytest.approx(1e-200 / np.log(2), rel=1e-9)
    probs = torch.softmax(torch.randn(8, 3, requires_grad=True), 1)
    labels = np.arange(8) % 3
    assert expected_calibration_error(probs, labels) == expected_calibration_error(
        probs.detach().numpy(), labels
    )


# ---- real faults ----


def test_resume_a_folder_killed_before_its_first_checkpoint(tmp_path, monkeypatch):
    import npe_train.loop.train as tr

    full = train(tiny(tmp_path / "full"), progress=False)

    class Killed(Exception):
        pass

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(tr, "save_checkpoint", die)
    with pytest.raises(Killed):
        train(tiny(tmp_path / "cut"), progress=False)
    assert not (tmp_path / "cut" / CHECKPOINT).exists() and (tmp_path / "cut" / "config.json").exists()
    monkeypatch.undo()
    resumed = train(tiny(tmp_path / "cut"), resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"] and resumed["pem"]["learned"] == full["pem"]["learned"]
    with pytest.raises(ValueError, match="other run"):  # another run's start is not taken over
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "config.json").write_text(json.dumps({"seed": 1}))
        (tmp_path / "other" / "metrics.jsonl").write_text("")
        train(tiny(tmp_path / "other"), resume=True, progress=False)


def test_a_moved_run_folder_resumes(tmp_path, kill_after):
    full = train(tiny(tmp_path / "full"), progress=False)
    with pytest.raises(kill_after(2)):
        train(tiny(tmp_path / "cut"), progress=False)
    shutil.move(tmp_path / "cut", tmp_path / "moved")
    resumed = train(tiny(tmp_path / "moved"), resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"] and resumed["pem"]["learned"] == full["pem"]["learned"]
    assert resumed["config"]["out"] == str(tmp_path / "moved")


def _as_root_with_mounts():
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/npe-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
        ).returncode
        == 0
    )
    if ok:
        subprocess.run(["umount", str(probe)], capture_output=True)
    probe.rmdir()
    return ok


mounts = pytest.mark.skipif(
    not _as_root_with_mounts(), reason="needs root and mount (real tmpfs and bind mounts)"
)


@pytest.fixture
def small_tmpfs(tmp_path):
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


@mounts
def test_a_real_full_disk_keeps_the_last_good_checkpoint(small_tmpfs, monkeypatch, capsys):
    import npe_train.loop.train as tr

    out, real, calls = small_tmpfs / "run", tr.save_checkpoint, {"n": 0}

    def fill_after_two(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the disk fills up from outside: the next checkpoint's write hits ENOSPC
            with open(small_tmpfs / "filler", "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                except OSError:
                    pass

    monkeypatch.setattr(tr, "save_checkpoint", fill_after_two)
    code = main(["train", *BASE, "--out", str(out)])
    err = one_line(capsys, code, 2, "disk is full")
    assert str(out) in err
    assert read_checkpoint(out / CHECKPOINT)["epoch"] == 1  # the last good one
    assert not list(out.glob("*.tmp")), "a partial file was left behind"


@mounts
def test_a_full_disk_under_the_tensorboard_log_is_the_same_one_line_with_its_path(
    small_tmpfs, tmp_path, capsys
):
    """The TensorBoard events are written in the training thread: a full disk there is the one-line error naming the
    event file (no traceback from a writer thread), and the run folder keeps its last checkpoint."""
    pytest.importorskip("tensorboard")
    with open(small_tmpfs / "filler", "wb") as fh:  # the log's disk is full from the start
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    out = tmp_path / "run"
    code = main(["train", *BASE, "--out", str(out), "--tensorboard", str(small_tmpfs / "tb")])
    err = one_line(capsys, code, 2, "disk is full")
    assert str(small_tmpfs / "tb") in err and "events.out.tfevents" in err
    assert "Traceback" not in err


@mounts
def test_a_real_read_only_mount(tmp_path, capsys):
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        code = main(["train", *BASE, "--out", str(ro / "run")])
        one_line(capsys, code, 2, "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
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
    run = subprocess.Popen(
        [sys.executable, "-m", "npe", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / CHECKPOINT).exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "interrupted" in err and "continue the run with: npe train" in err and "--resume" in err, err
    saved = read_checkpoint(out / CHECKPOINT)["epoch"]
    assert 0 <= saved < 399


RESULT_FIELDS = [
    ("config",),
    ("config", "dataset"),
    ("config", "method"),
    ("config", "imbalance"),
    ("config", "seed"),
    ("epochs",),
    ("counts",),
    ("counts", 0),
    ("accuracy",),
    ("accuracy", "npe_la"),
    ("accuracy", "npe_la", "overall"),
    ("calibration",),
    ("calibration", "npe_la"),
    ("calibration", "npe_la", "ece"),
    ("pem", "lambda_s"),
    ("pem", "nc1"),
    ("pem", "regime"),
    ("pem", "prior_match"),
    ("pem", "prior_match", "vs_log_counts"),
    ("pem", "prior_match", "vs_log_counts", "centered_rmse"),
    ("pem", "prior_match", "vs_log_counts", "slope"),
    ("pem", "prior_match", "vs_equilibrium", "centered_rmse"),
]
HOSTILE_JSON = ["abc", -1, 0, None, [], {}, True, 1e308, [1, "x"], {"overall": "x"}]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(out, epochs=1), progress=False)
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("field", RESULT_FIELDS, ids=[".".join(map(str, f)) for f in RESULT_FIELDS])
def test_every_field_compare_reads_is_checked(field, finished, tmp_path, capsys):
    """22 fields x 10 hostile values (220 cases): npe compare prints its table (exit 0) or one line naming the file and
    the field (exit 2); never a traceback or an internal error."""
    import copy

    for value in HOSTILE_JSON:
        raw = copy.deepcopy(finished)
        node = raw
        for key in field[:-1]:
            node = node[key]
        node[field[-1]] = value
        run = tmp_path / f"r{HOSTILE_JSON.index(value)}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps(raw))
        code = main(["compare", str(run)])
        captured = capsys.readouterr()
        assert code in (0, 2), (field, value, captured.err)
        if code == 2:
            assert len(captured.err.strip().splitlines()) == 1 and "results.json" in captured.err, (
                field,
                value,
                captured.err,
            )
        else:
            assert "Traceback" not in captured.err and captured.out.strip(), (field, value)


TRACE_FIELDS = [
    ("lrs",),
    ("steps",),
    ("init_weight",),
    ("init_bias",),
    ("replay",),
    ("replay", "weight"),
    ("replay", "velocity_bias"),
    ("stream",),
    ("stream", "counts"),
    ("stream", "index"),
]
HOSTILE_TENSORS = [
    lambda v: None,
    lambda v: "x",
    lambda v: 3.5,
    lambda v: [],
    lambda v: {},
    lambda v: (
        torch.full_like(v, float("nan"))
        if isinstance(v, torch.Tensor) and v.is_floating_point()
        else torch.tensor([float("nan")])
    ),
    lambda v: torch.zeros(2, 3, 4, 5),
    lambda v: torch.ones(3, dtype=torch.int8),
]


@pytest.fixture(scope="module")
def killed_checkpoint(tmp_path_factory):
    import npe_train.loop.train as tr

    out = tmp_path_factory.mktemp("killed") / "run"
    real, calls = tr.save_checkpoint, {"n": 0}

    class Stop(Exception):
        pass

    def save(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop

    tr.save_checkpoint = save
    try:
        with pytest.raises(Stop):
            train(tiny(out), progress=False)
    finally:
        tr.save_checkpoint = real
    return out


@pytest.mark.parametrize("field", TRACE_FIELDS, ids=[".".join(map(str, f)) for f in TRACE_FIELDS])
def test_every_trace_field_of_a_checkpoint_is_checked(field, killed_checkpoint, tmp_path, capsys):
    """12 trace fields x 8 hostile values (96 cases): --resume refuses with one line naming the checkpoint (exit 2);
    never a traceback, an internal error, or a run that goes on with a damaged trace (NaN initial PEM weights and NaN
    stream counts went on before this test)."""
    for i, make in enumerate(HOSTILE_TENSORS):
        run = tmp_path / f"r{i}"
        shutil.copytree(killed_checkpoint, run)
        state = read_checkpoint(run / CHECKPOINT)
        node = state["trace"]
        for key in field[:-1]:
            node = node[key]
        node[field[-1]] = make(node[field[-1]])
        write_checkpoint(run / CHECKPOINT, state)
        code = main(["train", *BASE, "--out", str(run), "--resume"])
        err = capsys.readouterr().err
        if field == ("stream", "index") and i == 0:  # None is what a fixed stream stores: the run goes on
            assert code == 0, err
            continue
        assert code == 2 and len(err.strip().splitlines()) == 1 and "checkpoint" in err, (field, i, err)


def _older_trace(state: dict, layout: str) -> dict:
    """The trace as formats 3-5 kept it: each step's class shares (one tensor per epoch in 3, packed in 4 and 5) where
    format 6 keeps the step counts; the shares' values are any valid ones (nothing reads them back)."""
    trace = dict(state["trace"])
    steps, C = trace.pop("steps"), trace["stream"]["counts"].shape[0]
    blocks = [torch.full((k, C), 1.0 / C) for k in steps]
    trace["fractions"] = blocks if layout == "list" else {"steps": steps, "shares": torch.cat(blocks)}
    return trace


@pytest.mark.parametrize("fmt, layout", [(3, "list"), (5, "packed")])
def test_an_older_format_checkpoint_still_resumes(fmt, layout, killed_checkpoint, tmp_path):
    """Formats 3 to 5 kept every step's class shares in the trace (3: one tensor per epoch; 4 and 5: packed into one).
    A run checkpointed by those versions resumes to the same result as the uninterrupted run; shares that are not
    finite class shares are refused in one line, as they were."""
    run = tmp_path / "old"
    shutil.copytree(killed_checkpoint, run)
    state = read_checkpoint(run / CHECKPOINT)
    write_checkpoint(run / CHECKPOINT, {**state, "trace": _older_trace(state, layout), "format": fmt})
    resumed = train(tiny(run), resume=True, progress=False)
    full = train(tiny(tmp_path / "full"), progress=False)
    assert (
        resumed["accuracy"] == full["accuracy"]
        and resumed["pem"]["equilibrium"] == full["pem"]["equilibrium"]
    )
    assert (
        read_checkpoint(run / CHECKPOINT)["trace"]["steps"]
        == read_checkpoint(tmp_path / "full" / CHECKPOINT)["trace"]["steps"]
    )
    bad = tmp_path / "bad"
    shutil.copytree(killed_checkpoint, bad)
    trace = _older_trace(state, layout)
    if layout == "list":
        trace["fractions"][0] = torch.full_like(trace["fractions"][0], float("nan"))
    else:
        trace["fractions"]["steps"] = [1]  # no longer the packed array's length
    write_checkpoint(bad / CHECKPOINT, {**state, "trace": trace, "format": fmt})
    with pytest.raises(ValueError, match="trace.fractions"):
        train(tiny(bad), resume=True, progress=False)


# ---- the checkpoint format: safetensors, and the earlier pickle-based one on a safe torch only ----


def test_torch_load_is_gated_by_the_version_without_known_bypasses():
    from npe_train.models.weights import torch_load_is_safe

    assert not torch_load_is_safe("2.5.1") and not torch_load_is_safe("2.9.1+cu121")
    assert torch_load_is_safe("2.10.0") and torch_load_is_safe("2.13.0+cpu")


def test_an_earlier_checkpoint_resumes_bit_identically_and_is_replaced(tmp_path, kill_after):
    """A run killed under the earlier format (torch.save, format 4) continues to the same network and results as an
    uninterrupted run, and its next checkpoint is written in the safetensors format."""
    full = train(tiny(tmp_path / "full"), progress=False)
    cut = tmp_path / "cut"
    with pytest.raises(kill_after(2)):
        train(tiny(cut), progress=False)
    state = read_checkpoint(cut / CHECKPOINT)
    torch.save({**state, "format": 4}, cut / "checkpoint.pt")
    (cut / CHECKPOINT).unlink()
    resumed = train(tiny(cut), resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"] and resumed["pem"]["learned"] == full["pem"]["learned"]
    assert not (cut / "checkpoint.pt").exists() and (cut / CHECKPOINT).exists()
    a, b = (
        read_checkpoint(tmp_path / "full" / CHECKPOINT)["model"],
        read_checkpoint(cut / CHECKPOINT)["model"],
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_on_an_unsafe_torch_pickle_files_are_refused_in_one_line(tmp_path, kill_after, capsys, monkeypatch):
    import npe_train.models.weights as weights

    out = tmp_path / "run"
    with pytest.raises(kill_after(2)):
        train(tiny(out), progress=False)
    torch.save(read_checkpoint(out / CHECKPOINT), out / "checkpoint.pt")
    (out / CHECKPOINT).unlink()
    monkeypatch.setattr(weights, "torch_load_is_safe", lambda version=None: False)
    err = one_line(capsys, main(["train", *BASE, "--out", str(out), "--resume"]), 2, "CVE-2025-32434")
    assert "checkpoint.pt" in err and ".safetensors" in err
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="^weights: .*cannot read safely"):
        weights.read_state_dict(tmp_path / "w.pt")


def test_state_dicts_read_from_safetensors_and_from_torch_save_alike(tmp_path):
    from safetensors.torch import save_file

    from npe_train.models.weights import read_state_dict

    state = torch.nn.Linear(3, 2).state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ValueError, match="^weights: .*not a readable safetensors file"):
        read_state_dict(tmp_path / "bad.safetensors")


def test_a_checkpoint_structure_pointing_at_a_missing_tensor_is_named(tmp_path, kill_after, capsys):
    from safetensors.torch import save

    out = tmp_path / "run"
    with pytest.raises(kill_after(2)):
        train(tiny(out), progress=False)
    text = json.dumps({"format": 5, "model": {"$tensor": "t999"}}).encode()
    (out / CHECKPOINT).write_bytes(
        save({"npe.structure": torch.frombuffer(bytearray(text), dtype=torch.uint8)})
    )
    one_line(capsys, main(["train", *BASE, "--out", str(out), "--resume"]), 2, "stored tensor")
