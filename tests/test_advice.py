"""The advice block, --target-lambda-s, the marginal rule, conditional slopes and honest labels (docs/metrics.md).

References are computed here another way: accuracies by brute force over the validation predictions,
lambda*s by summing the learning rates metrics.jsonl recorded, slopes by np.polyfit.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

from npe_train.data.longtail import LongTailData, build
from npe_train.device.distributed import Dist
from npe_train.loop.build import build_data, build_stream, planned_lambda_s, planned_steps, reach_equilibrium
from npe_train.loop.train import train
from npe_train.run.config import make_config
from npe_train.tasks.base import Held
from npe_train.tasks.classification import advise
from npe_train.tasks.prior import conditional_slopes
from npe_train.tasks.rules import accuracy_report, group_sizes


def _felt(metrics_path, wd, momentum, steps):
    lines = [json.loads(s) for s in metrics_path.read_text().splitlines()]
    return wd * sum(m["lr"] * s for m, s in zip(lines, steps)) / (1 - momentum), lines


@pytest.mark.parametrize(
    "settings",
    [
        dict(dataset="digits", epochs=4),
        dict(
            dataset="synthetic",
            epochs=3,
            n_max=100,
            batch_size=32,
            schedule="step",
            milestones=[2],
            warmup_epochs=1,
        ),
    ],
)
def test_target_lambda_s_is_reached_on_each_data_set(tmp_path, settings):
    """The weight decay the run records gives lambda*s = target, summed from the rates the run used and its steps."""
    res = train(make_config(**settings, target_lambda_s=1.7, out=str(tmp_path / "run")), progress=False)
    n = sum(res["counts"])
    steps = [-(-n // res["config"]["batch_size"])] * res["epochs"]
    felt, lines = _felt(
        tmp_path / "run" / "metrics.jsonl",
        res["config"]["pem_weight_decay"],
        res["config"]["momentum"],
        steps,
    )
    assert felt == pytest.approx(1.7, rel=1e-9) and lines[-1]["lambda_s"] == pytest.approx(1.7, rel=1e-9)
    assert res["pem"]["lambda_s"] == pytest.approx(1.7, rel=1e-9) and res["advice"]["recipe"] is None


def test_target_lambda_s_is_checked():
    with pytest.raises(ValueError, match="^target_lambda_s:"):
        make_config(dataset="synthetic", target_lambda_s=-1.0)


def test_transient_advice_gives_a_weight_decay_and_epochs_that_reach_equilibrium():
    cfg = make_config(dataset="digits", weight_decay=5e-4, epochs=20)
    data = build_data(cfg)
    steps = planned_steps(build_stream(cfg, data), cfg.batch_size, 1, cfg.epochs)
    lam = planned_lambda_s(cfg, steps)
    advice = reach_equilibrium(cfg, steps, lam)
    assert lam < 1 and advice["lambda_s"] == lam
    from dataclasses import replace

    assert planned_lambda_s(
        replace(cfg, pem_weight_decay=advice["pem_weight_decay"]), steps
    ) == pytest.approx(1.0, rel=1e-12)
    e = advice["epochs"]
    assert planned_lambda_s(cfg, steps[0], e) >= 1.0 > planned_lambda_s(cfg, steps[0], e - 1)
    assert reach_equilibrium(cfg, steps, 1.0) is None


def test_validation_set_is_balanced_and_neither_training_nor_test_data():
    for name, kw in (("mnist1d", {}), ("digits", {}), ("synthetic", {})):
        d = build(name, 20.0, **kw)
        assert d.x_val is not None, name
        per = np.bincount(d.y_val, minlength=d.num_classes)
        assert per.min() == per.max() >= 5
        rows = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}  # noqa: E731
        assert not rows(d.x_val) & rows(d.x_train) and not rows(d.x_val) & rows(d.x_test), name
    assert build("digits", 20.0).x_train.tobytes() == build("digits", 20.0).x_train.tobytes()


class _Fixed(nn.Module):
    """logits = x @ A, one PEM head eta = x @ B: predictions known in closed form."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = torch.as_tensor(a), torch.as_tensor(b)
        self.pem = type("P", (), {"is_linear": True})()

    def forward(self, x):
        return x @ self.a, (x @ self.b)[None], x


def _brute_accuracy(z, y):
    return float(np.mean([np.mean(z[y == c].argmax(1) == c) for c in np.unique(y)]))


def test_advice_picks_the_best_rule_and_tau_on_validation_by_brute_force():
    rng = np.random.default_rng(0)
    C, D = 3, 3
    counts = np.array([200, 40, 5])
    a, b = rng.normal(size=(D, C)), 3 * rng.normal(size=(D, C))
    xv = rng.normal(size=(60, D)) + np.repeat(np.eye(C), 20, 0)
    yv = np.repeat(np.arange(C), 20)
    xt = rng.normal(size=(30, D)) + np.repeat(np.eye(C), 10, 0) + 1.0
    yt = np.repeat(np.arange(C), 10)
    data = LongTailData(xt, yt, xt, yt, counts, "toy", x_val=xv, y_val=yv, val_source="generated")
    model = _Fixed(a, b)
    zt, et = xt @ a, xt @ b
    marginal = et.mean(0)
    grid = [0.0, 0.5, 1.0, 2.0]
    report = accuracy_report(zt, et, yt, counts, 1.0, grid, {"npe_marginal": marginal})
    report["priors"] = {"counts": counts.tolist(), "implied": None, "marginal": marginal.tolist()}
    held = Held(data, torch.as_tensor(xt), torch.as_tensor(xt), lambda x: x, Dist())
    out = advise(model, held, report, 16, 1.0, grid)
    zv, ev, lp = xv @ a, xv @ b, np.log(counts / counts.sum())
    best = {("argmax", None): _brute_accuracy(zv, yv)}
    for t in grid:
        best[("posthoc_la", t)] = _brute_accuracy(zv - t * lp, yv)
        best[("npe_la", t)] = _brute_accuracy(zv - t * ev, yv)
        best[("npe_marginal", t)] = _brute_accuracy(zv - t * marginal, yv)
    top = max(best.values())
    # the marginal rule subtracts the training-set mean of eta (a flipped sign scores differently here)
    assert out["at_tau"]["npe_marginal"]["validation"] == pytest.approx(best[("npe_marginal", 1.0)])
    assert _brute_accuracy(zv + marginal, yv) != pytest.approx(best[("npe_marginal", 1.0)])
    assert report["accuracy"]["npe_marginal"]["overall"] == pytest.approx(_brute_accuracy(zt - marginal, yt))
    assert out["best"]["validation_accuracy"] == pytest.approx(top)
    assert best[(out["best"]["rule"], out["best"]["tau"])] == pytest.approx(top)
    assert out["npe_la_below"]["argmax"]["validation"] == (best[("npe_la", 1.0)] < best[("argmax", None)])
    assert out["npe_la_below"]["posthoc_la"]["test"] == (
        report["accuracy"]["npe_la"]["overall"] < report["accuracy"]["posthoc_la"]["overall"]
    )
    assert out["validation"] == {"source": "generated", "per_class": 20, "samples": 60}


def test_advice_recommends_the_class_mean_prior_when_it_wins_on_validation():
    """Logits carry a fixed bias v unrelated to the counts; the class-mean prior is v, so only that rule undoes it."""
    rng = np.random.default_rng(1)
    C = 3
    counts = np.array([200, 40, 5])
    v = np.array([0.0, 3.0, -3.0])
    xv, yv = (
        np.eye(C)[np.repeat(np.arange(C), 20)] * 2 + 0.3 * rng.normal(size=(60, C)),
        np.repeat(np.arange(C), 20),
    )
    xt, yt = (
        np.eye(C)[np.repeat(np.arange(C), 10)] * 2 + 0.3 * rng.normal(size=(30, C)),
        np.repeat(np.arange(C), 10),
    )
    model = _Biased(v, rng.normal(size=(C, C)))
    zt, et = model(torch.as_tensor(xt))[0].numpy(), model(torch.as_tensor(xt))[1][0].numpy()
    grid = [0.5, 1.0, 2.0]
    priors = {"npe_marginal": et.mean(0), "npe_class_mean": v}
    report = accuracy_report(zt, et, yt, counts, 1.0, grid, priors)
    report["priors"] = {
        "counts": counts.tolist(),
        "implied": None,
        "marginal": et.mean(0).tolist(),
        "class_mean": v.tolist(),
    }
    data = LongTailData(xt, yt, xt, yt, counts, "toy", x_val=xv, y_val=yv, val_source="generated")
    out = advise(
        model,
        Held(data, torch.as_tensor(xt), torch.as_tensor(xt), lambda x: x, Dist()),
        report,
        16,
        1.0,
        grid,
    )
    zv = model(torch.as_tensor(xv))[0].numpy()
    assert _brute_accuracy(zv - v, yv) == 1.0 > _brute_accuracy(zv, yv)
    assert out["best"]["rule"] == "npe_class_mean" and out["best"]["validation_accuracy"] == 1.0
    assert out["at_tau"]["npe_class_mean"]["validation"] == pytest.approx(_brute_accuracy(zv - v, yv))
    assert report["accuracy"]["npe_class_mean"]["overall"] == pytest.approx(_brute_accuracy(zt - v, yt))


class _Biased(_Fixed):
    """logits = x + v (a fixed bias), eta = x @ B."""

    def __init__(self, v, b):
        super().__init__(np.eye(len(v)), b)
        self.v = torch.as_tensor(v)

    def forward(self, x):
        return x + self.v, (x @ self.b)[None], x


def test_marginal_rule_and_labels_on_a_run(tmp_path):
    res = train(
        make_config(dataset="digits", imbalance=50, epochs=3, out=str(tmp_path / "run")), progress=False
    )
    assert "npe_marginal" in res["accuracy"] and len(res["priors"]["marginal"]) == 10
    # the class-mean prior is each class's own mean training-mode output: the diagonal of the class-mean matrix
    np.testing.assert_allclose(res["priors"]["class_mean"], np.diag(res["pem"]["eta_matrix"]), rtol=1e-12)
    assert "npe_class_mean" in res["accuracy"] and "npe_class_mean" in res["advice"]["at_tau"]
    counts = np.array(res["counts"])
    data = build("digits", 50.0)
    sizes = group_sizes(data.y_test, counts)
    assert res["group_sizes"] == sizes and sizes["many"]["classes"] == int((counts > 100).sum())
    assert sum(v["test_samples"] for v in sizes.values()) == len(data.y_test)
    slopes = conditional_slopes(res["pem"]["eta_matrix"], counts)
    want = [np.polyfit(np.log(counts), row, 1)[0] for row in np.asarray(res["pem"]["eta_matrix"])]
    np.testing.assert_allclose(slopes["per_row"], want, rtol=1e-9)
    np.testing.assert_allclose(res["pem"]["conditional_slopes"]["per_row"], want, rtol=1e-9)
    assert res["advice"]["validation"]["samples"] > 0 and res["advice"]["best"]["rule"] in res["accuracy"]


def test_empty_count_group_gets_thirds_beside_it():
    rng = np.random.default_rng(1)
    counts = np.array(
        [90, 60, 40, 30, 25, 21]
    )  # no class above 100 and none below 20: Many and Few are empty
    y = np.repeat(np.arange(6), 5)
    z = rng.normal(size=(30, 6))
    rep = accuracy_report(z, z, y, counts, 1.0, [1.0])
    assert rep["group_sizes"]["many"]["classes"] == 0 and "accuracy_by_third" in rep
    per_class = np.array(rep["accuracy"]["argmax"]["per_class"])
    assert rep["accuracy_by_third"]["argmax"]["many"] == pytest.approx(per_class[[0, 1]].mean())
    assert rep["accuracy_by_third"]["argmax"]["few"] == pytest.approx(per_class[[4, 5]].mean())


@pytest.mark.slow
def test_the_evaluation_without_the_whole_outputs_reports_what_it_does_with_them(tmp_path, monkeypatch):
    """Above MAX_ETA_MATRIX classes the final evaluation keeps, of the training set's outputs, each sample's own-class
    output, its projection on the centered log counts and the column sums, not the (N, C) outputs (at 8,000 classes
    and 437,513 samples, 28 GB). Forced on a 10-class run (BatchNorm, shuffled training-mode pass), it must report what
    the whole-output run reports: the learned prior in training and eval mode, the marginal prior, every reference's
    match, the accuracies, and the conditional slopes (against np.polyfit on the whole run's E[eta | y] rows)."""
    import npe_train.tasks.classification as classification
    from npe_train.loop.build import build_network
    from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint

    def config(name):
        return make_config(dataset="digits28", imbalance=50, epochs=2, out=str(tmp_path / name))

    whole = train(config("whole"), progress=False)
    monkeypatch.setattr(classification, "MAX_ETA_MATRIX", 5)
    reduced = train(config("reduced"), progress=False)
    # the eval-mode quantities from the trained network itself, one plain forward pass over the training set
    data = build_data(config("reduced"))
    net = build_network(config("reduced"), data)
    net.load_state_dict(read_checkpoint(tmp_path / "reduced" / CHECKPOINT)["model"])
    net.eval()
    with torch.no_grad():
        eta = net(torch.as_tensor(data.x_train))[1].mean(0).double().numpy()
    own = eta[np.arange(len(data.y_train)), data.y_train]
    np.testing.assert_allclose(reduced["priors"]["marginal"], eta.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        reduced["pem"]["learned_eval"],
        np.bincount(data.y_train, own) / np.bincount(data.y_train),
        rtol=1e-5,
        atol=1e-6,
    )
    assert whole["pem"]["eta_matrix"] is not None and reduced["pem"]["eta_matrix"] is None
    for key in ("learned", "learned_eval", "mean_norm_sq"):
        np.testing.assert_allclose(reduced["pem"][key], whole["pem"][key], rtol=1e-12, atol=1e-12)
    for key in ("marginal", "class_mean", "implied"):
        np.testing.assert_allclose(reduced["priors"][key], whole["priors"][key], rtol=1e-12, atol=1e-12)
    for key, match in whole["pem"]["prior_match"].items():
        assert reduced["pem"]["prior_match"][key]["centered_rmse"] == pytest.approx(
            match["centered_rmse"], abs=1e-12
        )
    assert {r: v["overall"] for r, v in reduced["accuracy"].items()} == {
        r: v["overall"] for r, v in whole["accuracy"].items()
    }
    counts = np.array(whole["counts"])
    want = [np.polyfit(np.log(counts), row, 1)[0] for row in np.asarray(whole["pem"]["eta_matrix"])]
    np.testing.assert_allclose(reduced["pem"]["conditional_slopes"]["per_row"], want, rtol=1e-9, atol=1e-12)


def test_a_run_with_more_classes_than_the_kept_matrix_finishes(tmp_path):
    """Above MAX_ETA_MATRIX (256) classes the report keeps no E[eta | y]; the run's evaluation must still finish with
    every class's conditional slope (it stopped with an error on that missing matrix)."""
    from npe_theory.report import MAX_ETA_MATRIX

    rng = np.random.default_rng(0)
    C = MAX_ETA_MATRIX + 44
    y = np.repeat(np.arange(C), np.linspace(20, 10, C).astype(int))
    np.save(
        tmp_path / "X.npy", (rng.normal(size=(len(y), 8)) + 2 * rng.normal(size=(C, 8))[y]).astype(np.float32)
    )
    np.save(tmp_path / "y.npy", y)
    res = train(
        make_config(dataset="npy", data_dir=str(tmp_path), epochs=1, lean=True, out=str(tmp_path / "run")),
        progress=False,
    )
    assert res["pem"]["eta_matrix"] is None and len(res["counts"]) == C
    slopes = res["pem"]["conditional_slopes"]["per_row"]
    assert len(slopes) == C and np.all(np.isfinite(slopes))
    assert len(res["priors"]["marginal"]) == C and np.all(np.isfinite(res["priors"]["marginal"]))
