"""The training core and the npe train / compare commands, end to end on tiny runs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from npe_train.data.files import write_fake_cifar
from npe_train.loop.build import lr_factor
from npe_train.loop.train import TrainingDiverged, train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import TrainConfig, make_config


def tiny(tmp_path, **kw):
    base = dict(
        dataset="synthetic", imbalance=20, epochs=4, batch_size=64, lr=0.05, out=str(tmp_path / "run"), seed=1
    )
    base.update(kw)
    return make_config(**base)


def test_run_folder_and_results(tmp_path):
    res = train(tiny(tmp_path), progress=False)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "metrics.jsonl",
        "results.json",
        "checkpoint.safetensors",
        "pem_vs_log_counts.png",
        "training_curves.png",
        "accuracy_by_group.png",
        "reliability.png",
        "eta_matrix.png",
    ):
        assert (run / name).is_file(), name
    saved = json.loads((run / "results.json").read_text())
    assert saved["accuracy"].keys() == {
        "argmax",
        "posthoc_la",
        "npe_la",
        "npe_marginal",
        "npe_class_mean",
        "npe_inverse",
    }
    for rule in saved["accuracy"]:
        assert {"overall", "many", "medium", "few", "per_class"} <= saved["accuracy"][rule].keys()
        assert 0 <= saved["accuracy"][rule]["overall"] <= 1
    fields = {"offset", "centered_rmse", "max_deviation", "slope", "intercept", "r2", "spearman", "kl", "tv"}
    assert fields <= saved["pem"]["prior_match"]["vs_log_counts"].keys()
    assert fields <= saved["pem"]["prior_match"]["vs_closed_form"].keys()
    assert np.array(saved["pem"]["eta_matrix"]).shape == (10, 10)
    assert saved["calibration"].keys() == saved["accuracy"].keys()
    assert all(0 <= c["ece"] <= 1 and sum(c["bins"]["count"]) == 2000 for c in saved["calibration"].values())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2, 3] and all("pem_learned" in x for x in lines)
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    # overall accuracy is the mean of the per-class accuracies (balanced test set)
    acc = saved["accuracy"]["npe_la"]
    assert acc["overall"] == pytest.approx(np.mean(acc["per_class"]))
    assert res["pem"]["closed_form_applies"]


def test_accuracy_rules_by_hand():
    from npe_train.tasks.rules import accuracy_report

    counts = np.array([150, 50, 5])  # many, medium, few
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 0.0, 0.9], [0.5, 1.0, 0.0]])
    eta = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2, 2, 1])
    rep = accuracy_report(logits, eta, y, counts, tau=1.0, tau_grid=[0.0, 1.0])
    # argmax predicts [0, 1, 0, 1]: class 0 right, class 2 wrong twice, class 1 right
    assert rep["accuracy"]["argmax"]["per_class"] == [1.0, 1.0, 0.0]
    # npe_la: z - eta = [[-1,1,0],[0,1,1.5],[0,0,0.9],[0.5,1,0]] predicts [1, 2, 2, 1]
    assert rep["accuracy"]["npe_la"]["per_class"] == [0.0, 1.0, 1.0]
    assert rep["accuracy"]["npe_la"]["many"] == 0.0 and rep["accuracy"]["npe_la"]["few"] == 1.0
    assert rep["accuracy"]["npe_la"]["overall"] == pytest.approx(2 / 3)
    # posthoc_la: z - ln pi adds ln(205/5) to the few class
    assert rep["accuracy"]["posthoc_la"]["per_class"][2] == 1.0
    assert rep["tau_sweep"]["npe_la"]["0"]["overall"] == rep["accuracy"]["argmax"]["overall"]
    with pytest.raises(ValueError, match="^y"):
        accuracy_report(logits, eta, np.array([0, 0, 2, 2]), counts, 1.0, [1.0])


def test_resume_reaches_the_same_result(tmp_path, kill_after):
    full = train(tiny(tmp_path, out=str(tmp_path / "full")), progress=False)
    cfg = tiny(tmp_path, out=str(tmp_path / "cut"))
    with pytest.raises(kill_after(2)):
        train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "cut" / CHECKPOINT)["epoch"] == 1
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["pem"]["learned"] == full["pem"]["learned"]
    assert resumed["pem"]["finite_time"] == full["pem"]["finite_time"]  # the trace survives the checkpoint
    assert resumed["pem"]["lambda_s"] == full["pem"]["lambda_s"]
    a = read_checkpoint(tmp_path / "full" / CHECKPOINT)["model"]
    b = read_checkpoint(tmp_path / "cut" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 4


def test_resume_refuses_other_settings(tmp_path, kill_after):
    with pytest.raises(kill_after(1)):
        train(tiny(tmp_path, epochs=2), progress=False)
    with pytest.raises(ValueError, match="^resume"):
        train(tiny(tmp_path, epochs=2, lr=0.01), resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import npe_train.methods.objective as tr

    real, calls = tr.heads_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] > 6 else out  # 4 steps per epoch: NaN from epoch 2 on

    monkeypatch.setattr(tr, "heads_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(tiny(tmp_path, n_max=60), progress=False)
    ckpt = read_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("method", ["ce", "la_loss"])
def test_baselines_train_with_a_detached_probe(tmp_path, method):
    res = train(tiny(tmp_path, method=method, epochs=2), progress=False)
    assert res["config"]["pem_detach"] is True and res["accuracy"]["npe_la"]["overall"] >= 0


def test_resnet32_on_fake_cifar(tmp_path):
    write_fake_cifar(tmp_path / "data", 10, train_per_class=8, test_per_class=2)
    res = train(
        make_config(
            dataset="cifar10",
            n_max=8,
            imbalance=4,
            epochs=1,
            batch_size=16,
            data_dir=str(tmp_path / "data"),
            out=str(tmp_path / "run"),
            num_pems=2,
        ),
        progress=False,
    )
    assert res["config"]["model"] == "resnet32" and res["config"]["augment"] is True
    assert len(res["pem"]["learned"]) == 10


def test_schedules():
    cfg = TrainConfig(epochs=10, schedule="step", milestones=[5, 8], gamma=0.1, warmup_epochs=2).resolved()
    assert [lr_factor(cfg, e) for e in range(10)] == pytest.approx(
        [1 / 3, 2 / 3, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    )
    cos = TrainConfig(epochs=4).resolved()
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(dataset="imagenet"), "dataset"),
        (dict(model="vit"), "model"),
        (dict(method="focal"), "method"),
        (dict(imbalance=0.5), "imbalance"),
        (dict(epochs=0), "epochs"),
        (dict(weight_decay=0.0), "weight_decay"),
        (dict(warmup_epochs=60), "warmup_epochs"),
        (dict(lr=float("nan")), "lr"),
        (dict(compile="fast"), "compile"),
        (dict(pipeline="ffcv"), "pipeline"),
        (dict(workers=-1), "workers"),
        (dict(dataset="mnist1d", augment=True), "augment"),
        (dict(amp="yes"), "amp"),
    ],
)
def test_config_errors_name_the_field(kw, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        make_config(**kw)


def npe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "npe", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.mark.slow
def test_cli_train_and_compare(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\ndataset = "synthetic"\nepochs = 2\nimbalance = 10\n')
    out = npe("train", "--config", str(cfg), "--seed", "3", "--out", str(tmp_path / "a"), "--quiet")
    assert out.returncode == 0, out.stderr
    for word in (
        "argmax (this network)",
        "advice:",
        "classes / test samples",
        "post-hoc LA",
        "NPE-LA",
        "PEM vs ln N_c",
        "PEM vs closed form",
    ):
        assert word in out.stdout
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["seed"] == 3 and saved["epochs"] == 2 and saved["imbalance"] == 10  # file < flags
    assert (
        npe(
            "train", "--config", str(cfg), "--out", str(tmp_path / "b"), "--method", "ce", "--quiet"
        ).returncode
        == 0
    )
    cmp = npe("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert cmp.returncode == 0 and "NPE-LA overall" in cmp.stdout and cmp.stdout.count("synthetic") == 2
    assert (
        "pem_detach" in cmp.stdout and "momentum" not in cmp.stdout
    )  # the settings that differ, and only those


def in_process(args, capsys) -> tuple[int, str]:
    """(exit code, stderr) of the npe command run in this process (argparse's own errors exit through SystemExit);
    the fuzz suite runs such command lines as subprocesses."""
    from npe.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, word",
    [
        (["train", "--dataset", "nope"], "dataset"),
        (["train", "--model", "vit"], "model"),
        (["train", "--method", "magic"], "method"),
        (["train", "--imbalance", "0.5"], "imbalance"),
        (["train", "--dataset", "cifar10", "--data-dir", "/nonexistent"], "data_dir"),
        (["train", "--epochs", "x"], "--epochs"),
        (["train", "--compile", "turbo"], "compile"),
        (["compare", "/nonexistent-run"], "RUN_DIR"),
    ],
)
def test_cli_errors_are_one_line(args, word, capsys):
    code, err = in_process(args, capsys)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and word in err


def test_cli_malformed_config(tmp_path, capsys):
    for text in ('epochs = "ten"\n', "epochz = 3\n", "epochs = [\n"):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(text)
        code, err = in_process(["train", "--config", str(cfg)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """DDP on CPU (gloo, 2 processes): interleaved shards of one permutation make the global batch the
    single-process batch, so an MLP (no batch norm) trains to the same result; rank 0 alone writes."""
    common = ["--dataset", "synthetic", "--imbalance", "20", "--epochs", "3", "--device", "cpu", "--quiet"]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "npe",
            "train",
            *common,
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("run folder:") == 1  # one summary: rank 0's
    single = train(
        make_config(dataset="synthetic", imbalance=20, epochs=3, device="cpu", out=str(tmp_path / "one")),
        progress=False,
    )
    two = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert two["world_size"] == 2 and single["world_size"] == 1
    for rule in ("argmax", "posthoc_la", "npe_la"):
        assert two["accuracy"][rule]["overall"] == pytest.approx(
            single["accuracy"][rule]["overall"], abs=2e-3
        )
    np.testing.assert_allclose(two["pem"]["learned"], single["pem"]["learned"], atol=1e-4)
    # each rank's column sums of the training set's outputs, gathered: the marginal prior over all of it
    np.testing.assert_allclose(two["priors"]["marginal"], single["priors"]["marginal"], atol=1e-4)
    np.testing.assert_allclose(
        two["pem"]["conditional_slopes"]["per_row"], single["pem"]["conditional_slopes"]["per_row"], atol=1e-3
    )
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # not one per rank


def test_first_run_equals_cached_run(tmp_path, monkeypatch):
    """Generating MNIST-1D (first run) and loading it from the cache must train the same network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = dict(dataset="mnist1d", imbalance=100, epochs=1, batch_size=128)
    first = train(make_config(out=str(tmp_path / "a"), **cfg), progress=False)
    cached = train(make_config(out=str(tmp_path / "b"), **cfg), progress=False)
    assert first["pem"]["learned"] == cached["pem"]["learned"]
    assert first["accuracy"] == cached["accuracy"]


def test_expected_calibration_error_against_a_direct_loop():
    from npe_train.tasks.rules import expected_calibration_error

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 500)
    conf, pred = probs.max(1), probs.argmax(1)
    direct = 0.0
    for b in range(15):  # Prior-LT's rule: lo < conf <= hi
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            direct += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    assert expected_calibration_error(probs, y) == pytest.approx(direct, abs=1e-12)
    # hand-built: two samples at confidence 0.8 (one right), one at exactly 0.6 = 9/15, an upper edge (right)
    p = np.array([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4]])
    assert expected_calibration_error(p, np.array([0, 1, 0])) == pytest.approx(
        (2 / 3) * abs(0.5 - 0.8) + (1 / 3) * abs(1 - 0.6)
    )
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0  # confident and right
    with pytest.raises(ValueError, match="^probs"):
        expected_calibration_error(np.ones((2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="^labels"):
        expected_calibration_error(np.eye(2), np.array([0, 2]))


def test_the_summary_prints_index_groups_beside_count_groups_only_where_they_differ():
    from npe_train.cli import index_group_lines
    from npe_train.tasks.rules import accuracy_report

    y = np.repeat(np.arange(100), 2)
    logits = np.full((200, 100), -5.0)
    logits[np.arange(200), np.where(y < 50, y, 0)] = 5.0
    counts = np.array([500 - 4 * c for c in range(100)])
    rep = accuracy_report(logits, np.zeros_like(logits), y, counts, 1.0, [1.0])
    lines = index_group_lines({**rep, "counts": counts.tolist()})
    # 100 classes: the two codes' ranges differ, so each has its block, labelled with its ranges
    assert [ln.strip() for ln in lines if ln.strip().startswith("(")] == [
        "(the NPE code's index groups: classes 0-35 / 36-70 / 71-99)",
        "(Prior-LT's index groups: classes 0-32 / 33-65 / 66-99)",
    ]
    # argmax is the first rule of each block: header, label, then argmax
    assert f"{14 / 35:.3f}" in lines[2] and f"{17 / 33:.3f}" in lines[7]
    # 10 classes whose count groups are the index groups class for class: nothing to add
    ten = np.array([1000, 600, 300, 90, 60, 40, 25, 15, 10, 5])
    y10 = np.repeat(np.arange(10), 3)
    rep10 = accuracy_report(np.eye(10)[y10], np.zeros((30, 10)), y10, ten, 1.0, [1.0])
    assert index_group_lines({**rep10, "counts": ten.tolist()}) == []
    # the same 10 classes with CIFAR-10-LT's counts (8 of them above 100): one shared block
    cifar = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    rep10 = accuracy_report(np.eye(10)[y10], np.zeros((30, 10)), y10, cifar, 1.0, [1.0])
    shared = index_group_lines({**rep10, "counts": cifar.tolist()})
    assert "(the NPE code's index groups and Prior-LT's index groups: classes 0-2 / 3-6 / 7-9)" in shared[1]


def test_index_groups_of_the_official_codes():
    from npe_train.tasks.rules import accuracy_report

    counts = np.array([500 - 4 * c for c in range(100)])
    y = np.repeat(np.arange(100), 2)
    logits = np.full((200, 100), -5.0)
    logits[np.arange(200), np.where(y < 50, y, 0)] = 5.0  # classes 0..49 right, the rest predicted as 0
    rep = accuracy_report(logits, np.zeros_like(logits), y, counts, 1.0, [1.0])
    npe, plt_ = (
        rep["accuracy_by_index"]["npe_official"]["argmax"],
        rep["accuracy_by_index"]["prior_lt"]["argmax"],
    )
    assert (npe["head"], npe["medium"], npe["tail"]) == (
        1.0,
        pytest.approx(14 / 35),
        0.0,
    )  # [36, 71): 36..49 right
    assert (plt_["head"], plt_["medium"], plt_["tail"]) == (
        1.0,
        pytest.approx(17 / 33),
        0.0,
    )  # [33, 66): 33..49 right
    assert "accuracy_by_index" not in accuracy_report(
        logits[:12, :12], np.zeros((12, 12)), np.arange(12), counts[:12], 1.0, [1.0]
    )


def test_training_curves_show_every_evaluation_with_eval_every(tmp_path, monkeypatch):
    """With --eval-every > 1 (one evaluation, at the end) the accuracy and RMSE panels still draw a visible point."""
    import npe_train.run.plots as plots

    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi=None: figs.append(fig) or path)
    train(
        make_config(
            dataset="synthetic", epochs=3, eval_every=5, n_max=100, imbalance=10, out=str(tmp_path / "run")
        ),
        progress=False,
    )
    curves = next(f for f in figs if "balanced test accuracy" in [a.get_title() for a in f.axes][1])
    for ax in curves.axes:
        data = [ln for ln in ax.get_lines() if ln.get_label() != "equilibrium threshold"]
        lines = [
            ln
            for ln in data
            if len(ln.get_xdata()) and ln.get_marker() not in (None, "None", "") or len(ln.get_xdata()) > 1
        ]
        bars = [p for p in ax.patches if p.get_height() > 0]  # one evaluation: a bar per rule
        assert lines or bars, f"empty panel: {ax.get_title()}"


@pytest.mark.parametrize(
    "n, batch, world",
    [(33, 16, 1), (65, 32, 1), (66, 32, 2), (16, 16, 1), (1, 16, 1), (34, 16, 2), (17, 16, 1)],
)
def test_no_step_and_no_training_mode_batch_holds_a_single_sample(n, batch, world):
    """BatchNorm cannot take one sample per rank: the loop drops such a last step (and plans lambda*s without it), the
    training-mode pass of the report merges it into the batch before; every other sample is kept."""
    from npe_train.device.distributed import Dist
    from npe_train.loop.step import StepContext, epoch_plan, padded_length
    from npe_train.methods.mixing import NoMixing
    from npe_train.tasks.base import train_mode_batches
    from npe_train.tasks.classification import Classification

    y = np.arange(n) % 3
    task = Classification(None, batch, 0, 1.0, (1.0,), False)
    lengths = []
    for rank in range(world):
        plan = epoch_plan(
            torch.Generator().manual_seed(0),
            y,
            StepContext(task, NoMixing(), batch, False, Dist(rank, world), 3),
        )
        lengths.append(len(plan.shard))
        sizes = [len(plan.shard[i : i + batch // world]) for i in range(0, len(plan.shard), batch // world)]
        assert len(plan.fractions) == len(sizes) and (min(sizes) > 1 or len(sizes) == 1)
    per_rank = -(-n // world)
    assert lengths == [padded_length(n, world, batch) // world] * world
    assert lengths[0] in (per_rank, per_rank - 1) and (lengths[0] == per_rank) == (
        per_rank % (batch // world) != 1 or per_rank == 1
    )
    spans = train_mode_batches(n, batch)
    assert spans[0][0] == 0 and spans[-1][1] == n and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(j - i > 1 for i, j in spans) or n == 1


def test_threads_setting_and_default(tmp_path, monkeypatch):
    """--threads sets torch's and BLAS's threads for the run; without it, OMP_NUM_THREADS, else one (more is several
    times slower on a busy machine, benchmarks/threads.py). The count used is recorded in results.json."""
    from threadpoolctl import threadpool_info

    from npe_theory.validate import usable_cores
    from npe_train.device.distributed import cpu_threads

    before = torch.get_num_threads()
    try:
        res = train(
            make_config(
                dataset="synthetic", imbalance=10, n_max=40, epochs=1, threads=1, out=str(tmp_path / "r")
            ),
            progress=False,
        )
        assert res["environment"]["threads"] == 1 and torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert cpu_threads(None) == 1 and torch.get_num_threads() == 1
        cores = usable_cores()  # at most the cores this process may use (more are refused: test_refusals.py)
        monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
        assert cpu_threads(None) == cores and torch.get_num_threads() == cores
    finally:
        cpu_threads(before)


def test_the_thread_hint_names_the_likely_cause_of_slowness():
    from npe_train.device.distributed import thread_hint

    busy = thread_hint(2, 1.0, load=3.5, cores=2)
    assert busy and "--threads 1" in busy and "load (3.5)" in busy
    assert thread_hint(2, 1.0, load=1.0, cores=2) is None  # cores to spare
    assert thread_hint(1, 1.0, load=9.0, cores=2) is None  # one thread: the load is someone else's
    idle = thread_hint(1, 45.0, load=0.5, cores=16)
    assert idle and "--threads 8" in idle
    assert thread_hint(1, 45.0, load=0.5, cores=2) is None  # two cores: more threads would not pay
    assert thread_hint(1, 5.0, load=0.5, cores=16) is None  # a fast epoch


def test_a_busy_machine_is_named_in_one_warning_line(tmp_path, monkeypatch, capsys):
    import warnings

    import npe_train.device.distributed as dd
    from npe.cli import main

    monkeypatch.setattr(dd.os, "getloadavg", lambda: (64.0, 64.0, 64.0))

    def to_stderr(
        message, category, filename, lineno, file=None, line=None
    ):  # as Python shows it outside pytest
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", to_stderr)
    args = ["train", "--dataset", "synthetic", "--imbalance", "10", "--n-max", "40", "--epochs", "2"]
    try:
        assert main([*args, "--threads", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(1)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "threads:" in ln]
    assert len(err) == 1 and err[0].startswith("npe: warning: threads: this run uses 2 CPU threads"), err


def test_default_weight_decay_reaches_the_target_and_warns_when_absurd(tmp_path):
    """Without --weight-decay the run feels lambda*s = 1.5 (recomputed from its own trace); a schedule whose learning
    rates sum to almost nothing would need an absurd weight decay, and says so."""
    from npe_train.loop.build import build_data, build_schedule

    res = train(
        make_config(dataset="synthetic", imbalance=10, n_max=60, epochs=3, out=str(tmp_path / "r")),
        progress=False,
    )
    lines = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    steps = math.ceil(sum(res["counts"]) / 64)
    felt = res["config"]["pem_weight_decay"] * steps * sum(line["lr"] for line in lines) / (1 - 0.9)
    assert (
        res["config"]["target_lambda_s"] == 1.5
        and felt == pytest.approx(1.5, rel=1e-9)
        and res["pem"]["lambda_s"] == pytest.approx(1.5)
    )
    from npe_train.data.catalog import dataset

    assert (
        res["config"]["weight_decay"]
        == dataset("synthetic").weight_decay
        != res["config"]["pem_weight_decay"]
    )
    cfg = make_config(dataset="synthetic", lr=1e-6, epochs=2, out=str(tmp_path / "s"))
    with pytest.warns(
        UserWarning, match="^pem_weight_decay: lambda\\*s = 1.5 with this schedule needs a PEM weight decay"
    ):
        build_schedule(cfg, build_data(cfg))
