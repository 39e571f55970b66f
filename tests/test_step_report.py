"""The per-epoch prior report read from the training steps' own feature rows (no forward pass): against an independent
recording of what the PEM read and its weights after the epoch, and the training it must leave unchanged."""

import json

import numpy as np
import pytest
import torch

import npe_train.loop.train as train_mod
from npe_theory.equilibrium import pem_equilibrium
from npe_train.methods.feature_sample import EpochOutputs
from npe_train.run.config import make_config


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("chunk", [None, 37])
def test_step_report_reads_what_the_pem_trained_on(tmp_path, pem_steps, monkeypatch, chunk):
    """A forward hook on the PEM's head records the features of every training step and the weights before it; the plan
    says which samples each step took. Epoch 1's report must be the head after that epoch (= before epoch 2's first step)
    on epoch 1's rows, and the exact equilibrium of those rows with the run's weight decay. ``chunk``: the report's PEM
    outputs taken 3 rows at a time (37 outputs over 10 classes), as at thousands of classes, a last partial chunk too."""
    if chunk is not None:
        import npe_train.tasks.classification as classification

        monkeypatch.setattr(classification, "OWN_CLASS_CHUNK", chunk)
    calls, shards = pem_steps
    cfg = make_config(
        dataset="synthetic",
        imbalance=20,
        epochs=3,
        batch_size=64,
        n_max=150,
        seed=3,
        weight_decay=5e-3,
        out=str(tmp_path / "run"),
    )
    res = train_mod.train(cfg, progress=False)
    lines = _lines(tmp_path / "run")
    assert [("accuracy" in x, x["report_from"]) for x in lines] == [
        (False, "the epoch's training steps"),
        (False, "the epoch's training steps"),
        (True, "a training-mode pass after the epoch"),
    ]

    steps = [-(-len(p.shard) // 64) for p in shards]
    first, last = steps[0], steps[0] + steps[1]
    h = torch.cat([c[0] for c in calls[first:last]]).numpy()
    weight, bias = calls[last][1].numpy(), calls[last][2].numpy()  # the head after epoch 1's last step
    labels = _labels(cfg)[shards[1].shard.numpy()]  # the samples epoch 1 took, in step order
    C = len(res["counts"])
    learned = np.array([(h[labels == c] @ weight[c] + bias[c]).mean() for c in range(C)])
    np.testing.assert_allclose(lines[1]["pem_learned"], learned, atol=2e-5)
    eq = pem_equilibrium(h, labels, C, res["config"]["pem_weight_decay"], alpha=res["config"]["alpha"])
    np.testing.assert_allclose(lines[1]["pem_equilibrium"], eq.eta, atol=1e-6)


def _labels(cfg):
    from npe_train.loop.build import build_data

    return build_data(cfg.resolved()).y_train


def test_the_per_epoch_report_leaves_training_alone(tmp_path):
    """Keeping the steps' rows draws nothing and changes no step: the run with a report every epoch from the steps ends
    exactly where the run that evaluates the test set every epoch ends."""
    kw = dict(
        dataset="synthetic", imbalance=20, epochs=3, batch_size=64, n_max=150, seed=4, weight_decay=5e-3
    )
    a = train_mod.train(make_config(out=str(tmp_path / "a"), eval_every=0, **kw), progress=False)
    b = train_mod.train(make_config(out=str(tmp_path / "b"), eval_every=1, **kw), progress=False)
    assert a["accuracy"] == b["accuracy"]
    assert a["pem"]["learned"] == b["pem"]["learned"]
    assert [x["loss"] for x in _lines(tmp_path / "a")] == [x["loss"] for x in _lines(tmp_path / "b")]
    assert all("accuracy" in x for x in _lines(tmp_path / "b"))


def test_epoch_outputs_keep_single_label_rows_only():
    rows = EpochOutputs(10, 3)
    h, y = torch.arange(12.0).reshape(4, 3), torch.tensor([0, 1, 1, 2])
    rows.add(h, [(y, None)])
    rows.add(h[:2] + 100, [(y[:2], None)])
    got_h, got_y = rows.result()
    assert torch.equal(got_h, torch.cat([h, h[:2] + 100])) and torch.equal(got_y, torch.cat([y, y[:2]]))
    mixed = EpochOutputs(10, 3)
    mixed.add(h, [(y, torch.ones(4)), (y, torch.zeros(4))])  # a mixing method's two labels per row
    assert mixed.result() is None
    assert EpochOutputs(2**25, 2).result() is None  # beyond the device budget nothing is kept


@pytest.mark.parametrize("shift, expected", [([], 0), (["2=reversed:10"], 1)])
def test_default_test_cadence(shift, expected):
    """The test set once, at the end, unless the stream shifts (its point is the accuracy after each shift)."""
    assert (
        make_config(dataset="synthetic", shift=shift, n_max=200, epochs=4).resolved().eval_every == expected
    )


def test_a_run_whose_epochs_are_too_large_to_keep_says_what_it_skips(tmp_path, monkeypatch):
    """An epoch whose feature rows exceed OUTPUT_BUDGET keeps none, so it makes no per-epoch report and no forecast; the
    run says so once (not every epoch) and still reports at its evaluation. Within the budget it says nothing."""
    import warnings

    import npe_train.methods.feature_sample as feature_sample

    def run(name):
        cfg = make_config(
            dataset="synthetic", imbalance=20, epochs=4, n_max=150, seed=3, out=str(tmp_path / name)
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            train_mod.train(cfg, progress=False)
        told = [w for w in seen if "per-epoch prior report and the forecasts are skipped" in str(w.message)]
        return told, _lines(tmp_path / name)

    told, lines = run("kept")
    assert told == [] and [x["report_from"] is not None for x in lines] == [True] * 4
    monkeypatch.setattr(feature_sample, "OUTPUT_BUDGET", 10)
    told, lines = run("too_large")
    assert len(told) == 1 and "--eval-every" in str(told[0].message)
    assert [x.get("report_from") for x in lines] == [None, None, None, "a training-mode pass after the epoch"]
    assert not any("forecast" in x for x in lines)
