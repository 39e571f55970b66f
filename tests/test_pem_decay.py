"""The PEM's weight decay is its own (docs/regimes.md): the optimizer applies each decay to its own parameters, the
report's lambda*s and predictions read the PEM's, and the default recipe leaves the backbone at its data set's value."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from npe_theory.errors import InputError
from npe_train.data.catalog import DATASETS
from npe_train.loop.build import build_data, build_network, build_optimizer, build_schedule
from npe_train.loop.train import train
from npe_train.models.pem import pem_parameters
from npe_train.run.config import DEFAULT_LAMBDA_S, make_config


def test_each_decay_shrinks_its_own_parameters():
    """One SGD step with zero gradients multiplies every weight by 1 - lr * its decay: the PEM's by the PEM decay."""
    cfg = make_config(dataset="synthetic", weight_decay=1e-3, pem_weight_decay=3e-2, momentum=0.0, lr=0.5)
    data = build_data(cfg)
    torch.manual_seed(0)
    model = build_network(cfg, data)
    opt, _ = build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pem = {id(p) for p in pem_parameters(model).values()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        want = 1 - 0.5 * (3e-2 if id(p) in pem else 1e-3)
        torch.testing.assert_close(p.detach(), before[name] * want, rtol=1e-6, atol=0)


def test_lambda_s_and_the_report_read_the_pem_decay(tmp_path):
    res = train(
        make_config(
            dataset="synthetic",
            imbalance=10,
            n_max=60,
            epochs=3,
            weight_decay=1e-4,
            pem_weight_decay=2e-2,
            out=str(tmp_path / "r"),
        ),
        progress=False,
    )
    lines = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    steps = math.ceil(sum(res["counts"]) / 64)
    want = 2e-2 * steps * sum(line["lr"] for line in lines) / (1 - 0.9)
    assert res["pem"]["lambda_s"] == pytest.approx(want, rel=1e-9) and lines[-1]["lambda_s"] == pytest.approx(
        want, rel=1e-9
    )
    assert res["pem"]["settings"]["weight_decay"] == 2e-2
    assert res["config"]["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", [n for n, e in DATASETS.items() if e.task == "classification"])
def test_the_default_recipe_keeps_the_backbone_decay_of_the_data_set(name):
    reads_folder = "data_dir" in DATASETS.get(name).reads
    cfg = make_config(dataset=name, **({"data_dir": "/unused"} if reads_folder else {}))
    assert cfg.weight_decay == DATASETS.get(name).weight_decay
    assert cfg.pem_weight_decay is None and cfg.target_lambda_s == DEFAULT_LAMBDA_S


def test_the_target_sets_the_pem_decay_only_unless_shared():
    cfg = make_config(dataset="synthetic", epochs=4)
    data = build_data(cfg)
    own, _ = build_schedule(cfg, data)
    shared, _ = build_schedule(replace(cfg, shared_decay=True, weight_decay=None), data)
    assert own.weight_decay == cfg.weight_decay and own.pem_weight_decay > 0
    assert shared.weight_decay == shared.pem_weight_decay == pytest.approx(own.pem_weight_decay)


def test_one_decay_given_applies_to_both():
    cfg = make_config(dataset="synthetic", weight_decay=7e-3)
    assert cfg.weight_decay == cfg.pem_weight_decay == 7e-3 and cfg.target_lambda_s is None


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"pem_weight_decay": 0.0}, "pem_weight_decay"),
        ({"weight_decay": 0.0}, "weight_decay"),
        ({"pem_weight_decay": -1.0}, "pem_weight_decay"),
        ({"shared_decay": "yes"}, "shared_decay"),
    ],
)
def test_bad_decays_name_the_argument(kw, word):
    with pytest.raises(InputError, match=f"^{word}"):
        make_config(dataset="synthetic", **kw)


def test_a_run_that_has_not_fit_says_so(tmp_path):
    """A collapsed run (a learning rate too small to move) is labelled under-fit, never a bare regime; a fitted one not."""
    from npe_train.tasks.prior import fit_status

    kw = dict(dataset="synthetic", imbalance=10, n_max=60, pem_weight_decay=1e-2)
    stuck = train(make_config(**kw, epochs=3, lr=1e-6, out=str(tmp_path / "stuck")), progress=False)
    fitted = train(make_config(**kw, epochs=20, lr=0.05, out=str(tmp_path / "fit")), progress=False)
    assert not stuck["fit"]["fitted"] and stuck["pem"]["regime"].endswith(", under-fit")
    assert "has not fit its training data" in stuck["pem"]["regime_note"]
    assert fitted["fit"]["fitted"] and "under-fit" not in fitted["pem"]["regime"]
    counts = np.array(stuck["counts"], dtype=float)
    pi = counts / counts.sum()
    assert stuck["fit"]["prior_loss"] == pytest.approx(-(pi * np.log(pi)).sum())
    assert fit_status(float("nan"), counts)["fitted"] is False
