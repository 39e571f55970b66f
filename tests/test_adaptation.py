"""A stream whose class distribution shifts: the schedule, the sampler, the finite-time model driven by it (against
torch's SGD), the lag bookkeeping, and a shifting run end to end (resume included)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npe_theory.dynamics import finite_time_logit
from npe_theory.priors import count_profile, predicted_priors
from npe_train.data.stream import (
    draw_stream,
    parse_schedule,
    parse_shift,
    pool_by_class,
    profile_counts,
    stale_counts,
    stream_counts,
)
from npe_train.loop.build import pem_recipe
from npe_train.loop.train import train
from npe_train.run.config import make_config
from npe_train.tasks.adaptation import TRACK_TOLERANCE, _lag, model_trajectory
from npe_train.tasks.rules import accuracy_report


def test_schedule_parsing_and_counts():
    shifts = parse_schedule(["30=step:10", "10=reversed:100"], epochs=40)
    assert [str(s) for s in shifts] == ["10=reversed:100", "30=step:10"]
    exp = count_profile("exp", 5, 200, 20)
    np.testing.assert_array_equal(stream_counts("exp", 20, shifts, 9, 5, 200), exp)
    np.testing.assert_array_equal(
        stream_counts("exp", 20, shifts, 10, 5, 200), count_profile("exp", 5, 200, 100)[::-1]
    )
    np.testing.assert_array_equal(
        profile_counts("reversed", 5, 200, 100), count_profile("exp", 5, 200, 100)[::-1]
    )
    np.testing.assert_array_equal(
        stream_counts("exp", 20, shifts, 35, 5, 200), count_profile("step", 5, 200, 10)
    )
    assert stale_counts("exp", 20, shifts, 9, 5, 200) is None
    np.testing.assert_array_equal(stale_counts("exp", 20, shifts, 12, 5, 200), exp)
    np.testing.assert_array_equal(
        stale_counts("exp", 20, shifts, 31, 5, 200), count_profile("exp", 5, 200, 100)[::-1]
    )


@pytest.mark.parametrize(
    "entry",
    [
        "20",
        "20=exp",
        "x=exp:10",
        "0=exp:10",
        "40=exp:10",
        "5=uniform:10",
        "5=exp:0.5",
        "5=exp:nan",
        "5=exp:1e999",
        20,
    ],
)
def test_bad_shift_names_the_setting(entry):
    with pytest.raises(ValueError, match="^shift:"):
        parse_shift(entry, epochs=40)


def test_two_shifts_at_one_epoch_are_refused():
    with pytest.raises(ValueError, match="^shift: two shifts at epoch 5"):
        parse_schedule(["5=exp:10", "5=step:10"], epochs=40)


def test_stream_draws_the_counts_from_the_pool_without_replacement():
    y = np.repeat(np.arange(4), 50)[np.random.default_rng(0).permutation(200)]
    pool = pool_by_class(y, 4)
    counts = np.array([50, 20, 5, 1])
    a = draw_stream(torch.Generator().manual_seed(1), pool, counts)
    b = draw_stream(torch.Generator().manual_seed(1), pool, counts)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == len(a)
    np.testing.assert_array_equal(np.bincount(y[a], minlength=4), counts)
    c = draw_stream(torch.Generator().manual_seed(2), pool, counts)
    assert set(a.tolist()) != set(c.tolist())  # a fresh subset per draw
    with pytest.raises(ValueError, match="^shift:"):
        draw_stream(torch.Generator(), pool, np.array([51, 1, 1, 1]))


def _torch_pem_trajectory(counts, norms, lrs, lam, momentum, alpha, batch_size):
    """The network-free model, done by torch: a Linear(1, C) PEM whose class-c input is sqrt(s_c), trained by
    torch.optim.SGD on alpha * batch-mean softplus(-eta_y), one epoch of ceil(N / B) steps at each epoch's class shares."""
    C = counts.shape[1]
    pem = torch.nn.Linear(1, C).double()
    torch.nn.init.zeros_(pem.weight)
    torch.nn.init.zeros_(pem.bias)
    opt = torch.optim.SGD(pem.parameters(), lr=lrs[0], momentum=momentum, weight_decay=lam)
    out = []
    for e in range(len(counts)):
        for g in opt.param_groups:
            g["lr"] = lrs[e]
        share = torch.tensor(counts[e] / counts[e].sum())
        x = torch.tensor(np.sqrt(norms[e]))[:, None]
        steps = -(-int(counts[e].sum()) // batch_size)
        for _ in range(steps):
            eta = pem(x)  # row c: class c's input
            loss = (
                alpha * (share * F.softplus(-eta.diagonal())).sum()
            )  # each class's share of the batch-mean loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out.append(pem(x).diagonal().numpy().copy())
    return np.array(out)


def test_model_trajectory_matches_torch_sgd_over_a_shift():
    """The finite-time model of the adaptation report, driven by a count schedule with a reversal and changing norms,
    equals torch's SGD on the same PEM step for step: a wrong lambda, alpha, momentum or sign would not."""
    C, E = 4, 12
    before, after = count_profile("exp", C, 300, 30), count_profile("exp", C, 300, 30)[::-1]
    counts = np.array([before] * 5 + [after] * 7, dtype=float)
    norms = np.linspace(2.0, 5.0, E)[:, None] * np.array([1.0, 1.5, 2.0, 3.0])
    lrs = list(np.linspace(0.2, 0.02, E))
    cfg = make_config(dataset="synthetic", weight_decay=3e-2, momentum=0.8, alpha=0.7, batch_size=64)
    metrics = [
        {"effective_counts": c.tolist(), "pem_norm_sq": s.tolist(), "lr": lr}
        for c, s, lr in zip(counts, norms, lrs)
    ]
    model, limits = model_trajectory(metrics, pem_recipe(cfg), cfg.batch_size)
    want = _torch_pem_trajectory(counts, norms, lrs, 3e-2, 0.8, 0.7, 64)
    np.testing.assert_allclose(model, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        limits[-1],
        predicted_priors(after, 3e-2, norms[-1], "mean", "logistic", bias=True, weight=0.7),
        rtol=1e-12,
    )


def test_finite_time_schedule_reduces_to_fixed_counts_and_converges_to_the_new_limit():
    counts = count_profile("exp", 5, 400, 50).astype(float)
    fixed = finite_time_logit(counts, 5e-3, 0.05, feature_norm_sq=4.0, batch_size=64, epochs=6)
    tiled = finite_time_logit(np.tile(counts, (6, 1)), 5e-3, 0.05, feature_norm_sq=4.0, batch_size=64)
    np.testing.assert_array_equal(fixed, tiled)
    new = counts[::-1].copy()
    sched = np.array([counts] * 3 + [new] * 400)
    run = finite_time_logit(sched, 5e-2, 0.1, feature_norm_sq=4.0, batch_size=256)
    np.testing.assert_allclose(
        run[-1], predicted_priors(new, 5e-2, 4.0, "mean", "logistic", bias=True), atol=1e-4
    )
    with pytest.raises(ValueError, match="^counts:"):
        finite_time_logit(sched, 5e-2, [0.1] * 5, feature_norm_sq=4.0, batch_size=256, epochs=5)
    with pytest.raises(ValueError, match="^feature_norm_sq:"):
        finite_time_logit(sched, 5e-2, 0.1, feature_norm_sq=np.ones(3), batch_size=256)


def test_lag_counts_epochs_trained_on_the_new_stream():
    epochs = [8, 9, 10, 11, 12, 13, 14]
    gaps = [0.05, 0.06, 0.9, 0.4, 0.09, 0.05, 0.2]
    assert _lag(epochs, gaps, 10, 15) == 3  # epochs 10, 11, 12 trained on the new stream
    assert _lag(epochs, gaps, 10, 12) is None  # the next shift (or the end) came first
    assert _lag(epochs, [None, None, 0.5, 0.5, 0.5, 0.5, 0.5], 10, 15) is None
    assert TRACK_TOLERANCE == 0.1


def test_stale_rule_by_hand():
    rng = np.random.default_rng(0)
    logits, eta, y = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)), np.repeat(np.arange(3), 100)
    new, old = np.array([10.0, 100.0, 1000.0]), np.array([1000.0, 100.0, 10.0])
    rep = accuracy_report(logits, eta, y, new, 1.0, [1.0], stale_counts=old)
    correct = (logits - np.log(old / old.sum())).argmax(1) == y
    assert rep["accuracy"]["posthoc_la_stale"]["overall"] == pytest.approx(
        np.mean([correct[y == c].mean() for c in range(3)])
    )
    assert "posthoc_la_stale" not in accuracy_report(logits, eta, y, new, 1.0, [1.0])["accuracy"]


def _shift_cfg(tmp_path, name, **kw):
    return make_config(
        dataset="synthetic",
        n_max=120,
        imbalance=20,
        epochs=6,
        shift=["3=reversed:20"],
        weight_decay=2e-2,
        out=str(tmp_path / name),
        seed=2,
        **kw,
    )


def test_shifting_run_end_to_end_and_resume(tmp_path, kill_after):
    full = train(_shift_cfg(tmp_path, "full"), progress=False)
    lines = [json.loads(s) for s in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    before, after = count_profile("exp", 10, 120, 20), count_profile("exp", 10, 120, 20)[::-1]
    for m in lines:
        np.testing.assert_array_equal(m["effective_counts"], before if m["epoch"] < 3 else after)
        assert ("posthoc_la_stale" in m["accuracy"]) == (m["epoch"] >= 3)
    assert full["counts"] == after.tolist() and full["stream"]["pool_counts"] == [120] * 10
    entry = full["adaptation"][0]
    assert entry["epoch"] == 3 and entry["to"] == "reversed:20"
    assert set(entry) >= {"epoch", "lag_measured", "lag_predicted"}
    series = full["adaptation_series"]
    assert series["epoch"] == list(range(6)) and len(series["model"]) == 6
    # the prior report reads the PEM against the stream's current counts
    np.testing.assert_allclose(full["pem"]["log_counts"], np.log(after))
    cfg = _shift_cfg(tmp_path, "cut")
    with pytest.raises(kill_after(4)):
        train(cfg, progress=False)
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"] and resumed["adaptation"] == full["adaptation"]
    assert resumed["pem"]["learned"] == full["pem"]["learned"]


def test_cli_shift_is_repeatable_and_checked(tmp_path, capsys):
    from npe.cli import main

    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--n-max",
                "60",
                "--imbalance",
                "10",
                "--epochs",
                "3",
                "--shift",
                "1=step:5",
                "--shift",
                "2=exp:2",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 0
    )
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["shift"] == ["1=step:5", "2=exp:2"]
    capsys.readouterr()
    assert main(["train", "--shift", "3=sideways:5", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shift" in err[0]
    assert (
        main(
            [
                "train",
                "--dataset",
                "synthetic",
                "--n-max",
                "60",
                "--shift",
                "2=exp:100",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 2
    )
    assert "tail class" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_f10_runs_are_the_runs_trained_directly(tmp_path):
    """``adaptation_runs`` (behind F10) summarizes the same run ``npe train`` makes with those settings."""
    from npe_train.experiments.adaptation import adaptation_runs, summarize_adaptation

    settings = dict(dataset="synthetic", n_max=120, imbalance=20, epochs=4)
    rows = adaptation_runs(
        grid=(("reversal", 2e-2, "3=reversed:20"),), seeds=(2,), progress=False, **settings
    )
    direct = summarize_adaptation(
        "reversal",
        train(
            make_config(
                **settings, weight_decay=2e-2, shift=["3=reversed:20"], seed=2, out=str(tmp_path / "d")
            ),
            progress=False,
        ),
    )
    assert rows == [direct]
