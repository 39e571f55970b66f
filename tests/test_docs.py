"""Every Python block of README.md and docs/*.md marked runnable runs as written, in a temporary folder."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- runnable[^>]*-->\s*```python\n(.*?)```", re.S)


def _blocks():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for k, code in enumerate(MARK.findall(doc.read_text())):
            yield pytest.param(code, id=f"{doc.name}-{k}")


BLOCKS = list(_blocks())


def test_there_are_runnable_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS)
def test_a_runnable_block_runs_and_feeds_npe_report(code, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    if (tmp_path / "dump" / "eta.npy").exists():  # the dump of docs/report.md: npe report reads it
        (tmp_path / "dump" / "settings.toml").write_text(
            "weight_decay = 5e-4\nmomentum = 0.9\nlambda_s = 1.0\n"
        )
        report = subprocess.run(
            [sys.executable, "-m", "npe", "report", "dump"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert report.returncode == 0 and "PEM vs ln N_c" in report.stdout, report.stderr[-2000:]
