"""npe reproduce: a table file becomes runs, finished runs are reused, and table.md holds mean ± std over seeds."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from npe.cli import main
from npe_theory.errors import InputError
from npe_train.experiments.reproduce import load_table, plan, shipped_tables
from npe_train.run.results import read_results

TABLE = """
title = "tiny"
seeds = [0, 1]
[base]
dataset = "synthetic"
epochs = 2
n_max = 40
imbalance = 10
[[row]]
name = "CE"
method = "ce"
published = 12.5
source = "a paper"
[[row]]
name = "LDAM-DRW"
method = "ldam_drw"
"""


def test_a_table_runs_once_and_writes_mean_and_std(tmp_path, capsys):
    (tmp_path / "t.toml").write_text(TABLE)
    out = tmp_path / "out"
    assert main(["reproduce", str(tmp_path / "t.toml"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["row"] for r in rows] == ["CE", "LDAM-DRW"] and rows[0]["published"] == "12.5"
    accs = [read_results(out / f"CE-seed{s}").raw["accuracy"]["npe_la"]["overall"] for s in (0, 1)]
    assert float(rows[0]["npe_la_overall_mean"]) == pytest.approx(np.mean(accs))
    assert float(rows[0]["npe_la_overall_std"]) == pytest.approx(np.std(accs, ddof=1))
    heads = [
        read_results(out / f"CE-seed{s}").raw["accuracy_by_index"]["npe_official"]["npe_la"]["head"]
        for s in (0, 1)
    ]
    assert float(rows[0]["npe_la_npe_official_head_mean"]) == pytest.approx(np.mean(heads))
    md = (out / "table.md").read_text()
    assert "| CE | ce | 2 |" in md and "12.5" in md and "a paper" in md
    assert "npe_la head (NPE code's index groups)" in md and "npe_la many" in md
    stamp = (out / "CE-seed0" / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["reproduce", str(tmp_path / "t.toml"), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(done)") == 4
    assert main(["reproduce", str(tmp_path / "t.toml"), "--out", str(out), "--quiet"]) == 0
    assert (out / "CE-seed0" / "results.json").stat().st_mtime_ns == stamp  # not trained again


@pytest.mark.parametrize("name", sorted(shipped_tables()))
def test_every_shipped_table_plans(name, tmp_path):
    cifar = name.startswith("cifar")
    if not cifar:  # a data folder no row reads is refused, not silently ignored
        with pytest.raises(ValueError, match="^data_dir: no row"):
            plan(load_table(name), tmp_path, {"data_dir": str(tmp_path)})
    runs = plan(load_table(name), tmp_path, {"data_dir": str(tmp_path)} if cifar else None)
    assert runs and len({cfg.out for _, cfg in runs}) == len(runs)
    if name.startswith("cifar"):
        assert all(cfg.lt_generator == "ldam" for _, cfg in runs)


def test_the_cifar_tables_carry_the_published_numbers_as_published():
    t = load_table("cifar100_lt")
    published = {r.name: r.published for r in t.rows}
    assert published["CE"] == 38.3 and published["LDAM-DRW"] == 42.0 and published["LA-loss"] == 44.1
    assert all(r.source for r in t.rows if r.published is not None)


@pytest.mark.parametrize(
    "text, word",
    [
        ("title = 1\n", "no \\[\\[row\\]\\]"),
        (TABLE + '\n[[row]]\nname = "CE"\n', "share a name"),
        (TABLE.replace("published = 12.5", 'published = "x"'), "published"),
        ("bogus = 1\n" + TABLE, "unknown key"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, text, word):
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(InputError, match=word):
        load_table(tmp_path / "t.toml")
