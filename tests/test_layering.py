"""The one command: npe_theory stands alone (no torch, nothing from npe_train), and every setting has a flag."""

import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_npe_theory_imports_nothing_from_npe_train_or_torch():
    for path in (ROOT / "npe_theory").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("npe_train", "torch", "npe.")) and name != "npe", (
                    f"{path.name} imports {name}"
                )


NO_TORCH = """
import sys
from importlib.abc import MetaPathFinder

class NoTorch(MetaPathFinder):  # as if torch were not installed
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoTorch())
from npe.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "args, code, stream, word",
    [
        (["priors", "--lam", "1e-3", "--classes", "5"], 0, "stdout", "prior match"),
        (["check", "--help"], 0, "stdout", "--json"),
        (["report", "--help"], 0, "stdout", "--sign"),
        (["train", "--epochs", "3"], 2, "stderr", "training extra"),
    ],
)
def test_theory_commands_work_without_torch(args, code, stream, word):
    out = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == code, out.stderr
    assert word in getattr(out, stream) and "Traceback" not in out.stderr
    if code == 2:
        assert len(out.stderr.strip().splitlines()) == 1


def test_every_setting_has_a_flag_and_they_cannot_drift():
    from npe.cli import build_parser
    from npe_train.run.config import TrainConfig

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    names = {f.name for f in fields(TrainConfig)}
    assert names <= dests, f"settings without a flag: {names - dests}"
    assert dests - names <= {"help", "config", "resume", "quiet", "func", "config_fields"}
    for f in fields(TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
    helptext = train.format_help()
    for name in names:
        assert "--" + name.replace("_", "-") in helptext


def test_flags_reach_the_config(tmp_path):
    """Settings that once had no flag (momentum, gamma, tau_grid, augment) parse into the config, typed."""
    from npe.cli import build_parser
    from npe_train.run.config import make_config

    args = build_parser().parse_args(
        [
            "train",
            "--momentum",
            "0.5",
            "--gamma",
            "0.2",
            "--tau-grid",
            "0",
            "0.5",
            "--no-pem-detach",
            "--milestones",
            "3",
            "5",
            "--dataset",
            "synthetic",
            "--compile",
            "--out",
            str(tmp_path),
        ]
    )
    cfg = make_config(None, **{k: getattr(args, k) for k in args.config_fields})
    assert (cfg.momentum, cfg.gamma, cfg.tau_grid, cfg.pem_detach, cfg.milestones, cfg.compile) == (
        0.5,
        0.2,
        [0.0, 0.5],
        False,
        [3, 5],
        "default",
    )


def test_version_is_written_once_and_npe_reports_it():
    import importlib.metadata

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    from npe_theory import __version__

    out = subprocess.run(
        [sys.executable, "-m", "npe", "--version"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == f"npe {__version__}"
    assert importlib.metadata.version("npe-toolkit") == __version__
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert all((ROOT / pkg / "py.typed").exists() for pkg in ("npe", "npe_theory", "npe_train"))


NO_TORCH_NO_STATS = NO_TORCH.replace(
    'if name.split(".")[0] in ("torch", "torchvision"):',
    'if name.split(".")[0] in ("torch", "torchvision") or name.startswith("scipy.stats"):',
)


@pytest.mark.parametrize(
    "args, word",
    [
        (["--help"], "train"),
        (["check"], "PASS"),
        (["--version"], "npe "),
        (["priors", "--lam", "1e-3", "--classes", "5"], "prior match"),
    ],
)
def test_help_and_theory_commands_start_without_torch_or_scipy_stats(args, word):
    """torch and scipy.stats take most of the start-up; the commands that need neither must not import them."""
    assert "scipy.stats" in NO_TORCH_NO_STATS
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH_NO_STATS, *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert word in out.stdout and "Traceback" not in out.stderr
