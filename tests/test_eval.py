"""npe eval: a finished run scored again. On its own test set it must give back the run's own final accuracy (an
independent path: the training loop's last evaluation); with a test profile, the subset's counts follow it."""

import json

import numpy as np
import pytest

from npe.cli import main
from npe_theory.priors import count_profile
from npe_train.loop.train import train
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint, write_checkpoint
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
        (["--rule", "npe_la_typo"], "rule"),
        (["--rule", "npe_la", "--tau", "-1"], "tau"),
        (["--export", "x.json"], "export"),
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

    out, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    state = read_checkpoint(copy / CHECKPOINT)
    state["epoch"] = 1
    write_checkpoint(copy / CHECKPOINT, state)
    code = main(["eval", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and "has not finished" in err, err


def test_the_run_writes_its_chosen_rule_and_eval_applies_any_rule(finished, tmp_path, capsys):
    """rule.json is the validation set's choice with its prior written out; npe eval --rule/--tau scores one rule at
    one tau; at tau 0 every rule is the network's argmax (an independent check of the tau wiring)."""
    from npe_train.experiments.evaluate import evaluate_finished
    from npe_train.tasks.rules import PRIOR_KEYS

    out, res = finished
    spec = json.loads((out / "rule.json").read_text())
    best = res["advice"]["best"]
    assert (spec["rule"], spec["tau"]) == (best["rule"], best["tau"] or 0.0) and res["advice"][
        "rule_file"
    ] == "rule.json"
    if spec["rule"] in PRIOR_KEYS:
        assert spec["prior"] == res["priors"][PRIOR_KEYS[spec["rule"]]]
    ev, path = evaluate_finished(out, rule="npe_marginal", tau=0.0)
    assert path.name == "eval-npe_marginal-tau0.json"
    for rule, acc in ev["accuracy"].items():
        assert acc["overall"] == pytest.approx(res["accuracy"]["argmax"]["overall"], abs=1e-12), rule
    ev, _ = evaluate_finished(out, rule="posthoc_la", tau=1.0)
    counts = np.asarray(res["counts"], dtype=float)
    np.testing.assert_allclose(ev["chosen"]["prior"], np.log(counts / counts.sum()), rtol=1e-12)
    assert ev["chosen"]["accuracy"] == ev["accuracy"]["posthoc_la"] == res["accuracy"]["posthoc_la"]
    target = tmp_path / "rule.json"
    assert main(["eval", str(out), "--rule", "best", "--export", str(target)]) == 0
    exported = json.loads(target.read_text())
    assert exported["rule"] == best["rule"] and "chosen:" in capsys.readouterr().out


def test_apply_rule_matches_its_formula():
    from npe_train.tasks.rules import apply_rule, rule_spec

    rng = np.random.default_rng(0)
    z, eta = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    priors = {
        "counts": [50, 10, 2],
        "marginal": [0.3, -0.1, 0.5],
        "class_mean": [2.0, 1.0, 0.0],
        "implied": None,
    }
    lp = np.log(np.array([50, 10, 2]) / 62)
    np.testing.assert_allclose(apply_rule(rule_spec("posthoc_la", 0.5, priors), z), z - 0.5 * lp)
    np.testing.assert_allclose(
        apply_rule(rule_spec("npe_class_mean", 2.0, priors), z), z - 2.0 * np.array([2.0, 1.0, 0.0])
    )
    np.testing.assert_allclose(apply_rule(rule_spec("npe_la", 0.75, priors), z, eta), z - 0.75 * eta)
    np.testing.assert_allclose(apply_rule(rule_spec("argmax", 3.0, priors), z), z)
    with pytest.raises(ValueError, match="^eta"):
        apply_rule(rule_spec("npe_la", 1.0, priors), z)
    with pytest.raises(ValueError, match="^rule"):
        rule_spec("npe_inverse", 1.0, priors)  # no implied prior in this run
    with pytest.raises(ValueError, match="^spec.prior"):
        apply_rule(rule_spec("npe_marginal", 1.0, priors), z[:, :2])
