"""npe eval: a finished run scored again. On its own test set it must give back the run's own final accuracy (an
independent path: the training loop's last evaluation); with a test profile, the subset's counts follow it."""

import json

import numpy as np
import pytest

from npe.cli import main
from npe_theory.priors import count_profile
from npe_train.loop.train import train
from npe_train.run.config import make_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("ev") / "run"
    res = train(
        make_config(dataset="synthetic", imbalance=20, n_max=100, epochs=3, seed=5, out=str(out)),
        progress=False,
    )
    return out, res


def test_eval_on_the_runs_own_test_set_gives_back_its_accuracy(finished, capsys):
    from npe_train.experiments.evaluate import evaluate_finished

    out, res = finished
    ev, path = evaluate_finished(out)
    assert path == out / "eval-same.json" and json.loads(path.read_text())["accuracy"] == ev["accuracy"]
    for rule, acc in res["accuracy"].items():
        assert ev["accuracy"][rule]["per_class"] == pytest.approx(acc["per_class"], abs=1e-12), rule
    assert ev["pem"]["learned"] == pytest.approx(res["pem"]["learned"], abs=1e-9)
    # balanced test set: the sample accuracy is the mean per-class accuracy
    assert ev["sample_accuracy"]["npe_la"] == pytest.approx(res["accuracy"]["npe_la"]["overall"], abs=1e-12)


@pytest.mark.parametrize("kind", ["exp", "reversed"])
def test_eval_with_a_test_profile(finished, kind, capsys):
    out, res = finished
    code = main(["eval", str(out), "--test-profile", f"{kind}:10"])
    assert code == 0, capsys.readouterr().err
    ev = json.loads((out / f"eval-{kind}10.json").read_text())
    per_class_test = 200  # the synthetic set's balanced test count per class
    want = count_profile("exp", 10, per_class_test, 10.0)
    assert ev["test_counts"] == (want if kind == "exp" else want[::-1]).tolist()
    for rule, acc in ev["accuracy"].items():  # the sample accuracy weighs each class by its test count
        assert ev["sample_accuracy"][rule] == pytest.approx(
            np.dot(acc["per_class"], ev["test_counts"]) / sum(ev["test_counts"])
        )
    assert "sample accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--test-profile", "exp:0.5"], "test_profile"),
        (["--test-profile", "flat"], "test_profile"),
        ([], "RUN_DIR"),
    ],
)
def test_eval_refuses_bad_input_in_one_line(finished, tmp_path, capsys, argv, word):
    out, _ = finished
    target = str(tmp_path / "nothing") if word == "RUN_DIR" else str(out)
    code = main(["eval", target, *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and word in err, err


def test_eval_of_an_unfinished_run_is_refused(finished, tmp_path, capsys):
    import shutil

    import torch

    out, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    state["epoch"] = 1
    torch.save(state, copy / "checkpoint.pt")
    code = main(["eval", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and "has not finished" in err, err
