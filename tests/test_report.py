"""The prior report: its wiring in the training run (lambda, bias, alpha, lambda_s, la_loss sign), the regime,
training-mode features, and ``npe report`` on a network trained by a plain PyTorch loop."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from npe_theory import optimal_logit
from npe_theory.report import EQUILIBRIUM_LAMBDA_S, PemSettings, pem_report, regime
from npe_train.data.longtail import build
from npe_train.loop.train import train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import make_config


def npe(*args):
    return subprocess.run([sys.executable, "-m", "npe", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with a non-default lambda, alpha, momentum, a warmup + step schedule and a partial last batch."""
    out = tmp_path_factory.mktemp("wired") / "run"
    cfg = make_config(
        dataset="synthetic",
        imbalance=20,
        n_max=100,
        epochs=5,
        batch_size=48,
        lr=0.1,
        momentum=0.5,
        weight_decay=3e-3,
        alpha=0.5,
        schedule="step",
        milestones=[3],
        gamma=0.2,
        warmup_epochs=1,
        seed=2,
        out=str(out),
    )
    return cfg, train(cfg, progress=False)


def test_closed_form_uses_the_runs_lambda_bias_and_alpha(run):
    """Proposition 1 recomputed by hand from the saved network: x_c = alpha pi_c (||mu_c||^2 + 1) / lambda, logistic root."""
    cfg, res = run
    data = build(cfg.dataset, cfg.imbalance, cfg.profile, cfg.n_max, cfg.seed)
    from npe_train.models.classifiers import build_model

    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(read_checkpoint(Path(cfg.out) / CHECKPOINT)["model"])
    with torch.no_grad():
        h = (
            model.backbone(torch.as_tensor(data.x_train)).double().numpy()
        )  # an MLP: train and eval mode agree
    mu = np.stack([h[data.y_train == c].mean(0) for c in range(data.num_classes)])
    pi = data.counts / data.counts.sum()
    x = 0.5 * pi * ((mu**2).sum(1) + 1.0) / 3e-3
    np.testing.assert_allclose(res["pem"]["predicted"], optimal_logit(x, 1.0, "logistic"), rtol=1e-5)
    np.testing.assert_allclose(res["pem"]["mean_norm_sq"], (mu**2).sum(1), rtol=1e-5)


def test_lambda_s_and_per_epoch_learning_rates_are_exact(run):
    """lr per epoch = warmup 1/2, then 1, 1, x0.2 after epoch 3; ceil(N / 48) steps each; momentum 0.5."""
    cfg, res = run
    n = sum(res["counts"])
    steps = math.ceil(n / 48)
    assert n % 48  # the last batch is partial and still counts
    lrs = [0.05, 0.1, 0.1, 0.02, 0.02]
    lines = [json.loads(line) for line in open(f"{cfg.out}/metrics.jsonl")]
    assert [line["lr"] for line in lines] == pytest.approx(lrs)
    expected = [3e-3 * steps * sum(lrs[: e + 1]) / 0.5 for e in range(5)]
    assert [line["lambda_s"] for line in lines] == pytest.approx(expected, rel=1e-12)
    assert res["pem"]["lambda_s"] == pytest.approx(expected[-1], rel=1e-12)
    assert res["pem"]["regime"] == ("equilibrium" if expected[-1] >= EQUILIBRIUM_LAMBDA_S else "transient")
    assert res["pem"]["settings"]["weight_decay"] == 3e-3 and res["pem"]["settings"]["alpha"] == 0.5


def test_four_references_and_decomposition(run):
    _, res = run
    pm = res["pem"]["prior_match"]
    assert {"vs_log_counts", "vs_closed_form", "vs_equilibrium", "vs_finite_time"} <= pm.keys()
    d = res["pem"]["decomposition"]
    assert d["non_stationarity"] == pm["vs_equilibrium"]["centered_rmse"]
    assert res["pem"]["equilibrium_grad_norm"] < 1e-8 and res["pem"]["finite_time_model"] == "sampled replay"
    # every class has at most 48 rows a step, all kept: the replay is the PEM's own SGD (warmup, step decay, momentum 0.5,
    # alpha 0.5, weight decay 3e-3 on weight and bias) in float64, so only float32 rounding separates them; a wrong
    # weight decay, alpha, momentum or learning rate in the replay, or another class's rows, moves it by 1e-2 or more
    np.testing.assert_allclose(res["pem"]["finite_time"], res["pem"]["learned"], rtol=0, atol=2e-4)


def test_la_loss_sign():
    """la_loss trains CE on z + tau ln pi (so the head is favoured in training and the tail at test), not z - tau ln pi."""
    from npe_train.loop.build import build_objective
    from npe_train.loop.step import train_step

    torch.manual_seed(0)
    cfg = make_config(dataset="synthetic", method="la_loss", tau=1.0)
    model = nn.Linear(3, 4)
    net = lambda x: (model(x), None, x)  # noqa: E731
    counts = np.array([70, 20, 7, 3])
    log_prior = torch.log(torch.tensor([0.7, 0.2, 0.07, 0.03]))
    x, y = torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    expected = nn.functional.cross_entropy(model(x) + log_prior, y)
    objective = build_objective(cfg, counts)
    step, _ = train_step(
        net,
        torch.optim.SGD(model.parameters(), lr=0.0),
        x,
        [(y, None)],
        objective,
        objective.at_epoch(0, counts, "cpu"),
        use_amp=False,
    )
    assert step[1].item() == pytest.approx(expected.item(), rel=1e-6)
    assert (
        abs(expected.item() - nn.functional.cross_entropy(model(x) - log_prior, y).item()) > 0.1
    )  # a flipped sign differs


def test_regime_threshold():
    assert (
        regime(EQUILIBRIUM_LAMBDA_S)[0] == "equilibrium"
        and regime(EQUILIBRIUM_LAMBDA_S * 0.99)[0] == "transient"
    )
    assert "lambda*s = 0.1" in regime(0.1)[1]


def test_train_mode_pass_leaves_batch_norm_untouched_and_differs_from_eval():
    from npe_train.models.classifiers import build_model
    from npe_train.tasks.classification import predict

    torch.manual_seed(0)
    model = build_model("cnn1d", (1, 40), 5)
    model.train()
    for _ in range(3):  # give the running statistics some history
        model(torch.randn(32, 1, 40) * 2 + 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 1, 40)
    _, eta_train, h_train = predict(model, x, 32, lambda t: t, train_mode=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    _, eta_eval, h_eval = predict(model, x, 32, lambda t: t)
    assert np.abs(h_train - h_eval).max() > 1e-3  # batch statistics, not running ones
    # and the batch statistics really are the batch's: one batch by hand
    model.train()
    with torch.no_grad():
        manual = model.backbone(x[:32]).double().numpy()
    model.load_state_dict(before)
    np.testing.assert_allclose(h_train[:32], manual, rtol=1e-5, atol=1e-6)


def test_report_refuses_bad_input():
    eta, h, y = np.zeros((6, 3)), np.ones((6, 2)), np.array([0, 0, 1, 1, 2, 2])
    s = PemSettings(weight_decay=1e-3, lambda_s=1.0)
    with pytest.raises(ValueError, match="^labels"):
        pem_report(eta, h, np.array([0, 0, 1, 1, 2, 3]), [2, 2, 2], s)
    with pytest.raises(ValueError, match="^eta"):
        pem_report(np.full((6, 3), np.nan), h, y, [2, 2, 2], s)
    with pytest.raises(ValueError, match="^features"):
        pem_report(eta, h[:5], y, [2, 2, 2], s)
    with pytest.raises(ValueError, match="^lambda_s, lr"):
        PemSettings(weight_decay=1e-3)
    # the finiteness check reads large features by slices: a bad value in any slice, the last one's tail included, in
    # float32 kept as it is or in a strided view, is found
    from npe_theory.validate import _FINITE_SLICE

    big_y = np.repeat(np.arange(3), 2 * _FINITE_SLICE // 3 + 1)
    for dtype in (np.float32, np.float64):
        for where, bad in ((0, np.inf), (len(big_y) * 3 // 2, np.nan), (3 * len(big_y) - 1, -np.inf)):
            big = np.ones((len(big_y), 3), dtype=dtype)
            big.reshape(-1)[where] = bad
            for view in (big, np.asfortranarray(big), np.repeat(big, 2, axis=1)[:, ::2]):
                with pytest.raises(ValueError, match="^features: values must be finite"):
                    pem_report(np.zeros(len(big_y)), view, big_y, np.bincount(big_y), s)
    with pytest.raises(ValueError, match="^settings: unknown"):
        PemSettings.from_dict({"weight_decay": 1e-3, "lambda_s": 1.0, "wd": 2})


def test_nc1_at_scale_takes_fewer_rows_per_epoch_than_at_evaluations(monkeypatch):
    """Beyond the exact projection's budget the per-epoch ("core") report estimates NC1 from fewer rows a class than a
    full report does; below it both are exact. Each must be the estimator at its own row count (a report that passed
    the other level's count, or the exact value where it must estimate, fails)."""
    import npe_theory.report as report_mod
    from npe_theory.collapse import class_means, nc1

    rng = np.random.default_rng(5)
    counts = np.array([120, 90, 70, 40])
    y = rng.permutation(np.repeat(np.arange(4), counts))
    h = rng.normal(size=(len(y), 6)) + 3 * rng.normal(size=(4, 6))[y]
    eta = np.log(counts)[y] + 0.1 * rng.normal(size=len(y))
    s = PemSettings(weight_decay=1e-3, lambda_s=1.0)
    exact = nc1(h, y, 4)
    for level in ("core", "all"):
        assert pem_report(eta, h, y, counts, s, references=level)["nc1"] == pytest.approx(exact, rel=1e-12)
    monkeypatch.setattr(report_mod, "NC1_EXACT_BUDGET", 0)
    means = class_means(h, y, 4)
    got = {level: pem_report(eta, h, y, counts, s, references=level)["nc1"] for level in ("core", "all")}
    rows = report_mod.NC1_ROWS
    assert rows["core"] < rows["all"] < counts.max()
    for level in ("core", "all"):
        assert got[level] == pytest.approx(report_mod.nc1_of(h, y, means, rows[level]), rel=1e-12)
    assert got["core"] != pytest.approx(got["all"], rel=1e-6)


# ---- npe report on a network trained without npe_train ----


def _plain_training(tmp_path):
    """A small MLP with a classifier and a linear PEM, trained by a plain PyTorch loop; arrays dumped with a forward hook."""
    rng = np.random.default_rng(0)
    counts = np.array([120, 60, 25, 10, 4])
    y = np.repeat(np.arange(5), counts)
    x = (rng.normal(size=(5, 12))[y] + rng.normal(size=(len(y), 12)) * 0.8).astype(np.float32)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    classifier, pem = nn.Linear(16, 5), nn.Linear(16, 5)
    params = [*backbone.parameters(), *classifier.parameters(), *pem.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=2e-3)
    X, Y = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(20):
        for idx in torch.randperm(len(Y)).split(32):
            h = backbone(X[idx])
            p = -pem(h)  # the official convention: p = -eta, loss BCEWithLogits(p_y, 0)
            loss = nn.functional.cross_entropy(
                classifier(h), Y[idx]
            ) + nn.functional.binary_cross_entropy_with_logits(
                p.gather(1, Y[idx, None]), torch.zeros(len(idx), 1)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    # the README's recipe: a forward hook on the penultimate layer
    dump = {}
    handle = backbone.register_forward_hook(
        lambda module, inputs, output: dump.__setitem__("features", output.detach())
    )
    with torch.no_grad():
        backbone.train()
        p = -pem(backbone(X))
    handle.remove()
    folder = tmp_path / "dump"
    folder.mkdir()
    np.save(folder / "eta.npy", p.numpy()[None])  # (K = 1, N, C), official sign
    np.save(folder / "features.npy", dump["features"].numpy())
    np.save(folder / "labels.npy", y)
    (folder / "settings.toml").write_text(
        "weight_decay = 2e-3\nalpha = 1.0\nloss = 'logistic'\nreduction = 'mean'\nbias = true\n"
        "momentum = 0.9\nlr = 0.05\nbatch_size = 32\nepochs = 20\n"
    )
    return folder, backbone, classifier, pem, X, Y, counts


def test_npe_report_on_a_plain_pytorch_model_equals_npe_trains_report(tmp_path):
    folder, backbone, classifier, pem, X, Y, counts = _plain_training(tmp_path)
    out = npe("report", str(folder), "--sign", "p")
    assert out.returncode == 0, out.stderr
    assert (
        "regime:" in out.stdout
        and "finite time (mean-field)" in out.stdout
        and "sign error" not in out.stdout
    )
    wrong = npe(
        "report", str(folder), "--out", str(tmp_path / "wrong")
    )  # the files hold p = -eta, read as eta
    assert wrong.returncode == 0 and "warning: the learned outputs fall as the counts grow" in wrong.stdout
    assert "--sign p reads such files" in wrong.stdout
    # read the other way round: the hint points back, never at the flag already given
    np.save(tmp_path / "flipped.npy", -np.load(folder / "eta.npy"))
    for name in ("features.npy", "labels.npy", "settings.toml"):
        (tmp_path / "flip").mkdir(exist_ok=True)
        (tmp_path / "flip" / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "flip" / "eta.npy").write_bytes((tmp_path / "flipped.npy").read_bytes())
    flipped = npe("report", str(tmp_path / "flip"), "--sign", "p")
    assert "leave --sign out" in flipped.stdout and "--sign p reads such files" not in flipped.stdout
    # the settings it assumed, and how it counted the steps
    assert "settings assumed: weight decay 0.002, alpha 1, loss logistic" in out.stdout
    assert f"ceil({len(Y)} samples / batch 32)" in out.stdout
    saved = json.loads((folder / "report.json").read_text())["pem"]
    assert (folder / "pem_vs_log_counts.png").read_bytes()[:4] == b"\x89PNG"
    # the same network through npe_train's own path: attach_pem, the training-mode pass, the shared report
    from npe_train.models.classifiers import attach_pem
    from npe_train.tasks.classification import predict

    net = attach_pem(backbone, 5, feature_dim=16)
    net.classifier.load_state_dict(classifier.state_dict())
    net.pem.heads[0].load_state_dict(pem.state_dict())
    _, eta, feats = predict(net, X, 4096, lambda t: t, train_mode=True)
    settings = PemSettings(weight_decay=2e-3, momentum=0.9, lr=0.05, batch_size=32, epochs=20)
    ours = json.loads(json.dumps(pem_report(eta, feats, Y.numpy(), counts, settings)))
    assert ours == saved  # identical numbers, every field
    lam_s = 2e-3 * 20 * math.ceil(len(Y) / 32) * 0.05 / 0.1
    assert saved["lambda_s"] == pytest.approx(lam_s)


@pytest.mark.parametrize(
    "breakage, word",
    [
        (lambda d: np.save(d / "labels.npy", np.arange(10)), "labels"),  # wrong length and out of range
        (lambda d: np.save(d / "eta.npy", np.full((1, 219, 5), np.nan)), "eta"),
        (lambda d: (d / "settings.toml").write_text("alpha = 1.0\nlambda_s = 1.0\n"), "weight_decay"),
        (lambda d: (d / "settings.toml").unlink(), "settings"),
        (lambda d: np.save(d / "features.npy", np.ones((3, 16))), "features"),
        (lambda d: (d / "features.npy").write_bytes(b"garbage"), "features.npy"),
    ],
)
def test_npe_report_bad_input_one_line_exit_2(tmp_path, breakage, word):
    folder = _plain_training(tmp_path)[0]
    breakage(folder)
    out = npe("report", str(folder), "--sign", "p")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and word in out.stderr


@pytest.mark.slow
def test_regime_runs_feed_figures_7_and_8(tmp_path):
    """Each run's weight decay is set so that it feels the grid's lambda*s (recomputed by hand: cosine rates, ceil(N / 64)
    steps, momentum 0.9), on every set asked for; both figures draw them."""
    from npe_theory.figures import fig_regime_gap, fig_regime_slope
    from npe_train.experiments.regimes import regime_runs

    grid = ((0.05, 2), (2.0, 3))
    rows = regime_runs(grid=grid, sets=("synthetic", "digits"), progress=False, imbalance=10, n_max=60)
    assert [r["dataset"] for r in rows] == ["synthetic"] * 2 + ["digits"] * 2
    n = 60 + 46 + 35 + 27 + 21 + 16 + 12 + 10 + 7 + 6  # count_profile("exp", 10, 60, 10)
    steps = math.ceil(n / 64)
    cosine = {2: [0.05, 0.025], 3: [0.05, 0.0375, 0.0125]}
    for row, (target, epochs) in zip(rows, grid * 2):
        assert row["lambda_s"] == pytest.approx(
            row["weight_decay"] * steps * sum(cosine[epochs]) / 0.1, rel=1e-12
        )
        assert row["lambda_s"] == pytest.approx(target, rel=1e-9)
        assert {
            "rmse_vs_finite_time",
            "rmse_vs_equilibrium",
            "slope_learned",
            "slope_closed_form",
        } <= row.keys()
    for draw in (fig_regime_gap, fig_regime_slope):
        png = draw(tmp_path / "f.png", rows)
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_two_statistic_prediction_follows_the_runs_own_schedule(run):
    """The prediction before training, recomputed by hand: heavy-ball from zero on the expected batch shares, with the
    run's per-epoch rates (warmup 1/2, then 1, 1, x0.2), ceil(N / 48) steps, momentum 0.5, alpha 0.5, weight decay 3e-3 on
    weight and bias, logistic loss, and each class's norm from the fit ln ||mu_c||^2 = ln g + beta (ln N_c - mean)."""
    cfg, res = run
    pem = res["pem"]
    counts = np.asarray(res["counts"], float)
    norms = np.asarray(pem["mean_norm_sq"])
    lc = np.log(counts) - np.log(counts).mean()
    beta, ln_g = np.polyfit(lc, np.log(norms), 1)
    assert pem["two_statistics"]["norm_count_exponent"] == pytest.approx(beta, rel=1e-9, abs=1e-12)
    fitted = np.exp(ln_g + beta * lc)
    lrs, steps, lam, mom = [0.05, 0.1, 0.1, 0.02, 0.02], math.ceil(counts.sum() / 48), 3e-3, 0.5
    pi = counts / counts.sum()
    x, w, b, vw, vb = np.sqrt(fitted), np.zeros(len(counts)), np.zeros(len(counts)), None, None
    for lr in lrs:  # one scalar weight per class along its (fixed) mean: the network-free model of section 5
        for _ in range(steps):
            push = -0.5 * pi / (1.0 + np.exp(w * x + b))  # alpha pi_c l'(eta) for the logistic one-way loss
            gw, gb = push * x + lam * w, push + lam * b
            vw, vb = (gw, gb) if vw is None else (mom * vw + gw, mom * vb + gb)
            w, b = w - lr * vw, b - lr * vb
    np.testing.assert_allclose(pem["two_statistic"], w * x + b, rtol=1e-9, atol=1e-12)


def test_a_pem_past_the_clock_but_far_from_its_equilibrium_is_reported_as_lagging():
    """lambda*s >= 1 says equilibrium; a measured gap above EQUILIBRIUM_GAP to the exact optimum of the same features
    adds a lag note (the per-pixel PEMs of the segmentation main job sit 0.12 from it at lambda*s = 1)."""
    from npe_theory.equilibrium import pem_equilibrium
    from npe_theory.report import EQUILIBRIUM_GAP

    rng = np.random.default_rng(3)
    counts = np.array([300, 120, 50, 20, 8])
    y = np.repeat(np.arange(5), counts)
    h = np.abs(rng.normal(size=(5, 6)))[y] * 3 + 0.3 * rng.normal(size=(len(y), 6))
    settings = PemSettings(weight_decay=1e-2, lambda_s=2.0)
    eq = pem_equilibrium(h, y, 5, 1e-2)
    at_optimum = h @ eq.weight.T + eq.bias  # every head's output at the optimum: learned = equilibrium
    on = pem_report(at_optimum, h, y, counts, settings)
    assert on["regime"] == "equilibrium" and on["lagging"] is False and "lags" not in on["regime_note"]
    offsets = np.array([0.0, 0.3, -0.3, 0.3, -0.3])  # centered RMSE about 0.26 from the optimum
    behind = pem_report(at_optimum + offsets, h, y, counts, settings)
    gap = behind["prior_match"]["vs_equilibrium"]["centered_rmse"]
    assert gap > EQUILIBRIUM_GAP and behind["lagging"] is True and f"{gap:.2f} nats" in behind["regime_note"]
    early = pem_report(at_optimum + offsets, h, y, counts, PemSettings(weight_decay=1e-2, lambda_s=0.5))
    assert early["regime"] == "transient" and early["lagging"] is False


def test_npe_report_on_a_train_run_folder_points_at_priors_from(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    out = npe("report", str(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"npe priors --from {tmp_path}" in out.stderr


def test_npe_report_forecasts_a_pem_trained_elsewhere_from_its_heads_and_remaining_schedule(tmp_path):
    """The dump of a plain PyTorch run, with its PEM head, the optimizer's momentum buffers and the rest of a schedule
    written in settings.toml: npe report's forecast equals npe_theory.forecast.forecast_pem called here (the official
    sign p = -eta flipped on the heads as on the outputs)."""
    from npe_theory.forecast import forecast_pem

    folder, backbone, classifier, pem, X, Y, counts = _plain_training(tmp_path)
    np.save(folder / "pem_weight.npy", pem.weight.detach().numpy())  # produces p = -eta (official convention)
    np.save(folder / "pem_bias.npy", pem.bias.detach().numpy())
    buffers = {k: np.zeros_like(v.detach().numpy()) + 0.01 for k, v in (("w", pem.weight), ("b", pem.bias))}
    np.save(folder / "pem_momentum_weight.npy", buffers["w"])
    np.save(folder / "pem_momentum_bias.npy", buffers["b"])
    with (folder / "settings.toml").open("a") as fh:
        fh.write("[forecast]\nlr = [0.05, 0.02, 0.01]\nsteps = 7\n")
    out = npe("report", str(folder), "--sign", "p")
    assert out.returncode == 0, out.stderr
    assert "forecast over the 21 steps left" in out.stdout
    saved = json.loads((folder / "report.json").read_text())["pem"]["forecast"]
    features = np.load(folder / "features.npy")
    state = {
        "weight": -pem.weight.detach().numpy()[None].astype(np.float64),
        "bias": -pem.bias.detach().numpy()[None].astype(np.float64),
        "velocity_weight": -buffers["w"][None],
        "velocity_bias": -buffers["b"][None],
    }
    lrs = [0.05] * 7 + [0.02] * 7 + [0.01] * 7
    ours = forecast_pem(features, Y.numpy(), counts, state, lrs, 2e-3, momentum=0.9)
    np.testing.assert_allclose(saved["eta"], ours.eta, rtol=1e-9, atol=1e-9)
