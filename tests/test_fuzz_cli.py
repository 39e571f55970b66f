"""Fuzz the command line with malformed values, types, paths and configs (hypothesis, CI profile).

Every command is called in-process through ``npe.cli.main`` (what the ``npe`` script runs) with one
flag given a hostile value; the contract: exit 0, 1 or 2; on failure exactly one line on stderr,
no traceback, and for bad input (2) the line names the flag, the config key or the file.
130 generated command lines per run.
"""

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

try:
    import npe_theory.report_cli  # noqa: F401  (absent from checkouts before the npe package)
    from npe.cli import main
except ImportError:  # the layout before the npe package (for benchmarks/hostile_inputs.py --repo OLD)
    from npe_theory.cli import main
from fuzzing import TALLY, Hang, tally, time_limit

VALUES = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e309",
    "1e-400",
    "abc",
    "",
    "1" * 400,
    "0x10",
    "2.5",
    "true",
    "[1]",
    "-0",
    "1e300",
]
COUNTER = itertools.count()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "afile").write_text("x")
    (root / "adir").mkdir()
    (root / "bad.toml").write_text('[train]\nepochs = "ten"\nlr = [1]\n')
    (root / "odd.toml").write_text("[train]\nunknown_key = 3\n")
    (root / "garbage.toml").write_bytes(b"\xff\xfe = = =")
    return root


def paths(root):
    return [
        str(root / "afile" / "under"),
        str(root / "adir"),
        str(root / "afile"),
        "/nonexistent/deep/x",
        str(root / "bad.toml"),
        str(root / "odd.toml"),
        str(root / "garbage.toml"),
        "",
    ]


def run(capsys, argv, flag, value):
    if TALLY:
        try:
            _run(capsys, argv, flag, value)
            tally("cli", "clear error or right value")
        except Hang:
            capsys.readouterr()
            tally("cli", "hang")
        except AssertionError as exc:
            tally("cli", "raw traceback" if "Traceback" in str(exc) else "unclear or multi-line error")
        except BaseException as exc:  # noqa: BLE001  (a traceback escaping main)
            capsys.readouterr()
            tally(
                "cli", "raw traceback" if not isinstance(exc, SystemExit) else "unclear or multi-line error"
            )
        return
    _run(capsys, argv, flag, value)


def _run(capsys, argv, flag, value):
    with time_limit(120):  # bounded work: no command line may run away
        code = main(argv)
    out = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, out.err)
    if code:
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.err, (argv, out.err)
        if code == 2:
            names = {flag, flag.lstrip("-"), flag.lstrip("-").replace("-", "_"), "config", "COMMAND"}
            assert any(n and n in lines[0] for n in names) or (value and value in lines[0]), (argv, lines[0])
    return code


THEORY = {
    "priors": (
        ["--lam", "1e-3", "--classes", "5"],
        [
            "--lam",
            "--classes",
            "--max",
            "--imbalance",
            "--norm-sq",
            "--weight",
            "--reduction",
            "--loss",
            "--profile",
            "--csv",
        ],
    ),
    "ufm": (
        ["--classes", "3", "--max", "20", "--imbalance", "5", "--max-iter", "300"],
        [
            "--dim",
            "--lam-pem",
            "--lam-features",
            "--tol",
            "--max-iter",
            "--imbalance",
            "--seed",
            "--json",
            "--nonlinearity",
        ],
    ),
}
TRAIN_BASE = ["--dataset", "synthetic", "--n-max", "30", "--imbalance", "5", "--epochs", "1", "--quiet"]
TRAIN_FLAGS = [
    "--epochs",
    "--lr",
    "--momentum",
    "--weight-decay",
    "--batch-size",
    "--imbalance",
    "--tau",
    "--alpha",
    "--num-pems",
    "--milestones",
    "--tau-grid",
    "--dataset",
    "--model",
    "--method",
    "--seed",
    "--n-max",
    "--config",
    "--out",
    "--data-dir",
    "--schedule",
    "--warmup-epochs",
    "--pem-hidden",
    "--profile",
    "--test-fraction",
    "--image-size",
    "--device",
    "--workers",
]


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(THEORY)), st.data())
@example("priors", None)
def test_theory_commands(capsys, places, command, data):
    base, flags = THEORY[command]
    if data is None:
        flag, value = "--csv", str(places / "afile" / "under")
    else:
        flag = data.draw(st.sampled_from(flags))
        value = data.draw(st.sampled_from(VALUES + paths(places)))
    run(capsys, [command, *base, flag, value], flag, value)


@pytest.mark.slow
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(TRAIN_FLAGS), st.data())
@example("--config", None)
def test_train(capsys, places, flag, data):
    value = str(places / "bad.toml") if data is None else data.draw(st.sampled_from(VALUES + paths(places)))
    out = ["--out", str(places / f"run{next(COUNTER)}")] if flag != "--out" else []
    run(capsys, ["train", *TRAIN_BASE, *out, flag, value], flag, value)


@pytest.mark.slow
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["report", "compare", "sweep", "figures", "check", "nonsense"]), st.data())
def test_other_commands(capsys, places, command, data):
    value = data.draw(st.sampled_from(paths(places) + ["abc", ""]))
    argv = {
        "report": ["report", value],
        "compare": ["compare", value],
        "sweep": ["sweep", *TRAIN_BASE, "--seeds", "0", "--methods", "ce", "--out", value],
        "figures": ["figures", "--out", str(places / "afile" / "figs")],
        "check": ["check", "--quiet", "--json", value],
        "nonsense": ["nonsense", value],
    }[command]
    flag = {
        "report": "DIR",
        "compare": "RUN_DIR",
        "sweep": "--out",
        "figures": "--out",
        "check": "--json",
        "nonsense": "COMMAND",
    }[command]
    if command == "check" and value and not value.startswith("/nonexistent") and "afile" not in value:
        return  # a writable path runs the full check (3 s); the bad ones are what this test is about
    run(capsys, argv, flag, value)
