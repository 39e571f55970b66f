"""The PNG figures every run folder gets: prior report, eta matrix, training curves, accuracy by group, reliability, IoU.
Imports: `npe_theory.figures`, `tasks/rules.py` and `results.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npe_theory.figures import plot_eta_matrix, plot_prior_report, save_figure, subplots
from npe_theory.references import table_references
from npe_theory.report import EQUILIBRIUM_LAMBDA_S
from npe_theory.runfiles import read_metrics_file

from ..tasks.rules import REPORT_GROUPS, RULE_NAMES, RULES
from .results import read_results

RMSE_FLOOR = 1e-3  # the replay matches to 1e-7; drawn at this floor so the other curves keep the scale


def plot_run(out, results: dict | None = None) -> list[Path]:
    """The PNG figures of a run folder, from ``results`` or from its results.json (read by ``read_results``)."""
    out = Path(out)
    if results is None:
        results = read_results(out).raw
    metrics = read_metrics_file(out / "metrics.jsonl", "RUN_DIR")
    made = [
        plot_prior_report(out / "pem_vs_log_counts.png", results["pem"]),
        plot_eta_matrix(out / "eta_matrix.png", results["pem"]),
        _curves(out / "training_curves.png", metrics),
        _groups(out / "accuracy_by_group.png", results),
        *([_reliability(out / "reliability.png", results)] if "calibration" in results else []),
        *([plot_iou(out / "iou_by_frequency.png", results)] if "segmentation" in results else []),
    ]
    return [p for p in made if p is not None]  # the eta matrix is drawn up to MAX_ETA_MATRIX classes


def _reliability(path, results) -> Path:
    """Reliability diagram per rule: accuracy against mean confidence in each of the 15 confidence bins."""
    rules = list(results["calibration"])
    fig, axes = subplots(1, len(rules), figsize=(3.4 * len(rules), 3.4), sharey=True)
    for ax, rule in zip(np.atleast_1d(axes), rules):
        cal = results["calibration"][rule]
        bins = cal["bins"]
        edges = np.linspace(0, 1, len(bins["count"]) + 1)
        # an empty bin has no accuracy: no bar (an accuracy of 0 would read as "always wrong")
        acc = np.array([np.nan if a is None else a for a in bins["accuracy"]])
        full = ~np.isnan(acc)
        ax.bar(
            edges[:-1][full],
            acc[full],
            width=np.diff(edges)[full],
            align="edge",
            edgecolor="k",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_title(f"{rule}: ECE {100 * cal['ece']:.1f}% ({int((~full).sum())} empty bins)", fontsize=9)
        ax.set_xlabel("top-1 confidence")
    np.atleast_1d(axes)[0].set_ylabel("accuracy in bin")
    return save_figure(fig, path, dpi=110)


def _curves(path, metrics) -> Path:
    fig, axes = subplots(1, 3, figsize=(15, 4))
    ep = [m["epoch"] + 1 for m in metrics]
    for key in ("loss", "ce", "pem"):
        axes[0].plot(ep, [m[key] for m in metrics], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    ev = [m for m in metrics if "accuracy" in m]
    rules = [r for r in RULES if ev and r in ev[0]["accuracy"]]
    if len(ev) > 1:
        for rule in rules:
            axes[1].plot(
                [m["epoch"] + 1 for m in ev], [m["accuracy"][rule] for m in ev], marker="o", ms=3, label=rule
            )
        axes[1].set_title("balanced test accuracy (mean per class)")
        axes[1].set_xlabel("epoch")
    elif ev:  # one evaluation: a bar per rule says more than a column of dots
        vals = [ev[0]["accuracy"][r] for r in rules]
        axes[1].bar(range(len(rules)), vals, color=[f"C{i}" for i in range(len(rules))])
        axes[1].set_xticks(
            range(len(rules)), [RULE_NAMES[r] for r in rules], rotation=30, ha="right", fontsize=7
        )
        axes[1].set_ylim(max(0.0, min(vals) - 0.1), min(1.0, max(vals) + 0.05))
        axes[1].set_title(
            f"balanced test accuracy at epoch {ev[0]['epoch'] + 1}, the only evaluation\n"
            "(--eval-every N for a curve)",
            fontsize=10,
        )
    # the prior report is in every epoch's line (from the epoch's own steps), not only at evaluations
    for key in table_references():
        got = [m for m in metrics if m.get(f"prior_rmse_{key}") is not None]
        if got:
            axes[2].plot(
                [m["lambda_s"] for m in got],
                [max(m[f"prior_rmse_{key}"], RMSE_FLOOR) for m in got],
                marker="o",
                ms=2,
                label=key,
            )
    axes[2].set_yscale("log")
    axes[2].axvline(EQUILIBRIUM_LAMBDA_S, color="k", ls=":", lw=1, label="equilibrium threshold")
    axes[2].set_title(
        f"PEM centered RMSE (nats) against lambda*s, each epoch (floor {RMSE_FLOOR:g})", fontsize=10
    )
    axes[2].set_xlabel("lambda*s (weight decay felt)")
    axes[0].set_xlabel("epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    # legends beside the panels, not over the curves
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _groups(path, results) -> Path:
    groups = [g for g in REPORT_GROUPS if results["accuracy"]["argmax"][g] is not None]
    rules = [r for r in RULES if r in results["accuracy"]]
    fig, ax = subplots(figsize=(9, 4))
    width = 0.8 / len(rules)
    for i, rule in enumerate(rules):
        vals = [results["accuracy"][rule][g] for g in groups]
        bars = ax.bar(np.arange(len(groups)) + (i - (len(rules) - 1) / 2) * width, vals, width, label=rule)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("mean per-class accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )  # beside the bars, not on them
    ax.set_title(f"accuracy by class group (tau = {results['config']['tau']:g})")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_iou(path, results: dict) -> Path:
    """Per-class IoU of every rule, classes ordered by training pixel frequency (most frequent first)."""
    seg, counts = results["segmentation"], np.asarray(results["counts"])
    order = np.argsort(-counts, kind="stable")
    names = results.get("class_names") or [str(c) for c in range(len(counts))]
    fig, ax = subplots(figsize=(max(7.0, 0.5 * len(counts)), 4.2))
    width = 0.8 / len(seg)
    for i, (rule, s) in enumerate(seg.items()):
        iou = [np.nan if s["iou"][c] is None else s["iou"][c] for c in order]
        ax.bar(
            np.arange(len(order)) + (i - (len(seg) - 1) / 2) * width,
            iou,
            width,
            label=f"{rule}: mIoU {s['miou']:.3f}",
        )
    ax.set_xticks(
        np.arange(len(order)),
        [f"{names[c]}\n{counts[c]:,}" for c in order],
        fontsize=6,
        rotation=45 if len(order) > 12 else 0,
    )
    ax.set_ylabel("IoU")
    ax.set_xlabel("class (training pixels), most frequent first")
    ax.legend(fontsize=7)
    ax.set_title("per-class IoU by rule", fontsize=9)
    return save_figure(fig, path, dpi=120)
