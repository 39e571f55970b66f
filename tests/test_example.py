"""examples/minimal_npe.py runs as a user runs it and shows what it says it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "minimal_npe.py"


def test_the_minimal_example_runs_and_its_pem_tracks_the_log_counts(tmp_path):
    assert len(EXAMPLE.read_text().splitlines()) <= 150
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    acc = {
        name: float(v)
        for name, v in re.findall(r"^  (CE|post-hoc LA|NPE-LA)\b.*?([\d.]+)%$", out.stdout, re.M)
    }
    assert acc.keys() == {"CE", "post-hoc LA", "NPE-LA"}
    assert acc["NPE-LA"] > acc["CE"]  # the adjustment helps on a balanced test set
    slope = float(re.search(r"PEM vs ln N_c .*slope ([\d.]+)", out.stdout).group(1))
    assert 0.7 < slope < 1.4
    assert list(tmp_path.iterdir()) == []  # it writes nothing
