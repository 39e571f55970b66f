"""Weight Balancing (methods/stages.py): MaxNorm against its formula written here, and the wiring of stage 2 in a
real run: what is frozen, the radius, the cosine rate, the class-balanced loss from the same epoch, the PEM's
clock left alone, resume."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from npe_train.loop.build import drw_epoch
from npe_train.loop.train import train
from npe_train.methods import stages as wb
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import make_config


def tiny(tmp_path, name="run", **kw):
    base = dict(
        dataset="synthetic",
        imbalance=20,
        n_max=100,
        epochs=6,
        wb_epochs=2,
        batch_size=64,
        seed=3,
        method="weight_balancing",
        out=str(tmp_path / name),
    )
    base.update(kw)
    if base["method"] != "weight_balancing":
        del base["wb_epochs"]  # another method refuses a setting it does not read
    return make_config(**base)


@given(
    st.lists(st.floats(0.0, 50.0), min_size=2, max_size=8),
    st.floats(0.0, 1.0),
    st.integers(1, 6),
)
@example([0.0, 3.0], 0.1, 2)  # a zero row: left at zero, no division by zero
@example([2.0, 2.0, 2.0], 0.5, 3)  # equal norms: the radius is that norm, nothing moves
def test_max_norm_projection_matches_its_formula(norms, share, width):
    rng = np.random.default_rng(len(norms) * 7 + width)
    direction = rng.normal(size=(len(norms), width))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    w = direction * np.asarray(norms)[:, None]
    r = min(norms) + share * (max(norms) - min(norms))
    assert wb.max_norm_radius(torch.tensor(w), share) == pytest.approx(r, rel=1e-12, abs=1e-12)
    t = torch.tensor(w)
    wb.project_rows(t, r)
    # the projection onto a ball: rows inside stay, rows outside land on the sphere in the same direction
    want = np.where(np.asarray(norms)[:, None] > r, direction * r, w)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(t.numpy()))


@pytest.mark.parametrize("kind", ["mlp", "batchnorm"])
def test_stage_two_freezes_the_backbone_and_keeps_the_classifier_in_its_ball(tmp_path, monkeypatch, kind):
    extra = {} if kind == "mlp" else {"dataset": "mnist1d", "imbalance": 10, "n_max": 60}
    cfg = tiny(tmp_path, **extra)
    first = cfg.epochs - cfg.wb_epochs
    seen = {"lr": [], "wd": []}
    real = wb.WeightBalancing.start_epoch

    def spying(self, epoch, model, optimizer):
        if epoch == first:
            seen["backbone"] = {k: v.clone() for k, v in model.backbone.state_dict().items()}
            seen["classifier"] = model.classifier.weight.detach().clone()
        real(self, epoch, model, optimizer)
        if epoch >= first:
            seen["lr"].append(optimizer.param_groups[0]["lr"])
            seen["wd"].append(optimizer.param_groups[0]["weight_decay"])
            seen["pem_lr"] = optimizer.param_groups[-1]["lr"]
        seen["model"] = model

    monkeypatch.setattr(wb.WeightBalancing, "start_epoch", spying)
    res = train(cfg, progress=False)
    model = seen["model"]
    after = model.backbone.state_dict()
    assert all(
        torch.equal(seen["backbone"][k], after[k]) for k in after
    )  # weights and any running statistics
    assert (kind == "batchnorm") == any("running_mean" in k for k in after)
    assert not torch.equal(seen["classifier"], model.classifier.weight.detach())
    norms = torch.linalg.vector_norm(seen["classifier"].double(), dim=1)
    radius = float(norms.min() + 0.1 * (norms.max() - norms.min()))
    final = torch.linalg.vector_norm(model.classifier.weight.detach().double(), dim=1)
    assert float(final.max()) <= radius * (1 + 1e-5)
    k = np.arange(cfg.wb_epochs)
    np.testing.assert_allclose(seen["lr"], 0.01 * (1 + np.cos(math.pi * k / cfg.wb_epochs)) / 2, rtol=1e-12)
    assert seen["wd"] == [0.1] * cfg.wb_epochs
    assert drw_epoch(cfg) == first  # the class-balanced loss starts with stage 2
    # the PEM keeps the run's schedule: its felt decay is what a one-stage run of the same schedule gives
    ce = train(tiny(tmp_path, "ce", method="ce", **extra), progress=False)
    assert res["pem"]["lambda_s"] == pytest.approx(ce["pem"]["lambda_s"], rel=1e-12)


def test_stage_two_changes_the_result_and_survives_resume(tmp_path, kill_after):
    full = train(tiny(tmp_path, "full"), progress=False)
    cfg = tiny(tmp_path, "cut")
    with pytest.raises(kill_after(5)):  # killed inside stage 2, after its first epoch
        train(cfg, progress=False)
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["accuracy"] == full["accuracy"]
    a = read_checkpoint(tmp_path / "full" / CHECKPOINT)["model"]
    b = read_checkpoint(tmp_path / "cut" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    drw = train(tiny(tmp_path, "drw", method="drw", drw_epoch=4), progress=False)
    assert drw["accuracy"]["argmax"] != full["accuracy"]["argmax"]  # stage 2 is more than the re-weighting


def test_weight_balancing_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="^wb_epochs"):
        tiny(tmp_path, wb_epochs=6).validate()
    with pytest.raises(ValueError, match="^wb_max_norm"):
        tiny(tmp_path, wb_max_norm=1.5).validate()
    with pytest.raises(ValueError, match="^wb_lr"):
        tiny(tmp_path, wb_lr=0.0).validate()
    with pytest.raises(ValueError, match="^epochs"):
        tiny(tmp_path, epochs=1, wb_epochs=None).validate()
    # the default stage 2: the demo's 10 epochs, a fifth of a shorter run, never the whole run
    for epochs, want in ((200, 10), (50, 10), (30, 6), (4, 1), (2, 1)):
        assert drw_epoch(tiny(tmp_path, epochs=epochs, wb_epochs=None).resolved()) == epochs - want
