"""The theory commands of ``npe``: ``check``, ``priors``, ``figures``, ``ufm``.

``npe.cli`` mounts them with ``register``; they need only the base install (no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .io import check_writable, write_csv, write_json
from .losses import loss_names


def cmd_check(args) -> int:
    from .checks import format_table, run_checks

    if args.json is not None:
        check_writable("--json", args.json)
    rows = run_checks(progress=not args.quiet)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.json is not None:
        write_json(args.json, [r.as_dict() for r in rows], indent=2)
    return 1 if failed else 0


#: Proposition 1's own setting (the default of ``npe priors``): exponential tail, summed loss, no bias; ``--like-train``
#: takes ``priors.OFFICIAL_CODE``, which is also how ``npe train`` trains a PEM
PLAIN = {"loss": "exp", "reduction": "sum", "bias": False, "weight": 1.0}


def _from_run(path) -> dict:
    """counts, weight decay, alpha, loss, per-class norms and learned outputs of a finished run's results.json, read
    through the shared checks of ``npe_theory.runfiles``."""
    from .errors import InputError
    from .runfiles import read_results_file

    folder = Path(path)
    file = folder / "results.json" if folder.is_dir() else folder
    raw = read_results_file(file, "--from")
    cfg, pem = raw["config"], raw["pem"]
    for key in ("mean_norm_sq", "learned"):
        if pem.get(key) is None:
            raise InputError(
                f"--from: {file} has no pem.{key} (a run of npe train with a linear PEM writes it)"
            )
    for key in ("pem_loss", "alpha"):
        if cfg.get(key) is None:
            raise InputError(f"--from: {file} has no config.{key} (not a finished run of npe train)")
    if cfg.get("pem_weight_decay") is None and cfg.get("weight_decay") is None:
        raise InputError(f"--from: {file} has no config.pem_weight_decay (not a finished run of npe train)")
    # the PEM's own decay when the run had one (a zero there is refused by the check, never replaced)
    lam = cfg["pem_weight_decay"] if cfg.get("pem_weight_decay") is not None else cfg["weight_decay"]
    return {
        "counts": np.asarray(raw["counts"], dtype=float),
        "lam": float(lam),
        "weight": float(cfg["alpha"]),
        "loss": cfg["pem_loss"],
        "norm_sq": np.asarray(pem["mean_norm_sq"], dtype=float),
        "learned": np.asarray(pem["learned"], dtype=float),
    }


def _as_trained(opts: dict) -> bool:
    """The trainer's loss, reduction and bias (its weight is the run's alpha, any value)."""
    from .priors import OFFICIAL_CODE

    return all(opts[k] == v for k, v in OFFICIAL_CODE.items() if k != "weight")


def cmd_priors(args) -> int:
    from .priors import count_profile, predicted_priors, prior_match, saturation

    if args.csv is not None:
        check_writable("--csv", args.csv)
    run = _from_run(args.from_run) if args.from_run else None
    from .priors import OFFICIAL_CODE

    base = OFFICIAL_CODE if (args.like_train or run is not None) else PLAIN
    opts = {
        k: getattr(args, k) if getattr(args, k) is not None else base[k]
        for k in ("loss", "reduction", "bias", "weight")
    }
    if run is not None:  # the run's own settings and measured norms, unless a flag says otherwise
        counts, lam = run["counts"], args.lam if args.lam is not None else run["lam"]
        opts["weight"] = args.weight if args.weight is not None else run["weight"]
        opts["loss"] = args.loss if args.loss is not None else run["loss"]
        norm_sq = run["norm_sq"] if args.norm_sq is None else args.norm_sq
        source = f"run {args.from_run}: {counts.size} classes, {int(counts.sum()):,} samples, its per-class ||mu_c||^2"
    else:
        if args.lam is None:
            from .errors import InputError

            raise InputError("--lam: the PEM's weight decay is needed (or --from RUN to take a run's)")
        counts, lam, norm_sq = (
            count_profile(args.profile, args.classes, args.max, args.imbalance),
            args.lam,
            1.0
            if args.norm_sq is None
            else args.norm_sq,  # 0 is a value (refused below without a bias), not "unset"
        )
        source = (
            f"{args.profile} profile: {args.classes} classes, n_max {args.max}, imbalance "
            f"{args.imbalance:g}, {int(counts.sum()):,} samples"
        )
    loss = opts.pop("loss")
    x = saturation(counts, lam, feature_norm_sq=norm_sq, **opts)
    eta = predicted_priors(counts, lam, feature_norm_sq=norm_sq, loss=loss, **opts)
    log_n = np.log(counts)
    m = prior_match(eta, counts)
    deviation = eta - log_n - m.offset
    rows = [
        dict(
            zip(
                ("class", "count", "log_count", "x", "predicted", "deviation"),
                (c, int(n) if float(n).is_integer() else float(n), float(ln), float(xc), float(e), float(d)),
            )
        )
        for c, (n, ln, xc, e, d) in enumerate(zip(counts, log_n, x, eta, deviation))
    ]
    if run is not None:
        for r, learned in zip(rows, run["learned"]):
            r["learned"] = float(learned)
    print(source)
    norm_text = "per class" if np.ndim(norm_sq) else f"{norm_sq:g}"
    print(
        f"loss {loss}, lam {lam:g}, reduction {opts['reduction']}, ||mu||^2 {norm_text}, bias "
        f"{'decayed' if opts['bias'] else 'none'}, "
        f"weight {opts['weight']:g}"
        + ("  (as npe train trains it)" if _as_trained({**opts, "loss": loss}) else "")
    )
    print(
        f"{'class':>5} {'N_c':>9} {'ln N_c':>8} {'x_c':>11} {'eta_c':>9} {'dev':>8}"
        + (f" {'learned':>9}" if run is not None else "")
    )
    for r in rows:
        print(
            f"{r['class']:>5} {r['count']:>9g} {r['log_count']:>8.4f} {r['x']:>11.4g} "
            f"{r['predicted']:>9.4f} {r['deviation']:>+8.4f}"
            + (f" {r['learned']:>9.4f}" if run is not None else "")
        )
    print(f"x_c range {x.min():.3g} .. {x.max():.3g}")
    print(
        f"prior match vs ln N_c: slope {m.slope:.3f}, max deviation from best offset {m.max_deviation:.3f} nats, "
        f"centered RMSE {m.centered_rmse:.3f}, offset {m.offset:.3f}, R^2 {m.r2:.4f}, KL {m.kl:.4f}, TV {m.tv:.4f}"
        if m.slope is not None
        else "prior match vs ln N_c: counts are all equal, slope undefined"
    )
    if run is not None:
        print(
            f"the run's learned outputs vs this prediction: centered RMSE "
            f"{prior_match(run['learned'], reference=eta).centered_rmse:.3f} nats"
        )
    if args.csv is not None:
        print(f"wrote {write_csv(args.csv, rows)}")
    return 0


def cmd_figures(args) -> int:
    from .figures import make_figures

    check_writable("--out", args.out, folder=True)
    for path in make_figures(
        args.out, progress=True, only=None if args.only is None else args.only.split(",")
    ):
        print(path)
    return 0


STATIONARY_GRAD = 1e-6  # a projected gradient below this is a stationary point for the comparison's purposes


def ufm_status(message: str, grad_norm: float) -> str:
    """scipy's stop message in words: "ABNORMAL" there means the line search could make no further progress, which at
    a tiny projected gradient is convergence to the limits of float64, not a failure."""
    text = message.strip().rstrip(":").strip()
    if text.upper().startswith("ABNORMAL"):
        if grad_norm <= STATIONARY_GRAD:
            return (
                f"stationary (projected gradient {grad_norm:.2e}; scipy reports 'ABNORMAL': its line search could go no "
                "further in float64, which at this gradient is convergence)"
            )
        return f"NOT converged: the line search failed at projected gradient {grad_norm:.2e} (try another --seed)"
    return f"{text.lower()} (projected gradient {grad_norm:.2e})"


def cmd_ufm(args) -> int:
    from .priors import count_profile, prior_match
    from .ufm import simulate_ufm

    if args.json is not None:
        check_writable("--json", args.json)
    counts = count_profile(args.profile, args.classes, args.max, args.imbalance)
    r = simulate_ufm(
        counts,
        dim=args.dim,
        lam_features=args.lam_features,
        lam_classifier=args.lam_classifier,
        lam_pem=args.lam_pem,
        loss=args.loss,
        nonlinearity=args.nonlinearity,
        reduction=args.reduction,
        seed=args.seed,
        tol=args.tol,
        max_iter=args.max_iter,
        classifier_bias=args.classifier_bias,
        progress=True,
        features=args.features,
    )
    print(
        f"L-BFGS-B: {ufm_status(r.message, r.grad_norm)} after {r.iterations} iterations, {r.seconds:.1f} s"
    )
    print(f"NC1 {r.nc1:.2e}, largest off-diagonal cosine of class means {r.max_offdiag_cosine:.2e}")
    print(f"{'class':>5} {'N_c':>6} {'||mu||^2':>9} {'learned':>10} {'predicted':>10}")
    for c, (n, s, a, b) in enumerate(zip(r.counts, r.mean_norm_sq, r.eta_learned, r.eta_predicted)):
        print(f"{c:>5} {n:>6} {s:>9.3f} {a:>10.6f} {b:>10.6f}")
    print(f"max |learned - predicted| = {r.mismatch:.2e}")
    g = r.geometry
    print(
        f"classifier rows vs scaled-then-centered class means: min cosine {min(g['cosine']):.6f}; "
        f"vs centered means (NC3): min cosine {min(g['nc3_cosine']):.4f}"
    )
    if g["scale_exponent"] is not None:
        print(f"scales a_c ~ N_c^{g['scale_exponent']:.3f}, ||mu_c||^2 ~ N_c^{g['norm_sq_exponent']:.3f}")
    if len(set(r.counts.tolist())) > 1:
        m = prior_match(r.eta_learned, r.counts)
        print(f"learned vs ln N_c: slope {m.slope:.3f}, centered RMSE {m.centered_rmse:.3f}")
    if args.json is not None:
        print(f"wrote {write_json(args.json, r.summary())}")
    return 0


def _profile_args(p, classes: int, n_max: int) -> None:
    p.add_argument("--profile", choices=("exp", "step"), default="exp", help="count profile (default exp)")
    p.add_argument("--classes", type=int, default=classes, help=f"number of classes (default {classes})")
    p.add_argument("--max", type=int, default=n_max, help=f"head-class count (default {n_max})")
    p.add_argument("--imbalance", type=float, default=100.0, help="head over tail count (default 100)")


def register(sub) -> None:
    p = sub.add_parser("check", help="verify every claim of Proposition 1 against mpmath, scipy and sympy")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("priors", help="predicted PEM outputs for a count profile, and how they match ln N_c")
    _profile_args(p, 100, 500)
    p.add_argument("--lam", type=float, help="weight decay on the PEM (required without --from)")
    p.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN",
        help="predict for a finished run: its counts, weight decay, alpha, loss "
        "and per-class ||mu_c||^2, with the trainer's batch-mean loss and decayed bias; prints its learned outputs beside",
    )
    p.add_argument(
        "--like-train",
        action="store_true",
        help="the trainer's settings: logistic loss, batch mean, decayed bias, "
        "alpha 1 (default: exp loss, sum, no bias, the setting of Proposition 1)",
    )
    p.add_argument(
        "--reduction",
        choices=("sum", "mean"),
        help="PEM loss summed, or averaged as in a batch (default sum; mean with --like-train or --from)",
    )
    p.add_argument(
        "--norm-sq",
        type=float,
        help="squared class-mean feature norm ||mu_c||^2 (default 1; --from: the run's, per class)",
    )
    p.add_argument(
        "--loss",
        choices=loss_names(),
        help=f"one-way loss: {' | '.join(loss_names())} (default exp, Proposition 1's; "
        "logistic with --like-train)",
    )
    p.add_argument(
        "--bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the PEM has a bias decayed with the same lam (adds 1 to ||mu||^2; default no, yes with --like-train or --from)",
    )
    p.add_argument("--weight", type=float, help="PEM loss weight alpha (default 1; --from: the run's)")
    p.add_argument("--csv", metavar="PATH", help="also write the per-class table as CSV")
    p.set_defaults(func=cmd_priors)

    p = sub.add_parser("figures", help="regenerate the figures F1-F11 (PNG)")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.add_argument("--only", metavar="F7,F11", help="draw only these figures (comma-separated labels)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser(
        "ufm", help="train the unconstrained feature model with a PEM and compare with Proposition 1"
    )
    _profile_args(p, 10, 500)
    p.add_argument(
        "--dim", type=int, default=16, help="feature dimension D (default 16; at least C for collapse)"
    )
    p.add_argument(
        "--lam-features", type=float, default=5e-4, help="weight decay of the free features (default 5e-4)"
    )
    p.add_argument(
        "--lam-classifier", type=float, default=5e-4, help="weight decay of the classifier (default 5e-4)"
    )
    p.add_argument(
        "--lam-pem",
        type=float,
        default=5e-4,
        help="weight decay of the PEM, lambda of Proposition 1 (default 5e-4)",
    )
    p.add_argument(
        "--loss",
        choices=loss_names(),
        default="logistic",
        help=f"one-way PEM loss: {' | '.join(loss_names())} (default logistic)",
    )
    p.add_argument(
        "--nonlinearity",
        choices=("relu", "none"),
        default="relu",
        help="applied to the free features before the heads (default relu)",
    )
    p.add_argument(
        "--reduction",
        choices=("sum", "mean"),
        default="mean",
        help="the losses summed or averaged over samples (default mean)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization (default 0)")
    p.add_argument("--tol", type=float, default=1e-10, help="projected-gradient tolerance (default 1e-10)")
    p.add_argument(
        "--max-iter", type=int, default=20000, help="most projected-gradient iterations (default 20000)"
    )
    p.add_argument(
        "--no-classifier-bias",
        dest="classifier_bias",
        action="store_false",
        help="fix the classifier bias at 0 (the bias-free model of docs/theory.md, section 6)",
    )
    p.add_argument(
        "--features",
        choices=("samples", "classes"),
        default="samples",
        help="one free feature per sample (collapse measured) or per class, counted N_c times (the same "
        "stationary points, fast at hundreds of classes; NC1 is 0 by construction)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full result, config and history as JSON")
    p.set_defaults(func=cmd_ufm)
