"""npe sweep: the grid, resumability, the parallel path, and the mean/std table."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npe_train.experiments.sweep import grid, run_grid, summarize, write_tables
from npe_train.run.config import make_config


@pytest.mark.slow
def test_grid_sweep_table(tmp_path):
    base = make_config(dataset="synthetic", epochs=2, imbalance=10)
    runs = grid(base, seeds=[0, 1], methods=["npe", "ce"], imbalances=[10], out=tmp_path)
    assert len(runs) == 4 and len({r.out for r in runs}) == 4
    assert {r.pem_detach for r in runs if r.method == "ce"} == {True} and {
        r.pem_detach for r in runs if r.method == "npe"
    } == {False}
    results = run_grid(runs, progress=False)
    table = summarize(results)
    assert len(table) == 2
    npe_row = next(r for r in table if r["method"] == "npe")
    vals = [r["accuracy"]["npe_la"]["few"] for r in results if r["config"]["method"] == "npe"]
    if None in vals:
        assert npe_row["npe_la_few_mean"] is None
    vals = [r["accuracy"]["npe_la"]["overall"] for r in results if r["config"]["method"] == "npe"]
    assert npe_row["npe_la_overall_mean"] == pytest.approx(np.mean(vals))
    assert npe_row["npe_la_overall_std"] == pytest.approx(np.std(vals, ddof=1))
    csv_path, md_path = write_tables(table, tmp_path)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 and float(rows[0]["seeds"]) == 2
    assert "±" in md_path.read_text()
    # a finished sweep is not run again
    stamp = [(tmp_path / r.out / "results.json").stat().st_mtime_ns for r in runs]
    run_grid(runs, progress=False)
    assert stamp == [(tmp_path / r.out / "results.json").stat().st_mtime_ns for r in runs]


@pytest.mark.slow
def test_parallel_path_matches_sequential(tmp_path):
    """--gpus launches one subprocess per slot (CUDA_VISIBLE_DEVICES set); on CPU the runs are deterministic."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "npe",
            "sweep",
            "--dataset",
            "synthetic",
            "--epochs",
            "2",
            "--seeds",
            "0",
            "1",
            "--methods",
            "npe",
            "--imbalances",
            "10",
            "--gpus",
            "0",
            "1",
            "--out",
            str(tmp_path / "par"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| NPE-LA |" in out.stdout and "NPE-LA few" in out.stdout  # the printed sweep.md
    seq = run_grid(
        grid(make_config(dataset="synthetic", epochs=2), [0, 1], ["npe"], [10], tmp_path / "seq"),
        progress=False,
    )
    for r in seq:
        name = r["config"]["out"].split("/")[-1]
        par = json.loads((tmp_path / "par" / name / "results.json").read_text())
        assert par["accuracy"] == r["accuracy"]


BENCHMARKS = {  # script: (tiny arguments, a word its output must hold); their numbers are for people, not asserted
    "train_speed.py": (
        ["--steps", "2", "--repeats", "1", "--images", "256", "--batch-size", "16", "--workers", "0"],
        "PEM overhead",
    ),
    "theory_speed.py": (["--points", "1000", "--repeats", "1"], "x scipy"),
    "seg_pem_overhead.py": (
        ["--steps", "2", "--repeats", "1", "--batch-size", "4", "--device", "cpu"],
        "PEM overhead",
    ),
    "loop_overhead.py": (["--epochs", "2", "--repeats", "1"], "ratio"),
    "ufm_speed.py": (["--reference-classes", "3", "--classes", "12", "--dim", "8"], "12 classes"),
    "report_batching.py": (["--classes", "12", "--widths", "8", "--repeats", "1"], "spread_inverse"),
}


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """``benchmarks/script`` run with ``args`` in a fresh interpreter; it must exit 0."""
    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    out = subprocess.run(
        [sys.executable, str(bench / script), *args], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_benchmark_runs(script):
    """Each benchmark script stays runnable at tiny sizes."""
    args, word = BENCHMARKS[script]
    assert word in _run_benchmark(script, *args).stdout


@pytest.mark.slow
def test_cifar_timing_benchmark_runs(tmp_path):
    """cifar_lt_time.py at tiny size: same seed and draws on one device, so its two pipelines train the same network."""
    _run_benchmark(
        "cifar_lt_time.py",
        "--epochs",
        "1",
        "--per-class",
        "4",
        "--imbalance",
        "4",
        "--variants",
        "eager",
        "standard",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "time"),
    )
    summary = json.loads((tmp_path / "time" / "summary.json").read_text())
    assert set(summary["runs"]) == {"eager", "standard"} and summary["random_data"] is True
    assert summary["runs"]["eager"]["accuracy_npe_la"] == summary["runs"]["standard"]["accuracy_npe_la"]


@pytest.mark.slow
def test_forecast_oracle_benchmark_runs(tmp_path):
    """forecast_oracle.py at tiny size: the two runs of a seed end with the same PEM (the comparison rests on it), and
    the second one's forecasts are made from the rescaled features (they differ from the held ones)."""
    import csv

    out = _run_benchmark(
        "forecast_oracle.py",
        "--cells",
        "synthetic:100:equilibrium",
        "--epochs",
        "6",
        "--out",
        str(tmp_path / "oracle.csv"),
    )
    assert "oracle norms" in out.stdout
    rows = list(csv.DictReader(open(tmp_path / "oracle.csv")))
    assert len(rows) == 3
    assert all(float(r["runs_differ_by"]) == 0.0 for r in rows)
    assert all(float(r["oracle_norms_rmse"]) != float(r["forecast_rmse"]) for r in rows)
