"""--tensorboard DIR: the per-epoch scalars of metrics.jsonl in a TensorBoard log (optional package), read back."""

import json

import pytest
from conftest import optional_module

from npe.cli import main
from npe_train.loop.train import train
from npe_train.run.config import make_config

tensorboard = optional_module("tensorboard")
pytestmark = pytest.mark.optional


@pytest.mark.skipif(tensorboard is None, reason="tensorboard is not installed")
def test_metrics_lines_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_config(
        dataset="synthetic",
        imbalance=10,
        n_max=60,
        epochs=3,
        eval_every=2,
        out=str(tmp_path / "run"),
        tensorboard=str(tmp_path / "tb"),
    )
    train(cfg, progress=False)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tags = events.Tags()["scalars"]
    assert {"loss", "lambda_s", "accuracy/npe_la", "prior_rmse_vs_log_counts"} <= set(tags)
    for tag, get in (("loss", lambda ln: ln["loss"]), ("lambda_s", lambda ln: ln["lambda_s"])):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(ln["epoch"], pytest.approx(get(ln), rel=1e-6)) for ln in lines]
    # evaluated epochs only (1 and 2 of 0..2): accuracy is written where metrics.jsonl has it
    assert [e.step for e in events.Scalars("accuracy/npe_la")] == [
        ln["epoch"] for ln in lines if "accuracy" in ln
    ]


def test_a_missing_tensorboard_is_one_line_before_any_folder(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
            "--tensorboard",
            str(tmp_path / "tb"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("npe: error: tensorboard:"), (
        err
    )
    assert not (tmp_path / "run").exists()
