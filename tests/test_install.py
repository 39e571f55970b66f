"""The package as a user installs it: a wheel, installed non-editable outside the checkout, draws the figures and trains
from a shipped recipe (its run summaries and recipes are package data, not files of the checkout)."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout(tmp_path):
    # built from a copy: building writes build/ and egg-info beside the sources, and a stale build/ would hide a file
    # missing from the package data
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".venv*", "build", "dist", ".git", "*.egg-info", "__pycache__", ".hypothesis"
    )

    def ignore(folder, names):  # and the checkout's own run folders and results, at the top only
        return skip(folder, names) | ({"runs", "results"} & set(names) if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, symlinks=True, ignore=ignore)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("npe_toolkit-*.whl"))
    # a fresh venv whose only view of the test environment is its site-packages folder (no editable finder: a plain
    # path line in a .pth file adds the folder without running the .pth files inside it)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}

    def npe(*args):
        return subprocess.run(
            [str(python), "-m", "npe", *args], capture_output=True, text=True, timeout=900, cwd=work, env=env
        )

    where = subprocess.run(
        [str(python), "-c", "import npe_theory, npe_train; print(npe_theory.__file__, npe_train.__file__)"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert where.returncode == 0 and str(ROOT) not in where.stdout and str(site) in where.stdout, (
        where.stdout + where.stderr
    )
    figs = npe(
        "figures", "--only", "F7,F10,F11", "--out", str(work / "figs")
    )  # the figures drawn from package data
    assert figs.returncode == 0, figs.stderr
    assert {"F7_regime_gap.png", "F10_adaptation.png", "F11_segmentation.png"} <= {
        p.name for p in (work / "figs").iterdir()
    }
    run = npe(
        "train", "--config", "mnist1d_lt_equilibrium", "--epochs", "1", "--quiet", "--out", str(work / "run")
    )
    assert run.returncode == 0, run.stderr
    assert (work / "run" / "results.json").is_file()
