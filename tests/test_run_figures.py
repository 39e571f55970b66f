"""Figures say what they show: F11 carries every rule its runs recorded, eta_matrix a sequential map for one-signed values,
and no legend of the run figures sits on the plotted data."""

import json
from importlib.resources import files

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def test_f11_shows_every_rule_of_the_runs(tmp_path, monkeypatch):
    from npe_theory import figures

    runs = json.loads((files("npe_theory") / "runs" / "segmentation_runs.json").read_text())["runs"]
    shown = {}
    real = figures.save_figure

    def keep(fig, path, **kw):
        shown["labels"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return real(fig, path, **kw)

    monkeypatch.setattr(figures, "save_figure", keep)
    figures.fig_segmentation(tmp_path / "F11.png", runs)
    rules = {rule for r in runs if r["method"] == "npe" for rule in r["iou"]}
    names = {
        "argmax": "argmax",
        "posthoc_la": "post-hoc LA",
        "npe_la": "NPE-LA",
        "npe_inverse": "NPE inverse",
        "npe_marginal": "NPE marginal",
    }
    for rule in rules:
        assert any(label.startswith(f"NPE network, {names[rule]}:") for label in shown["labels"]), (
            rule,
            shown["labels"],
        )
    assert any(label.startswith("CE network, argmax:") for label in shown["labels"])


def test_eta_matrix_map_follows_the_sign_of_its_values(tmp_path, monkeypatch):
    from npe_theory import figures

    maps = []
    real = figures.save_figure

    def keep(fig, path, **kw):
        maps.append(fig.axes[0].get_images()[0].get_cmap().name)
        return real(fig, path, **kw)

    monkeypatch.setattr(figures, "save_figure", keep)
    figures.plot_eta_matrix(tmp_path / "a.png", {"eta_matrix": (np.arange(9).reshape(3, 3) + 1.0).tolist()})
    figures.plot_eta_matrix(tmp_path / "b.png", {"eta_matrix": (np.arange(9).reshape(3, 3) - 4.0).tolist()})
    assert maps == ["viridis", "coolwarm"]


def test_run_figure_legends_do_not_cover_data(tmp_path):
    """Every legend of training_curves.png and accuracy_by_group.png lies outside its axes' plotting area."""
    from npe_train.loop.train import train
    from npe_train.run import plots
    from npe_train.run.config import make_config

    res = train(
        make_config(
            dataset="synthetic", imbalance=10, n_max=60, epochs=3, eval_every=2, out=str(tmp_path / "run")
        ),
        progress=False,
    )
    seen = []
    real = plots.save_figure

    def keep(fig, path, **kw):
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is not None:
                box, area = legend.get_window_extent(), ax.get_window_extent()
                seen.append((path.name, not box.overlaps(area)))
        return real(fig, path, **kw)

    plots.save_figure = keep
    try:
        plots.plot_run(tmp_path / "run", res)
    finally:
        plots.save_figure = real
    names = {name for name, _ in seen}
    assert {"training_curves.png", "accuracy_by_group.png"} <= names
    assert all(
        outside for name, outside in seen if name in ("training_curves.png", "accuracy_by_group.png")
    ), seen
    plt.close("all")


def _captured(monkeypatch):
    from npe_train.run import plots

    figs = {}
    real = plots.save_figure

    def keep(fig, path, **kw):
        figs[path.name] = fig
        return real(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figs


def test_training_curves_draw_every_epochs_prior_report(tmp_path, monkeypatch):
    """The prior-match panel has one point per epoch (metrics.jsonl holds them all), not one per evaluation; a run
    evaluated once shows its accuracy as bars, one per rule."""
    from npe_train.loop.train import train
    from npe_train.run.config import make_config
    from npe_train.run.plots import plot_run

    out = tmp_path / "run"
    res = train(
        make_config(dataset="synthetic", imbalance=10, n_max=40, epochs=5, out=str(out)), progress=False
    )
    figs = _captured(monkeypatch)
    plot_run(out, res)
    axes = figs["training_curves.png"].axes
    lines = [ln for ln in axes[2].get_lines() if ln.get_label().startswith("vs_")]
    assert lines and all(len(ln.get_xdata()) == 5 for ln in lines)
    np.testing.assert_allclose(
        lines[0].get_xdata(),
        [json.loads(x)["lambda_s"] for x in (out / "metrics.jsonl").read_text().splitlines()],
    )
    assert len(axes[1].patches) == len(res["accuracy"])  # a bar per rule
    heights = sorted(p.get_height() for p in axes[1].patches)
    assert heights == sorted(v["overall"] for v in res["accuracy"].values())


def test_reliability_leaves_empty_bins_empty(tmp_path, monkeypatch):
    from npe_train.run.plots import _reliability

    figs = _captured(monkeypatch)
    bins = {"count": [0, 3, 0, 2], "accuracy": [None, 1.0, None, 0.5], "confidence": [None, 0.3, None, 0.9]}
    _reliability(tmp_path / "reliability.png", {"calibration": {"argmax": {"ece": 0.1, "bins": bins}}})
    bars = figs["reliability.png"].axes[0].patches
    assert sorted((round(b.get_x(), 6), b.get_height()) for b in bars) == [(0.25, 1.0), (0.75, 0.5)]
    assert "2 empty bins" in figs["reliability.png"].axes[0].get_title()
