"""The proof figures F1-F12 (PNG). ``npe figures [--out DIR]`` regenerates them all.

Each ``fig_*`` function draws one figure into a path; ``make_figures`` draws all.
The mpmath references are used wherever float64 cannot resolve what is plotted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .errors import InputError
from .lambertw import asymptotic_logit_of_log, lambert_w
from .losses import get_loss, loss_names
from .optimum import logistic_bracket, objective, optimal_logit
from .priors import count_profile, predicted_priors, prior_match
from .reference import mp_lambert_w_of_exp, mp_logistic_root_of_log, mp_series
from .references import REFERENCES, table_references

ORDERS = range(5)


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kw):
    """(figure, axes) like ``pyplot.subplots``, on a ``Figure`` of its own: no pyplot state and no backend chosen, so
    drawing these figures never switches a notebook's or an application's matplotlib backend."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def save_figure(fig, path, dpi: int = 130) -> Path:
    """Write ``fig`` as a PNG (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def fig_objective(path) -> Path:
    """F1: J_c(eta) / lam_c = x l(eta) + eta^2 / 2 for several x, minimizers marked, both losses."""
    eta = np.linspace(-1.0, 9.0, 600)
    fig, axes = subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, loss in zip(axes, ("exp", "logistic")):
        for x, color in zip((1.0, 10.0, 100.0, 1e3, 1e4), colormaps["viridis"](np.linspace(0, 0.9, 5))):
            ax.plot(eta, objective(eta, x, 1.0, loss), color=color, label=f"x = N_c/lam_c = {x:g}")
            star = optimal_logit(x, 1.0, loss)
            ax.plot(star, objective(star, x, 1.0, loss), "o", color=color, mec="k")
        ax.set_yscale("log")
        ax.set_title(get_loss(loss).label)
        ax.set_xlabel("PEM logit eta")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("J_c(eta) / lam_c  (log scale)")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(
        "F1  The scalar PEM problem: one strictly convex minimum per count (dots), moving right like ln x"
    )
    return save_figure(fig, path)


def fig_series(path) -> Path:
    """F2: W(x) and the de Bruijn series truncated after L1^-n, n = 0..4; left where they part, right their signed gaps."""
    colors = colormaps["plasma"](np.linspace(0, 0.85, 5))
    fig, axes = subplots(1, 2, figsize=(12, 4.6))
    log_x = np.linspace(1.05, 8.0, 400)
    ax = axes[0]
    ax.plot(log_x, lambert_w(np.exp(log_x)), "k", lw=2.5, label="W(x)")
    for n, color in zip(ORDERS, colors):
        ax.plot(log_x, asymptotic_logit_of_log(log_x, n), "--", color=color, label=f"series to L1^-{n}")
    ax.plot(log_x, log_x, ":", color="gray", label="ln x")
    ax.set_xlabel("ln x   (x = N_c ||mu_c||^2 / lambda)")
    ax.set_ylabel("optimal PEM logit")
    ax.set_ylim(0, 8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("small x: the orders part, W stays below ln x")
    log_x = np.linspace(2.0, 40.0, 400)
    w = lambert_w(np.exp(log_x))
    for n, color in zip(ORDERS, colors):
        axes[1].plot(log_x, asymptotic_logit_of_log(log_x, n) - w, color=color, label=f"series_{n} - W")
    axes[1].set_yscale("symlog", linthresh=1e-4)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("ln x")
    axes[1].set_ylabel("signed error (symlog)")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    axes[1].set_title("each order closes the gap faster (F3 shows the rates)")
    fig.suptitle("F2  W(x) and its asymptotic series (L1 = ln x, L2 = ln ln x)")
    return save_figure(fig, path)


def fig_series_error(path) -> Path:
    """F3: |W - S_n| on log-log axes with the predicted (L2/L1)^(n+1) rates (mpmath at 50 digits)."""
    l1 = np.logspace(np.log10(3.0), 6, 60)
    fig, ax = subplots(figsize=(7.5, 4.8))
    for n, color in zip(ORDERS, colormaps["plasma"](np.linspace(0, 0.85, 5))):
        err = [float(abs(mp_lambert_w_of_exp(v) - mp_series(v, n))) for v in l1]
        rate = (np.log(l1) / l1) ** (n + 1)
        ax.loglog(l1, err, "-", color=color, lw=2, label=f"|W - series_{n}|")
        ax.loglog(l1, rate, ":", color=color, lw=1.2, label=f"(L2/L1)^{n + 1}")
    ax.set_xlabel("L1 = ln x")
    ax.set_ylabel("absolute error")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("F3  Truncation error follows the predicted rates (dotted)")
    return save_figure(fig, path)


def fig_logistic(path) -> Path:
    """F4: logistic minimizer against W(x) with the bracket band; the gap W - eta_L against ln x / x."""
    x = np.logspace(-3, 4, 300)
    lo, hi = logistic_bracket(x)
    eta_l = optimal_logit(x, 1.0, "logistic")
    fig, axes = subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    ax.fill_between(x, lo, hi, color="tab:orange", alpha=0.25, label="bracket  W(x - W(x)) .. W(x)")
    ax.plot(x, hi, color="tab:orange", lw=1.5, label="W(x)  (exponential tail)")
    ax.plot(x, eta_l, "k", lw=1.8, label="eta_L  (logistic root)")
    ax.set_xscale("log")
    ax.set_xlabel("x")
    ax.set_ylabel("optimal PEM logit")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("logistic optimum inside its bracket")
    log_x = np.linspace(1.0, 40.0, 80)
    gap = [float(mp_lambert_w_of_exp(L) - mp_logistic_root_of_log(L)) for L in log_x]
    xs = np.exp(log_x)
    axes[1].loglog(xs, gap, "k", lw=2, label="W(x) - eta_L")
    axes[1].loglog(xs, log_x / xs, "--", color="tab:red", label="ln x / x")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel("gap")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3, which="both")
    axes[1].set_title("the gap is O(ln x / x)  (mpmath, 50 digits)")
    fig.suptitle("F4  The exponential-tail optimum is the saturation limit of the logistic loss")
    return save_figure(fig, path)


F5_SETUPS = (("CIFAR-10-LT", 10, 5000, 2e-4), ("CIFAR-100-LT", 100, 500, 1e-3))
F5_NORM_SQ = 100.0


def fig_predicted_priors(path) -> Path:
    """F5: predicted PEM outputs (logistic root, bias decayed, ||mu||^2 = 100) against ln N_c, centered."""
    fig, axes = subplots(2, 2, figsize=(11.5, 8.5))
    for row, (name, classes, n_max, lam) in enumerate(F5_SETUPS):
        for col, reduction in enumerate(("sum", "mean")):
            ax = axes[row, col]
            lo_all, hi_all = np.inf, -np.inf
            for rho, color in zip((10, 50, 100, 200), colormaps["cividis"](np.linspace(0, 0.85, 4))):
                counts = count_profile("exp", classes, n_max, rho)
                eta = predicted_priors(counts, lam, F5_NORM_SQ, reduction, "logistic", bias=True)
                m = prior_match(eta, counts)
                log_n = np.log(counts)
                ax.plot(
                    log_n - log_n.mean(),
                    eta - eta.mean(),
                    "o-",
                    ms=3,
                    color=color,
                    label=f"rho {rho}: slope {m.slope:.2f}, max dev {m.max_deviation:.2f}",
                )
                lo_all, hi_all = (
                    min(lo_all, (log_n - log_n.mean()).min()),
                    max(hi_all, (log_n - log_n.mean()).max()),
                )
            ax.plot([lo_all, hi_all], [lo_all, hi_all], "k--", lw=1, label="slope 1 (exact log-prior)")
            ax.set_title(
                f"{name}, lambda = {lam:g}, loss {'summed' if reduction == 'sum' else 'batch-averaged'}"
            )
            ax.set_xlabel("ln N_c  (centered)")
            ax.set_ylabel("predicted PEM output  (centered)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"F5  What 'log-prior up to a constant' looks like at real scales (||mu_c||^2 = {F5_NORM_SQ:g}, PEM bias decayed)"
    )
    fig.tight_layout()
    return save_figure(fig, path)


def fig_ufm(path, result=None) -> Path:
    """F6: the unconstrained feature model run (figures/README.md): learned against predicted PEM "
    "outputs; NC1 and mismatch per iteration."""
    from .ufm import simulate_ufm

    if result is None:
        result = simulate_ufm(count_profile("exp", 10, 500, 100), loss="logistic", nonlinearity="relu")
    log_n = np.log(result.counts)
    fig, axes = subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    ax.plot(
        log_n,
        result.eta_predicted,
        "s",
        ms=10,
        mfc="none",
        mec="tab:blue",
        label="predicted (logistic root, measured ||mu_c||^2)",
    )
    ax.plot(
        log_n, result.eta_learned, "x", ms=8, color="tab:red", label="learned  mean eta_c(h) over class c"
    )
    fit = np.polyfit(log_n, result.eta_learned, 1)
    ax.plot(log_n, np.polyval(fit, log_n), ":", color="gray", label=f"least squares: slope {fit[0]:.2f}")
    ax.plot(
        log_n, log_n - log_n.mean() + result.eta_learned.mean(), "k--", lw=1, label="slope 1 through the mean"
    )
    ax.set_xlabel("ln N_c")
    ax.set_ylabel("PEM output")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"learned vs predicted: max |diff| = {result.mismatch:.1e}")
    it = [h["iteration"] for h in result.history]
    axes[1].semilogy(it, [h["nc1"] for h in result.history], label="NC1 = tr(Sigma_W Sigma_B^+)/C")
    axes[1].semilogy(it, [h["mismatch"] for h in result.history], label="max |learned - predicted|")
    axes[1].semilogy(it, [h["grad_norm"] for h in result.history], alpha=0.6, label="projected gradient norm")
    axes[1].set_xlabel("L-BFGS-B iteration")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3, which="both")
    axes[1].set_title("collapse and agreement over the optimization")
    cfg = result.config
    fig.suptitle(
        f"F6  UFM ({cfg['nonlinearity']} features, {cfg['loss']} PEM loss, weight decay {cfg['lam_pem']:g}): "
        f"{len(result.counts)} classes, imbalance {result.counts.max() / result.counts.min():g}, NC1 = {result.nc1:.1e}"
    )
    return save_figure(fig, path)


def plot_prior_report(path, pem: dict) -> Path:
    """The learned per-class PEM outputs against ln N_c, with every reference of the prior report."""
    log_n, learned = np.array(pem["log_counts"]), np.array(pem["learned"])
    fig, ax = subplots(figsize=(6.8, 4.6))
    ax.plot(log_n, learned, "o", color="tab:red", label="learned: mean eta_c(x) over class c")
    if pem.get("learned_eval") is not None:
        ax.plot(log_n, pem["learned_eval"], ".", color="tab:orange", label="learned, eval-mode features")
    drawn = [
        ref
        for key, ref in REFERENCES.items()
        if ref.of == "learned" and ref.field != "log_counts" and pem.get(ref.field) is not None
    ]
    for ref in drawn:
        ax.plot(log_n, pem[ref.field], ref.marker, mfc="none", color=ref.color, ms=8, label=ref.label)
    ax.plot(log_n, log_n - log_n.mean() + learned.mean(), "k--", lw=1, label="ln N_c + best offset (slope 1)")
    m = pem["prior_match"]
    rmse = ", ".join(
        f"{ref.short} {m[key]['centered_rmse']:.3f}"
        for key, ref in REFERENCES.items()
        if ref.of == "learned" and key in m
    )
    ax.set_title(
        f"PEM regime: {pem['regime']} (lambda*s = {pem['lambda_s']:.3g})\ncentered RMSE (nats) vs {rmse}",
        fontsize=9,
    )
    ax.set_xlabel("ln N_c")
    ax.set_ylabel("PEM output eta")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def plot_eta_matrix(path, pem: dict) -> Path | None:
    """E[eta(x) | y = c'] as a C x C image: the diagonal is the learned prior, the rest the feature conditioning.
    None (no file) when the report kept no matrix (more classes than ``report.MAX_ETA_MATRIX``)."""
    if pem.get("eta_matrix") is None:
        return None
    mat = np.array(pem["eta_matrix"])
    fig, ax = subplots(figsize=(5.2, 4.4))
    if mat.min() < 0 < mat.max():  # both signs: a diverging map centred on zero
        im = ax.imshow(mat, cmap="coolwarm", vmin=-np.abs(mat).max(), vmax=np.abs(mat).max())
    else:  # one sign (the usual case): a sequential map over the values' own range
        im = ax.imshow(mat, cmap="viridis", vmin=mat.min(), vmax=mat.max())
    fig.colorbar(im, ax=ax, label="mean PEM output")
    ax.set_xlabel("PEM output for class c")
    ax.set_ylabel("true class c'")
    ax.set_title("E[eta_c(x) | y = c']", fontsize=10)
    return save_figure(fig, path, dpi=110)


COMMITTED = "runs"  # package data of npe_theory: the committed run summaries behind F7/F8, F10 and F11


def run_summaries(path, name: str, runs=None) -> list[dict]:
    """The run summaries a figure is drawn from: given, or the file ``name`` beside the figure, or the committed one."""
    import json

    if runs is not None:
        return runs
    from importlib.resources import files

    source = Path(path).with_name(name)
    return json.loads((source if source.is_file() else files("npe_theory") / COMMITTED / name).read_text())[
        "runs"
    ]


SET_MARKERS = {"synthetic": "o", "digits": "s", "mnist1d": "^", "digits28": "D", "digits100": "v"}


def _regime_rows(path, runs=None) -> list[dict]:
    """The regime runs (``regime_runs.json``), by lambda*s; runs from before the set was recorded are MNIST-1D."""
    rows = run_summaries(path, "regime_runs.json", runs)
    return sorted(({"dataset": "mnist1d", **r} for r in rows), key=lambda r: r["lambda_s"])


def _by_set(rows):
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    return [(ds, SET_MARKERS.get(ds, "x"), [r for r in rows if r["dataset"] == ds]) for ds in sets]


def fig_regime_gap(path, runs=None) -> Path:
    """F7: centered RMSE of the learned PEM against each reference, over lambda*s: one panel per reference, one marker per
    data set (runs of varied weight decay and length)."""
    from .report import EQUILIBRIUM_LAMBDA_S

    rows = _regime_rows(path, runs)
    keys = [k for k in table_references() if any(r.get(f"rmse_{k}") is not None for r in rows)]
    fig, axes = subplots(1, len(keys), figsize=(3.4 * len(keys), 4.2), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        color, label = REFERENCES.get(key).color, REFERENCES.get(key).label
        for ds, marker, sel in _by_set(rows):
            ax.plot(
                [r["lambda_s"] for r in sel],
                [max(r[f"rmse_{key}"], 1e-6) for r in sel],
                marker,
                color=color,
                mfc="none",
                ms=7,
                label=ds,
            )
        ax.axvline(EQUILIBRIUM_LAMBDA_S, color="k", ls=":", lw=1)
        ax.axhline(0.1, color="tab:red", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"vs {label}", fontsize=9)
        ax.set_xlabel("lambda*s")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("centered RMSE of learned PEM outputs (nats)")
    axes[0][0].legend(fontsize=7, loc="lower left", title="data set (marker)", title_fontsize=7)
    fig.suptitle(
        "F7  The gap to Proposition 1 closes once the PEM has felt enough weight decay (dotted: threshold "
        f"{EQUILIBRIUM_LAMBDA_S:g}; dashed: 0.1 nats)\none point per run, imbalance 100, each set's default network; "
        "the replay is exact (floored at 1e-6)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def fig_regime_slope(path, runs=None) -> Path:
    """F8: the slope of the learned outputs on ln N_c over lambda*s, with the exact equilibrium's slope at the same runs,
    one marker per data set."""
    from .report import EQUILIBRIUM_LAMBDA_S

    rows = _regime_rows(path, runs)
    fig, ax = subplots(figsize=(7.5, 4.6))
    for ds, marker, sel in _by_set(rows):
        lam_s = [r["lambda_s"] for r in sel]
        ax.plot(
            lam_s,
            [r["slope_learned"] for r in sel],
            marker,
            color="tab:red",
            ms=7,
            label=f"{ds}: learned PEM",
        )
        ax.plot(
            lam_s,
            [r["slope_equilibrium"] for r in sel],
            marker,
            mfc="none",
            ms=9,
            color="tab:green",
            label=f"{ds}: exact equilibrium",
        )
    ax.axhline(1.0, color="k", lw=0.8, label="slope 1 (the log-prior)")
    ax.axvline(EQUILIBRIUM_LAMBDA_S, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("lambda*s")
    ax.set_ylabel("slope of PEM outputs on ln N_c")
    ax.set_title(
        "F8  Transient: steeper than the log-prior; equilibrium: the tempered slope of the exact optimum\n"
        "(filled: learned; open: equilibrium on the same features; marker: data set)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    return save_figure(fig, path)


def fig_adaptation(path, runs=None) -> Path:
    """F10: after a shift of the class distribution, the learned PEM's gap to its new equilibrium (measured) and the
    finite-time model's gap to its new limit (predicted), per scenario; below, NPE-LA against post-hoc LA with the
    stale and the true new counts."""
    runs = run_summaries(path, "adaptation_runs.json", runs)
    names = list(dict.fromkeys(r["name"] for r in runs))
    fig, axes = subplots(2, len(names), figsize=(4.2 * len(names), 7.2), squeeze=False, sharex=True)
    for j, name in enumerate(names):
        group = [r for r in runs if r["name"] == name]
        ax = axes[0, j]
        for k, r in enumerate(group):
            ep = np.array(r["series"]["epoch"]) + 1
            ax.semilogy(
                ep,
                r["series"]["gap_measured"],
                color="tab:red",
                alpha=0.8,
                label="measured: learned vs equilibrium" if k == 0 else None,
            )
            ax.semilogy(
                ep,
                r["series"]["gap_predicted"],
                color="tab:purple",
                ls="--",
                alpha=0.8,
                label="predicted: finite-time model vs its limit" if k == 0 else None,
            )
        lags = ", ".join(f"{_lag_text(r['lag_measured'])}/{_lag_text(r['lag_predicted'])}" for r in group)
        ax.axhline(0.1, color="k", ls=":", lw=0.8)
        ax.axvline(group[0]["epoch"] + 0.5, color="gray", lw=0.8)
        ax.set_title(
            f"{name}\n(wd {group[0]['weight_decay']:g}, shift {group[0]['shift']}); lag meas./pred.: {lags}",
            fontsize=8,
        )
        ax.grid(alpha=0.3, which="both")
        if j == 0:
            ax.set_ylabel("centered RMSE to the\nnew equilibrium (nats)", fontsize=8)
            ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
        ax = axes[1, j]
        for rule, color, label in (
            ("npe_la", "tab:green", "NPE-LA (learned prior)"),
            ("posthoc_la", "tab:blue", "post-hoc LA, true new counts"),
            ("posthoc_la_stale", "tab:orange", "post-hoc LA, stale counts"),
        ):
            ep = np.array(group[0]["series"]["epoch"]) + 1
            acc = np.array(
                [[np.nan if v is None else v for v in r["series"]["accuracy"][rule]] for r in group],
                dtype=float,
            )
            ax.plot(ep, 100 * acc.mean(0), color=color, label=label)
        ax.axvline(group[0]["epoch"] + 0.5, color="gray", lw=0.8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.set_ylabel(f"balanced test accuracy (%),\nmean of {len(group)} seeds", fontsize=8)
            ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
    fig.suptitle(
        "F10  Tracking a shifted class distribution (MNIST-1D, 1D CNN): measured against the finite-time theory; "
        "dotted: 0.1 nats",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def fig_segmentation(path, runs=None) -> Path:
    """F11: per-class IoU of the CE network (argmax) against the NPE network under every rule the runs recorded
    (argmax, post-hoc LA, NPE-LA, NPE inverse), classes by training pixel frequency, mean and spread over seeds."""
    runs = run_summaries(path, "segmentation_runs.json", runs)
    counts = np.mean([r["counts"] for r in runs], axis=0)
    order = np.argsort(-counts, kind="stable")
    names = runs[0].get("class_names") or [str(c) for c in range(len(counts))]
    rule_names = {
        "argmax": "argmax",
        "posthoc_la": "post-hoc LA",
        "npe_la": "NPE-LA",
        "npe_inverse": "NPE inverse",
        "npe_marginal": "NPE marginal",
    }
    series = [("ce", "argmax", "CE network, argmax")] + [
        ("npe", rule, f"NPE network, {name}")
        for rule, name in rule_names.items()
        if any(r["method"] == "npe" and rule in r["iou"] for r in runs)
    ]
    fig, ax = subplots(figsize=(11, 4.6))
    width = 0.85 / len(series)
    colors = colormaps["tab10"]
    for i, (method, rule, label) in enumerate(series):
        group = [r for r in runs if r["method"] == method and rule in r["iou"]]
        if not group:
            continue
        iou = np.array([[np.nan if v is None else v for v in r["iou"][rule]] for r in group], dtype=float)[
            :, order
        ]
        miou = np.mean([r["miou"][rule] for r in group])
        ax.bar(
            np.arange(len(order)) + (i - (len(series) - 1) / 2) * width,
            np.nanmean(iou, 0),
            width,
            yerr=np.nanstd(iou, 0),
            color=colors(i),
            capsize=1.5,
            label=f"{label}: mIoU {100 * miou:.1f}% ({len(group)} seeds)",
        )
    ax.set_xticks(np.arange(len(order)), [f"{names[c]}\n{int(counts[c]):,} px" for c in order], fontsize=7)
    ax.set_ylabel("IoU (mean over seeds, bar: spread)")
    ax.set_xlabel("class, most frequent first (training pixels)")
    ax.set_ylim(0, 1.3)  # headroom: the legend sits above the bars, not on them
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title(
        "F11  Per-class IoU on long-tailed shapes (FCN, alpha 0.1): CE against every rule of the NPE network",
        fontsize=9,
    )
    return save_figure(fig, path)


def _lag_text(lag) -> str:
    return "-" if lag is None else str(lag)


F9_IMBALANCES = (10.0, 100.0, 200.0)


def geometry_runs(classes: int = 10, n_max: int = 200, imbalances=F9_IMBALANCES) -> dict:
    """The UFM runs of F9: {(imbalance, classifier bias): UFMResult}, ReLU features, logistic PEM loss."""
    from .ufm import simulate_ufm

    return {
        (imb, cb): simulate_ufm(count_profile("exp", classes, n_max, imb), tol=1e-9, classifier_bias=cb)
        for imb in imbalances
        for cb in (False, True)
    }


def fig_geometry(path, runs: dict | None = None) -> Path:
    """F9: the geometry of docs/theory.md, section 6, in the UFM: classifier scales a_c and class-mean "
    "lengths against N_c; alignment cosines."""
    runs = geometry_runs() if runs is None else runs
    fig, axes = subplots(1, 3, figsize=(15, 4.4))
    colors = dict(zip(sorted({k[0] for k in runs}), ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for (imb, cb), r in runs.items():
        g, n = r.geometry, r.counts
        style = dict(color=colors[imb], ls="-" if not cb else ":", marker="o" if not cb else "x", ms=4)
        bias = "no bias" if not cb else "bias"
        axes[0].loglog(
            n, g["scale"], **style, label=f"imbalance {imb:g}, {bias}: a_c ~ N_c^{g['scale_exponent']:.2f}"
        )
        axes[1].loglog(
            n, r.mean_norm_sq, **style, label=f"imbalance {imb:g}, {bias}: N_c^{g['norm_sq_exponent']:.2f}"
        )
        if cb:
            continue
        axes[2].semilogx(
            n,
            1 - np.array(g["cosine"]) + 1e-16,
            color=colors[imb],
            marker="o",
            ms=4,
            label=f"imbalance {imb:g}: scaled, then centered",
        )
        axes[2].semilogx(
            n,
            1 - np.array(g["nc3_cosine"]),
            color=colors[imb],
            marker="s",
            ms=4,
            ls="--",
            label=f"imbalance {imb:g}: centered (NC3)",
        )
    axes[0].set_title("classifier scale a_c in w_c = a_c mu_c - mean_j a_j mu_j", fontsize=9)
    axes[1].set_title("class-mean length ||mu_c||^2 (orthogonal means)", fontsize=9)
    axes[2].set_yscale("log")
    axes[2].set_title("1 - cos(w_c, reading), no classifier bias", fontsize=9)
    for ax in axes:
        ax.set_xlabel("N_c")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle(
        "F9  Seed 003 in the UFM: rows are the scaled-then-centered class means, scales ~ sqrt(N_c); "
        "the balanced-data reading (NC3) fails under imbalance",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def fig_loss_tails(path) -> Path:
    """F12: what the tail of a one-way loss does to the learned prior (docs/theory.md, section 8). Left: each registered
    loss. Middle: the optimum against ln N_c for CIFAR-100-LT's counts (summed loss, ||mu||^2 / lam = 1e-3), centered,
    beside ln N_c. Right: d eta* / d ln x, the share of a change in ln N_c the PEM passes on (W / (1 + W) -> 1 for an
    exponential tail, 2x / (2x + 1)^2 -> 0 for the squared hinge)."""
    names = loss_names()
    colors = colormaps["tab10"]
    fig, axes = subplots(1, 3, figsize=(15, 4.3))
    eta = np.linspace(-1.0, 4.0, 400)
    counts = count_profile("exp", 100, 500, 100)
    log_n = np.log(counts)
    log_x = np.linspace(-6.0, 14.0, 400)
    h = 1e-4
    axes[1].plot(log_n, log_n - log_n.mean(), "k--", lw=1, label="ln N_c (slope 1)")
    for i, name in enumerate(names):
        loss, color = get_loss(name), colors(i)
        axes[0].plot(eta, loss.value(eta), color=color, label=loss.label)
        pred = predicted_priors(counts, 1e-3, 1.0, "sum", name)
        slope = prior_match(pred, counts).slope
        axes[1].plot(
            log_n, pred - pred.mean(), "o", ms=3, color=color, label=f"{name}: slope {slope:.2f} on ln N_c"
        )
        d = (optimal_logit(np.exp(log_x + h), 1.0, name) - optimal_logit(np.exp(log_x - h), 1.0, name)) / (
            2 * h
        )
        axes[2].plot(log_x, d, color=color, label=f"{name} ({loss.tail})")
    axes[0].set_ylim(-0.1, 4.0)
    axes[0].set_xlabel("PEM output eta")
    axes[0].set_title("the losses l(eta)", fontsize=10)
    axes[1].set_xlabel("ln N_c (CIFAR-100-LT, imbalance 100)")
    axes[1].set_ylabel("optimal eta_c, centered")
    axes[1].set_title("the prior each loss leads a PEM to", fontsize=10)
    axes[2].set_xlabel("ln x (saturation variable)")
    axes[2].set_ylabel("d eta* / d ln x")
    axes[2].set_title("how much of ln N_c reaches the PEM", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "F12  An exponential tail gives ln N_c up to a constant; a loss of finite support saturates and learns no "
        "log-prior",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)


FIGURES = {
    "F1_objective.png": fig_objective,
    "F2_series.png": fig_series,
    "F3_series_error.png": fig_series_error,
    "F4_logistic.png": fig_logistic,
    "F5_predicted_priors.png": fig_predicted_priors,
    "F6_ufm.png": fig_ufm,
    "F7_regime_gap.png": fig_regime_gap,
    "F8_regime_slope.png": fig_regime_slope,
    "F9_geometry.png": fig_geometry,
    "F10_adaptation.png": fig_adaptation,
    "F11_segmentation.png": fig_segmentation,
    "F12_loss_tails.png": fig_loss_tails,
}


def make_figures(out_dir="figures", progress: bool = False, only=None) -> list[Path]:
    """Draw the figures into ``out_dir``; ``only``: their labels ("F1" ... "F12"), default all."""
    from tqdm.auto import tqdm

    chosen = FIGURES
    if only is not None:
        labels = {name.split("_")[0]: name for name in FIGURES}
        unknown = sorted(set(only) - set(labels))
        if unknown:
            raise InputError(f"only: no figure {', '.join(unknown)} (there are {', '.join(labels)})")
        chosen = {labels[k]: FIGURES[labels[k]] for k in labels if k in set(only)}
    out = Path(out_dir)
    return [draw(out / name) for name, draw in tqdm(chosen.items(), desc="figures", disable=not progress)]
