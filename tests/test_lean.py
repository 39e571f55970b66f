"""A lean run (``--lean``, docs/report.md "A lean run") trains the same network and reports it once, at the end.

- the network, its PEM and the test accuracy equal those of the full run with the same seed (the replay, the per-epoch
  reports and the forecasts draw nothing and change no step);
- what it leaves out is left out: no per-epoch report lines, no replayed reference, no forecasts, no figures; and
  ``npe plot`` draws the figures afterwards from the run folder alone;
- forecast shares given to a lean run are refused, not ignored.
"""

from __future__ import annotations

import json

import pytest

import npe_train.loop.train as train_mod
from npe.cli import main
from npe_train.run.config import make_config

SETTINGS = dict(dataset="synthetic", imbalance=20, epochs=4, batch_size=64, n_max=150, seed=3, report_every=1)


def _lines(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_lean_run_trains_the_same_network_and_reports_once(tmp_path):
    full = train_mod.train(make_config(out=str(tmp_path / "full"), **SETTINGS), progress=False)
    lean_settings = {**SETTINGS, "report_every": None}
    lean = train_mod.train(
        make_config(out=str(tmp_path / "lean"), lean=True, **lean_settings), progress=False
    )
    assert lean["pem"]["learned"] == full["pem"]["learned"]
    assert lean["accuracy"] == full["accuracy"]
    assert [x["loss"] for x in _lines(tmp_path / "lean")] == [x["loss"] for x in _lines(tmp_path / "full")]

    assert lean["report_every"] == SETTINGS["epochs"]
    reported = [x["epoch"] for x in _lines(tmp_path / "lean") if "regime" in x]
    assert reported == [SETTINGS["epochs"] - 1]  # the evaluation at the end only
    assert sum("regime" in x for x in _lines(tmp_path / "full")) == SETTINGS["epochs"]
    assert not any("forecast" in x for x in _lines(tmp_path / "lean"))
    assert any("forecast" in x for x in _lines(tmp_path / "full"))
    assert lean["pem"].get("forecast") is None
    assert full["pem"]["finite_time"] is not None and lean["pem"]["finite_time"] != full["pem"]["finite_time"]
    assert not list((tmp_path / "lean").glob("*.png"))
    drawn = sorted(p.name for p in (tmp_path / "full").glob("*.png"))
    assert drawn

    assert main(["plot", str(tmp_path / "lean")]) == 0
    assert sorted(p.name for p in (tmp_path / "lean").glob("*.png")) == drawn


def test_npe_plot_without_a_finished_run_says_so_in_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["plot", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.json" in err[0]


@pytest.mark.parametrize("shares", [[0.5], [0.2, 0.4]])
def test_forecasts_asked_of_a_lean_run_are_refused(shares):
    with pytest.raises(ValueError, match="forecast_at"):
        make_config(dataset="synthetic", lean=True, forecast_at=shares).resolved()
    assert make_config(dataset="synthetic", lean=True, forecast_at=[]).resolved().lean
