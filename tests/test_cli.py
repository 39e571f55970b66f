"""The npe command line of the theory package."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from npe.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "npe", *args], capture_output=True, text=True, timeout=600)


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("check", "priors", "figures", "ufm"):
        assert cmd in out.stdout


def test_bare_npe_lists_the_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("check", "priors", "train", "report", "eval", "reproduce"):
        assert f"    {cmd}" in out, cmd


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["priors", "--imbalanse", "10"], "--imbalance"),
        (["train", "--weight-decy", "1"], "--weight-decay"),
        (["train", "--sed=3"], "--seed"),
    ],
)
def test_a_mistyped_option_gets_a_suggestion(capsys, argv, hint):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"did you mean {hint}" in err, err


def test_an_unlike_option_gets_no_guess(capsys):
    assert main(["priors", "--zzzzzz", "1"]) == 2
    assert "did you mean" not in capsys.readouterr().err


def test_check_passes_and_writes_json(tmp_path):
    path = tmp_path / "check.json"
    assert main(["check", "--quiet", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert len(rows) >= 30 and all(r["passed"] for r in rows)
    assert {"claim", "worst_error", "tolerance", "passed"} <= set(rows[0])


def test_check_fails_with_exit_1_when_a_claim_fails(monkeypatch, capsys):
    """Break lambert_w by one part in 1e10: the accuracy rows must catch it."""
    import npe_theory.checks as checks

    real = checks.lambert_w
    monkeypatch.setattr(checks, "lambert_w", lambda x: real(x) * (1 + 1e-10))
    assert main(["check", "--quiet"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_priors_reproduces_spec_row(tmp_path):
    path = tmp_path / "p.csv"
    out = run(
        "priors",
        "--profile",
        "exp",
        "--classes",
        "100",
        "--max",
        "500",
        "--imbalance",
        "100",
        "--lam",
        "1e-3",
        "--reduction",
        "mean",
        "--norm-sq",
        "100",
        "--csv",
        str(path),
    )
    assert out.returncode == 0, out.stderr
    assert "slope 0.817" in out.stdout and "max deviation from best offset 0.469" in out.stdout
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 100 and int(rows[0]["count"]) == 500 and int(rows[-1]["count"]) == 5
    x = np.array([float(r["x"]) for r in rows])
    assert x.min() == pytest.approx(46.1, abs=0.05) and x.max() == pytest.approx(4609.6, abs=0.1)


@pytest.mark.parametrize(
    "args, word",
    [
        (["priors", "--lam", "-1"], "lam"),
        (["priors", "--lam", "1e-3", "--imbalance", "0.5"], "imbalance"),
        (["priors", "--lam", "1e-3", "--loss", "hinge"], "--loss"),
        (["priors"], "--lam"),
        (["priors", "--lam", "abc"], "--lam"),
        (["nonsense"], "COMMAND"),
        (["ufm", "--dim", "0"], "dim"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, word):
    out = run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in out.stderr


def test_ufm_command_writes_json(tmp_path):
    path = tmp_path / "ufm.json"
    out = run("ufm", "--classes", "4", "--max", "40", "--imbalance", "10", "--json", str(path))
    assert out.returncode == 0, out.stderr
    data = json.loads(path.read_text())
    assert data["mismatch"] < 1e-4 and data["config"]["counts"] == [40, 18, 8, 4]
    assert data["history"][-1]["iteration"] == data["iterations"]
    out = run(
        "ufm",
        "--classes",
        "4",
        "--max",
        "40",
        "--imbalance",
        "10",
        "--features",
        "classes",
        "--json",
        str(path),
    )
    assert out.returncode == 0, out.stderr
    collapsed = json.loads(path.read_text())
    assert collapsed["config"]["features"] == "classes" and collapsed["nc1"] == 0.0
    np.testing.assert_allclose(collapsed["eta_learned"], data["eta_learned"], atol=1e-5)


@pytest.mark.slow
def test_figures_command(tmp_path, monkeypatch):
    """Every PNG is drawn (the UFM runs of F6 and F9 swapped for small ones to keep this quick)."""
    import npe_theory.figures as figs
    from npe_theory.ufm import simulate_ufm

    small = simulate_ufm([40, 18, 8, 4], tol=1e-8)
    monkeypatch.setitem(figs.FIGURES, "F6_ufm.png", lambda p: figs.fig_ufm(p, small))
    small_geometry = figs.geometry_runs(classes=4, n_max=40, imbalances=(10.0,))
    monkeypatch.setitem(figs.FIGURES, "F9_geometry.png", lambda p: figs.fig_geometry(p, small_geometry))
    assert main(["figures", "--out", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(figs.FIGURES)
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert main(["figures", "--only", "F4,F1", "--out", str(tmp_path / "two")]) == 0
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == ["F1_objective.png", "F4_logistic.png"]
    out = run("figures", "--only", "F99", "--out", str(tmp_path / "none"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "F99" in out.stderr


def test_priors_from_a_run_agrees_with_the_runs_own_report(tmp_path):
    """npe priors --from RUN predicts with the trainer's loss, batch-mean reduction, decayed bias, alpha and the run's
    per-class norms: the same numbers as the run's own report (pem.predicted), and its learned outputs beside them."""
    import csv
    import json

    from npe_train.loop.train import train
    from npe_train.run.config import make_config

    res = train(
        make_config(
            dataset="synthetic",
            imbalance=10,
            n_max=60,
            epochs=2,
            alpha=0.5,
            weight_decay=2e-3,
            out=str(tmp_path / "r"),
        ),
        progress=False,
    )
    out = run("priors", "--from", str(tmp_path / "r"), "--csv", str(tmp_path / "p.csv"))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    np.testing.assert_allclose([float(r["predicted"]) for r in rows], res["pem"]["predicted"], rtol=1e-12)
    np.testing.assert_allclose([float(r["learned"]) for r in rows], res["pem"]["learned"], rtol=1e-12)
    assert "as npe train trains it" in out.stdout
    (tmp_path / "bad.json").write_text(json.dumps({"counts": [1, 2]}))
    bad = run("priors", "--from", str(tmp_path / "bad.json"))
    assert bad.returncode == 2 and "--from" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_priors_like_train_uses_the_trainers_settings(tmp_path):
    import csv

    from npe_theory.priors import count_profile, predicted_priors

    out = run(
        "priors",
        "--lam",
        "5e-3",
        "--like-train",
        "--classes",
        "5",
        "--max",
        "200",
        "--imbalance",
        "20",
        "--csv",
        str(tmp_path / "p.csv"),
    )
    assert out.returncode == 0, out.stderr
    want = predicted_priors(
        count_profile("exp", 5, 200, 20.0), 5e-3, 1.0, "mean", "logistic", bias=True, weight=1.0
    )
    np.testing.assert_allclose(
        [float(r["predicted"]) for r in csv.DictReader(open(tmp_path / "p.csv"))], want, rtol=1e-12
    )
    assert run("priors", "--classes", "5").returncode == 2  # no --lam and no run: refused


def test_every_option_of_every_command_has_help():
    import argparse

    from npe.cli import build_parser

    parser = build_parser(["train"])  # with the training commands
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"npe {name} {action.option_strings[0]}"
        for name, command in sub.choices.items()
        for action in command._actions
        if action.option_strings and not action.help and action.option_strings[0] != "-h"
    ]
    assert not missing, missing


def test_every_public_name_of_npe_train_imports():
    import npe_train

    for name in npe_train.__all__:
        assert getattr(npe_train, name) is not None, name
    assert npe_train.__doc__.index("from npe_train import") < npe_train.__doc__.index("Layers")  # usage first


def test_ufm_status_says_abnormal_is_convergence_only_at_a_tiny_gradient():
    from npe_theory.cli import ufm_status

    assert ufm_status("ABNORMAL: ", 3.7e-10).startswith("stationary")
    assert ufm_status("ABNORMAL: ", 1e-2).startswith("NOT converged")
    assert "pgtol" in ufm_status("CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL", 1e-10)


@pytest.mark.parametrize(
    "log_n, prop1, eq, start",
    [
        (0.03, 0.02, 0.01, "the PEM is ln N_c up to a constant"),
        (0.43, 0.04, 0.02, "the PEM is not ln N_c (0.43 nats from ln N_c, slope 0.72), but Proposition 1"),
        (
            0.43,
            0.06,
            0.02,
            "the PEM is not ln N_c (0.43 nats from ln N_c, slope 0.72), but the exact equilibrium",
        ),
        (0.43, 0.15, 0.12, "the PEM is 0.43 nats from ln N_c, slope 0.72; the exact equilibrium"),
        (0.9, 0.5, 0.4, "the PEM is 0.90 nats from ln N_c, slope 0.72, and no reference explains it"),
    ],
)
def test_the_summary_closes_with_what_the_report_found(log_n, prop1, eq, start):
    from npe_theory.report import finding

    m = lambda r: {"centered_rmse": r, "max_deviation": r, "slope": 0.72}  # noqa: E731
    pem = {"prior_match": {"vs_log_counts": m(log_n), "vs_closed_form": m(prop1), "vs_equilibrium": m(eq)}}
    assert finding({**pem, "regime": "equilibrium"}).startswith(start)
