"""The theory commands of ``npe``: ``check``, ``priors``, ``figures``, ``ufm``.

``npe.cli`` mounts them with ``register``; they need only the base install (no torch).
"""
from __future__ import annotations

import numpy as np

from .io import check_writable, write_csv, write_json


def cmd_check(args) -> int:
    from .checks import format_table, run_checks

    if args.json:
        check_writable("--json", args.json)
    rows = run_checks(progress=not args.quiet)
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        write_json(args.json, [r.as_dict() for r in rows], indent=2)
    return 1 if failed else 0


def cmd_priors(args) -> int:
    from .priors import count_profile, predicted_priors, prior_match, saturation

    if args.csv is not None:
        check_writable("--csv", args.csv)
    counts = count_profile(args.profile, args.classes, args.max, args.imbalance)
    opts = dict(feature_norm_sq=args.norm_sq, reduction=args.reduction, bias=args.bias, weight=args.weight)
    x = saturation(counts, args.lam, **opts)
    eta = predicted_priors(counts, args.lam, loss=args.loss, **opts)
    log_n = np.log(counts)
    m = prior_match(eta, counts)
    deviation = eta - log_n - m.offset
    rows = [dict(zip(("class", "count", "log_count", "x", "predicted", "deviation"), (c, int(n), float(ln), float(xc), float(e), float(d))))
            for c, (n, ln, xc, e, d) in enumerate(zip(counts, log_n, x, eta, deviation))]
    print(f"{args.profile} profile: {args.classes} classes, n_max {args.max}, imbalance {args.imbalance:g}, {int(counts.sum()):,} samples")
    print(f"loss {args.loss}, lam {args.lam:g}, reduction {args.reduction}, ||mu||^2 {args.norm_sq:g}, bias {'decayed' if args.bias else 'none'}, weight {args.weight:g}")
    print(f"{'class':>5} {'N_c':>7} {'ln N_c':>8} {'x_c':>11} {'eta_c':>9} {'dev':>8}")
    for r in rows:
        print(f"{r['class']:>5} {r['count']:>7} {r['log_count']:>8.4f} {r['x']:>11.4g} {r['predicted']:>9.4f} {r['deviation']:>+8.4f}")
    print(f"x_c range {x.min():.3g} .. {x.max():.3g}")
    print(f"prior match vs ln N_c: slope {m.slope:.3f}, max deviation from best offset {m.max_deviation:.3f} nats, "
          f"centered RMSE {m.centered_rmse:.3f}, offset {m.offset:.3f}, R^2 {m.r2:.4f}, KL {m.kl:.4f}, TV {m.tv:.4f}"
          if m.slope is not None else "prior match vs ln N_c: counts are all equal, slope undefined")
    if args.csv:
        print(f"wrote {write_csv(args.csv, rows)}")
    return 0


def cmd_figures(args) -> int:
    from .figures import make_figures

    check_writable("--out", args.out, folder=True)
    for path in make_figures(args.out, progress=True):
        print(path)
    return 0


def cmd_ufm(args) -> int:
    from .priors import count_profile, prior_match
    from .ufm import simulate_ufm

    if args.json is not None:
        check_writable("--json", args.json)
    counts = count_profile(args.profile, args.classes, args.max, args.imbalance)
    r = simulate_ufm(counts, dim=args.dim, lam_features=args.lam_features, lam_classifier=args.lam_classifier, lam_pem=args.lam_pem,
                     loss=args.loss, nonlinearity=args.nonlinearity, reduction=args.reduction, seed=args.seed, tol=args.tol,
                     max_iter=args.max_iter, classifier_bias=args.classifier_bias, progress=True)
    print(f"{r.message} after {r.iterations} iterations, {r.seconds:.1f} s; projected gradient {r.grad_norm:.2e}")
    print(f"NC1 {r.nc1:.2e}, largest off-diagonal cosine of class means {r.max_offdiag_cosine:.2e}")
    print(f"{'class':>5} {'N_c':>6} {'||mu||^2':>9} {'learned':>10} {'predicted':>10}")
    for c, (n, s, a, b) in enumerate(zip(r.counts, r.mean_norm_sq, r.eta_learned, r.eta_predicted)):
        print(f"{c:>5} {n:>6} {s:>9.3f} {a:>10.6f} {b:>10.6f}")
    print(f"max |learned - predicted| = {r.mismatch:.2e}")
    g = r.geometry
    print(f"classifier rows vs scaled-then-centered class means: min cosine {min(g['cosine']):.6f}; "
          f"vs centered means (NC3): min cosine {min(g['nc3_cosine']):.4f}")
    if g["scale_exponent"] is not None:
        print(f"scales a_c ~ N_c^{g['scale_exponent']:.3f}, ||mu_c||^2 ~ N_c^{g['norm_sq_exponent']:.3f}")
    if len(set(r.counts.tolist())) > 1:
        m = prior_match(r.eta_learned, r.counts)
        print(f"learned vs ln N_c: slope {m.slope:.3f}, centered RMSE {m.centered_rmse:.3f}")
    if args.json:
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
    p.add_argument("--lam", type=float, required=True, help="weight decay on the PEM")
    p.add_argument("--reduction", choices=("sum", "mean"), default="sum", help="PEM loss summed, or averaged as in a batch (default sum)")
    p.add_argument("--norm-sq", type=float, default=1.0, help="squared class-mean feature norm ||mu_c||^2 (default 1)")
    p.add_argument("--loss", choices=("exp", "logistic"), default="exp", help="exp (Proposition 1) or logistic (default exp)")
    p.add_argument("--bias", action="store_true", help="the PEM has a bias decayed with the same lam (adds 1 to ||mu||^2)")
    p.add_argument("--weight", type=float, default=1.0, help="PEM loss weight alpha (default 1)")
    p.add_argument("--csv", metavar="PATH", help="also write the per-class table as CSV")
    p.set_defaults(func=cmd_priors)

    p = sub.add_parser("figures", help="regenerate the figures F1-F11 (PNG)")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("ufm", help="train the unconstrained feature model with a PEM and compare with Proposition 1")
    _profile_args(p, 10, 500)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--lam-features", type=float, default=5e-4)
    p.add_argument("--lam-classifier", type=float, default=5e-4)
    p.add_argument("--lam-pem", type=float, default=5e-4)
    p.add_argument("--loss", choices=("exp", "logistic"), default="logistic")
    p.add_argument("--nonlinearity", choices=("relu", "none"), default="relu")
    p.add_argument("--reduction", choices=("sum", "mean"), default="mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-10, help="projected-gradient tolerance (default 1e-10)")
    p.add_argument("--max-iter", type=int, default=20000)
    p.add_argument("--no-classifier-bias", dest="classifier_bias", action="store_false",
                   help="fix the classifier bias at 0 (the bias-free model of seed 003's analysis)")
    p.add_argument("--json", metavar="PATH", help="write the full result, config and history as JSON")
    p.set_defaults(func=cmd_ufm)
