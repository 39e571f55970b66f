"""Count how the toolkit answers hostile input: the fuzz suites run in tally mode.

    python benchmarks/hostile_inputs.py            # this checkout
    python benchmarks/hostile_inputs.py --repo DIR # another checkout (e.g. an older commit), same suites

Runs tests/test_fuzz_api.py, tests/test_fuzz_cli.py and tests/test_public_api.py with NPE_FUZZ_TALLY set, so every generated
input is classified (clear error or right value / raw traceback / silent wrong value / hang /
unclear or multi-line error) instead of failing the test, and prints the table per area.
Entry points that an older checkout does not have are skipped there.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SUITES = ("fuzzing.py", "test_fuzz_api.py", "test_fuzz_cli.py", "test_public_api.py", "conftest.py")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repo", default=str(HERE), help="checkout whose packages are exercised (default: this one)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tests = Path(tmp) / "tests"
        tests.mkdir()
        for name in SUITES:
            shutil.copy(HERE / "tests" / name, tests / name)
        tally = Path(tmp) / "tally.jsonl"
        env = {
            **os.environ,
            "NPE_FUZZ_TALLY": str(tally),
            "CI": "true",
            "PYTHONPATH": f"{args.repo}{os.pathsep}{tests}",
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                tmp,
                "-c",
                os.devnull,
                str(tests),
                "-W",
                "error::RuntimeWarning",
            ],
            env=env,
            cwd=tmp,
            check=False,
        )
        rows = [json.loads(line) for line in tally.read_text().splitlines()] if tally.exists() else []
    table = collections.defaultdict(collections.Counter)
    for r in rows:
        table[r["kind"]][r["outcome"]] += 1
    outcomes = [
        "clear error or right value",
        "raw traceback",
        "silent wrong value",
        "hang",
        "unclear or multi-line error",
    ]
    print(f"\n{'area':<6} {'tried':>6} " + " ".join(f"{o:>28}" for o in outcomes))
    for kind, counts in sorted(table.items()):
        print(f"{kind:<6} {sum(counts.values()):>6} " + " ".join(f"{counts[o]:>28}" for o in outcomes))


if __name__ == "__main__":
    main()
