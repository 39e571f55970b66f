"""The PNG figures of a run folder."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from npe_theory.figures import save_figure  # noqa: E402

from .evaluate import REPORT_GROUPS, RULES  # noqa: E402


def plot_run(out, results: dict) -> list[Path]:
    out = Path(out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [_pem_figure(out / "pem_vs_log_counts.png", results), _curves(out / "training_curves.png", metrics),
            _groups(out / "accuracy_by_group.png", results)]


def _pem_figure(path, results) -> Path:
    pem = results["pem"]
    log_n, learned, predicted = (np.array(pem[k]) for k in ("log_counts", "learned", "predicted"))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(log_n, learned, "o", color="tab:red", label="learned: mean eta_c(x) over class c")
    ax.plot(log_n, predicted, "s", mfc="none", color="tab:blue", ms=9, label="closed form at measured ||mu_c||^2")
    ax.plot(log_n, log_n - log_n.mean() + learned.mean(), "k--", lw=1, label="ln N_c + best offset (slope 1)")
    m1, m2 = pem["prior_match"]["vs_log_counts"], pem["prior_match"]["vs_closed_form"]
    ax.set_title(f"PEM vs ln N_c: centered RMSE {m1['centered_rmse']:.3f}, slope {m1['slope'] if m1['slope'] is None else round(m1['slope'], 2)}\n"
                 f"vs closed form: centered RMSE {m2['centered_rmse']:.3f}, raw RMSE {m2['rmse']:.3f}", fontsize=10)
    ax.set_xlabel("ln N_c")
    ax.set_ylabel("PEM output eta")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _curves(path, metrics) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ep = [m["epoch"] + 1 for m in metrics]
    for key in ("loss", "ce", "pem"):
        axes[0].plot(ep, [m[key] for m in metrics], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    ev = [m for m in metrics if "accuracy" in m]
    for rule in RULES:
        axes[1].plot([m["epoch"] + 1 for m in ev], [m["accuracy"][rule] for m in ev], label=rule)
    axes[1].set_title("balanced test accuracy (mean per class)")
    for key, label in (("prior_rmse_vs_log_counts", "vs ln N_c"), ("prior_rmse_vs_closed_form", "vs closed form")):
        axes[2].plot([m["epoch"] + 1 for m in ev], [m[key] for m in ev], label=label)
    axes[2].set_yscale("log")
    axes[2].set_title("PEM centered RMSE")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def _groups(path, results) -> Path:
    groups = [g for g in REPORT_GROUPS if results["accuracy"]["argmax"][g] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(RULES)
    for i, rule in enumerate(RULES):
        vals = [results["accuracy"][rule][g] for g in groups]
        bars = ax.bar(np.arange(len(groups)) + (i - 1) * width, vals, width, label=rule)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("mean per-class accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"accuracy by class group (tau = {results['config']['tau']:g})")
    return save_figure(fig, path, dpi=120)
