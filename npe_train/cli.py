"""``npe train``, ``npe sweep`` and ``npe compare``. Mounted by ``npe.cli``; the flags come from ``TrainConfig``.
The top of ``npe_train``: it may import every layer of the package.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from npe_theory.errors import InputError
from npe_theory.io import check_writable, write_json
from npe_theory.references import table_references
from npe_theory.report import summary_lines

from .run.config import add_config_flags
from .run.results import read_results
from .tasks.rules import GROUPS as COUNT_GROUPS
from .tasks.rules import INDEX_GROUPS, INDEX_LABELS, RULE_NAMES, RULES
from .tasks.rules import REPORT_GROUPS as GROUPS

SWEEP_SETS = ("method", "imbalance", "seed", "out")  # a sweep sets these per run itself


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def _decay_line(cfg: dict, results: dict) -> str:
    """Both weight decays the run trained with, and how each was chosen."""
    pem = cfg.get("pem_weight_decay", cfg["weight_decay"])
    how = (
        f"set for lambda*s = {cfg['target_lambda_s']:g}"
        if cfg.get("target_lambda_s") is not None
        else "as given"
    )
    shared = " (shared: --shared-decay)" if cfg.get("shared_decay") else ""
    return (
        f"  weight decay: backbone {cfg['weight_decay']:.3g}{shared}, PEM {pem:.3g} ({how}; "
        f"lambda*s felt {results['pem']['lambda_s']:.3g})"
    )


def _imbalance(cfg: dict, counts) -> str:
    """The head-over-tail ratio the run trained at: the profile's, or the data's own measured one (natural counts)."""
    if cfg["profile"] != "natural":
        return f"{cfg['imbalance']:g}"
    c = [n for n in counts if n > 0]
    return f"{max(c) / min(c):.3g}, measured" if c else "-"


def format_summary(results: dict) -> str:
    cfg = results["config"]
    lines = [
        f"{cfg['dataset']}-LT ({cfg['profile']}, imbalance {_imbalance(cfg, results['counts'])}), {cfg['model']}, "
        f"method {cfg['method']}, "
        f"seed {cfg['seed']}, {cfg['epochs']} epochs in {results['train_seconds']:.0f} s; mean per-class "
        f"test accuracy (tau {cfg['tau']:g}):",
        _decay_line(cfg, results),
        f"  {'rule':<22}" + "".join(f"{g:>9}" for g in GROUPS),
    ]
    lines[-1] += f"{'ECE %':>9}"
    for rule, name in RULE_NAMES.items():
        if rule in results["accuracy"]:
            ece = results.get("calibration", {}).get(rule, {}).get("ece")
            lines.append(
                f"  {name:<22}"
                + "".join(f"{_fmt(results['accuracy'][rule][g]):>9}" for g in GROUPS)
                + f"{_fmt(None if ece is None else 100 * ece, '.1f'):>9}"
            )
    sizes = results.get("group_sizes")
    if sizes:  # what each column averages over; an empty group is "-"
        lines.append(
            f"  {'classes / test samples':<22}"
            + " " * 9
            + "".join(f"{str(v['classes']) + '/' + str(v['test_samples']):>9}" for v in sizes.values())
        )
    lines.append(
        "  (post-hoc LA: z - tau ln pi, the true counts; NPE-LA: z - tau eta(x), the PEM per sample; NPE marginal: "
        "z - tau E_x[eta(x)], one vector; NPE class mean: z - tau m, m_c the PEM's mean on class c; NPE inverse: "
        "z - tau ln pi_hat, the prior Proposition 1 implies; docs/metrics.md)"
    )
    if "accuracy_by_third" in results:  # a count group is empty: thirds of the classes by count beside it
        lines.append(
            f"  {'by count thirds':<22}" + " " * 9 + "".join(f"{g:>9}" for g in ("many", "medium", "few"))
        )
        for rule, v in results["accuracy_by_third"].items():
            lines.append(f"  {RULE_NAMES[rule]:<22}" + " " * 9 + "".join(f"{_fmt(x):>9}" for x in v.values()))
    lines += index_group_lines(results)
    if (
        "segmentation" in results
    ):  # per pixel: mIoU overall and by pixel-frequency third (docs/segmentation.md)
        lines.append(
            f"  {'mIoU':<22}"
            + "".join(f"{g:>9}" for g in ("overall", "many", "medium", "few"))
            + f"{'pixel acc':>11}"
        )
        for rule, s in results["segmentation"].items():
            lines.append(
                f"  {RULE_NAMES[rule]:<22}{_fmt(s['miou']):>9}"
                + "".join(f"{_fmt(v['miou']):>9}" for v in s["by_frequency"].values())
                + f"{_fmt(s['pixel_accuracy']):>11}"
            )
    for entry in results.get("adaptation", []):  # a shifting stream (docs/adaptation.md)
        lines.append(
            f"  shift at epoch {entry['epoch']} to {entry['to']}: the PEM is within {entry['tolerance']:g} nats of its new "
            f"equilibrium after {_fmt(entry['lag_measured'], 'd')} epochs (predicted {_fmt(entry['lag_predicted'], 'd')}; "
            f"- = not within the run)"
        )
    lines += advice_lines(results.get("advice"))
    lines.append(
        "prior report (training-mode features, as the PEM trained on; NPE-LA at test time uses eval mode):"
    )
    lines += summary_lines(results["pem"])
    lines.append(f"  run folder: {cfg['out']}")
    return "\n".join(lines)


def index_group_lines(results: dict) -> list[str]:
    """Accuracy by class-index range, as the official codes group CIFAR-LT's classes (head / medium / tail); sources
    with the same ranges share one block, and a block that repeats the count groups class for class is left out."""
    by_index, counts = results.get("accuracy_by_index", {}), np.asarray(results["counts"])
    blocks: dict[tuple, list[str]] = {}
    for source in by_index:
        blocks.setdefault(INDEX_GROUPS[source][len(counts)], []).append(source)
    members = [np.flatnonzero(rule(counts)).tolist() for rule in COUNT_GROUPS.values()]
    lines = []
    for ranges, sources in blocks.items():
        if [list(range(a, b)) for a, b in ranges] == members:
            continue
        spans = " / ".join(f"{a}-{b - 1}" for a, b in ranges)
        label = " and ".join(INDEX_LABELS[s] for s in sources)
        lines.append(
            f"  {'by class index':<22}" + " " * 9 + "".join(f"{g:>9}" for g in ("head", "medium", "tail"))
        )
        lines.append(f"    ({label}: classes {spans})")
        for rule, v in by_index[sources[0]].items():
            lines.append(f"  {RULE_NAMES[rule]:<22}" + " " * 9 + "".join(f"{_fmt(x):>9}" for x in v.values()))
    return lines


def advice_lines(advice: dict | None) -> list[str]:
    """The advice block: the validation set's choice, NPE-LA against argmax and post-hoc LA, the recipe to equilibrium."""
    if not advice:
        return []
    lines = ["advice:"]
    if advice.get("validation") is None:
        lines.append(f"  {advice.get('why', 'no validation set')}")
    else:
        v, best = advice["validation"], advice["best"]
        tau = "" if best["tau"] is None else f" at tau {best['tau']:g}"
        lines.append(
            f"  validation set ({v['samples']} samples, {v['per_class']} per class, {v['source']}) prefers {best['name']}{tau}: "
            f"{_fmt(best['validation_accuracy'])} there, {_fmt(best['test_accuracy'])} on test"
        )
        remedy = {  # what to do about it
            "argmax": "the network is already balanced (a re-balancing loss?) or tau is too large for it: use the "
            "validation set's choice above",
            "posthoc_la": "with the counts known, post-hoc LA is the rule to use; NPE-LA is for counts you do not have "
            "(a lagging PEM, see the regime below, also costs accuracy)",
        }
        for other, name in (("argmax", "the network's own argmax"), ("posthoc_la", "post-hoc LA")):
            b = advice["npe_la_below"][other]
            if b["validation"] or b["test"]:
                lines.append(
                    f"  NPE-LA is below {name} (validation: {'yes' if b['validation'] else 'no'}, test: "
                    f"{'yes' if b['test'] else 'no'}): {remedy[other]}"
                )
        if advice.get("rule_file"):
            lines.append(
                f"  the chosen rule, with its prior, is in {advice['rule_file']} (npe eval RUN --rule best scores it)"
            )
    recipe = advice.get("recipe")
    if recipe:
        epochs = "more than 100x the epochs" if recipe["epochs"] is None else f"{recipe['epochs']} epochs"
        lines.append(
            f"  transient (lambda*s = {recipe['lambda_s']:.3g}): lambda*s = {recipe['target_lambda_s']:g} needs a PEM "
            f"weight decay of {recipe['pem_weight_decay']:.3g} with this schedule (--pem-weight-decay, or "
            f"--target-lambda-s {recipe['target_lambda_s']:g}), or {epochs}"
        )
    return lines


def _table_names() -> list[str]:
    from .experiments.reproduce import shipped_tables

    return list(shipped_tables())


def _overrides(args, names) -> dict:
    return {k: getattr(args, k) for k in names}


def cmd_train(args) -> int:
    from .loop.train import TrainingDiverged, train
    from .run.config import make_config

    cfg = make_config(args.config, **_overrides(args, args.config_fields))
    try:
        results = train(cfg, resume=args.resume, progress=not args.quiet)
    except TrainingDiverged as exc:
        print(f"npe train: stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if "config" in results:  # under torchrun only rank 0 reports
        print(format_summary(results))
    return 0


def cmd_sweep(args) -> int:
    from .experiments.sweep import grid, run_grid, summarize, write_tables
    from .run.config import make_config

    base = make_config(args.config, **_overrides(args, args.config_fields))
    out = Path(args.out)
    runs = grid(base, args.seeds, args.methods, args.imbalances, out)
    done = sum((Path(cfg.out) / "results.json").exists() for cfg in runs)
    todo = f"{len(runs) - done} to make" + (f", {done} finished and reused" if done else "")
    print(
        f"sweep: {len(runs)} runs ({len(set(args.methods))} methods x {len(set(args.imbalances))} "
        f"imbalances x {len(set(args.seeds))} seeds) in {out}: {todo}"
        + (
            ""
            if done == len(runs)
            else f" over GPUs {', '.join(args.gpus)}"
            if args.gpus
            else ", one after another"
        )
    )
    table = summarize(run_grid(runs, args.gpus, progress=not args.quiet))
    csv_path, md_path = write_tables(table, out)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0


def cmd_reproduce(args) -> int:
    from .experiments.reproduce import load_table, plan, summarize_rows, write_table
    from .experiments.sweep import run_grid

    table = load_table(args.table)
    out = Path(f"runs/reproduce/{Path(args.table).stem}" if args.out is None else args.out)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("device", args.device)) if v is not None}
    runs = plan(table, out, overrides)
    print(f"{table.title}: {len(table.rows)} rows x {len(table.seeds)} seeds = {len(runs)} runs in {out}")
    if args.dry_run:
        for row, cfg in runs:
            state = "done" if (Path(cfg.out) / "results.json").is_file() else "to run"
            print(
                f"  {row.name:<24} seed {cfg.seed}  {cfg.dataset} {cfg.method} {cfg.epochs} epochs  {cfg.out}  ({state})"
            )
        return 0
    results = run_grid([cfg for _, cfg in runs], args.gpus, progress=not args.quiet)
    csv_path, md_path = write_table(table, summarize_rows(table, runs, results), out)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0


def cmd_compare(args) -> int:
    runs, names, unfinished = [], [], []
    for (
        folder
    ) in args.runs:  # a folder without results.json (still training, or killed) is skipped with a note
        if Path(folder).is_dir() and not (Path(folder) / "results.json").exists():
            unfinished.append(str(folder))
            continue
        runs.append(read_results(folder))  # a damaged results.json stays an error
        names.append(Path(folder).name)
    if not runs:
        raise InputError(f"RUN_DIR: no finished run (results.json) in {', '.join(unfinished)}")
    for folder in unfinished:
        print(f"npe compare: skipped {folder}: no results.json (not finished)", file=sys.stderr)
    width = max(12, *(len(n) for n in names)) + 2
    rows = [
        ("dataset", lambda r: r.config["dataset"]),
        ("method", lambda r: r.config["method"]),
        ("imbalance", lambda r: f"{r.config['imbalance']:g}"),
        ("seed", lambda r: str(r.config["seed"])),
        ("epochs", lambda r: str(r.raw["epochs"])),
        ("lambda*s", lambda r: _fmt(r.pem.get("lambda_s"), ".3g")),
        ("regime", lambda r: r.pem.get("regime", "-")),
    ]
    shown = {"dataset", "method", "imbalance", "seed", "epochs", "out"}
    for key in sorted(
        {k for r in runs for k in r.config} - shown
    ):  # every other setting on which the runs differ
        values = [json.dumps(r.config.get(key)) for r in runs]
        if len(set(values)) > 1:
            rows.append((key, lambda r, key=key: json.dumps(r.config.get(key))))
    for rule, name in RULE_NAMES.items():
        for g in GROUPS:
            rows.append((f"{name} {g}", lambda r, rule=rule, g=g: _fmt(r.accuracy_of(rule, g))))
    for rule, name in RULE_NAMES.items():
        rows.append(
            (
                f"{name} ECE %",
                lambda r, rule=rule: (
                    _fmt(100 * r.raw["calibration"][rule]["ece"], ".1f")
                    if rule in r.raw.get("calibration", {})
                    else "-"
                ),
            )
        )
    for key in table_references():
        rows.append((f"PEM RMSE {key}", lambda r, key=key: _fmt(r.prior_rmse(key))))
    rows.append(
        ("PEM slope on ln N_c", lambda r: _fmt(r.pem["prior_match"]["vs_log_counts"]["slope"], ".2f"))
    )
    rows.append(("NC1", lambda r: _fmt(r.pem.get("nc1"), ".3g")))
    label_w = max(len(r[0]) for r in rows) + 2
    print(" " * label_w + "".join(f"{n:>{width}}" for n in names))
    for label, get in rows:
        print(f"{label:<{label_w}}" + "".join(f"{get(r):>{width}}" for r in runs))
    return 0


def cmd_eval(args) -> int:
    from .experiments.evaluate import evaluate_finished

    if args.export is not None and args.rule is None:
        raise InputError("export: says which rule to write; give --rule too (best, or a rule's name)")
    if args.export is not None:
        check_writable("--export", args.export)  # before the evaluation, not after it
    out, path = evaluate_finished(args.run, args.data_dir, args.test_profile, args.rule, args.tau)
    print(f"{'rule':<24}{'mean per class':>16}{'sample accuracy':>17}   (test counts {out['test_counts']})")
    for rule, acc in out["accuracy"].items():
        print(
            f"{RULE_NAMES.get(rule, rule):<24}{100 * acc['overall']:>15.1f}%{100 * out['sample_accuracy'][rule]:>16.1f}%"
        )
    chosen = out.get("chosen")
    if chosen:
        print(
            f"chosen: {chosen['name']} at tau {chosen['tau']:g}: {100 * chosen['accuracy']['overall']:.1f}% mean per "
            f"class ({chosen['formula']})"
        )
        if args.export is not None:
            print(
                f"wrote the rule to {write_json(Path(args.export), {k: v for k, v in chosen.items() if 'accuracy' not in k})}"
            )
    print(f"wrote {path}")
    return 0


def _figures_with_regimes(draw):
    """``npe figures --retrain-regimes / --retrain-segmentation / --retrain-adaptation``: train the runs of F7/F8, F11
    or F10 first and write their summaries beside the figures."""

    def run(args) -> int:
        from npe_theory.io import write_json

        if args.retrain_regimes:
            from .experiments.regimes import GRID, SETS, regime_runs

            path = write_json(
                Path(args.out) / "regime_runs.json",
                {"grid": [list(g) for g in GRID], "sets": list(SETS), "runs": regime_runs()},
            )
            print(f"wrote {path}")
        if args.retrain_segmentation:
            from .experiments.segmentation import segmentation_runs

            path = write_json(
                Path(args.out) / "segmentation_runs.json",
                {"config": "shapes_seg", "runs": segmentation_runs()},
            )
            print(f"wrote {path}")
        if args.retrain_adaptation:
            from .experiments.adaptation import GRID as SHIFTS
            from .experiments.adaptation import adaptation_runs

            path = write_json(
                Path(args.out) / "adaptation_runs.json",
                {"grid": [list(g) for g in SHIFTS], "runs": adaptation_runs()},
            )
            print(f"wrote {path}")
        return draw(args)

    return run


def method_choices() -> list[str]:
    from .methods.catalog import METHODS

    return list(METHODS)


def cmd_plot(args) -> int:
    from .run.plots import plot_run

    for path in plot_run(args.run):
        print(f"wrote {path}")
    return 0


def register(sub, helps: dict[str, str]) -> None:
    """Add ``train``, ``sweep``, ``compare``, ``eval`` and ``plot`` to ``sub`` with the one-line ``helps`` of ``npe.cli``
    (which lists them without importing this module), and the ``--retrain-*`` flags to ``figures``."""
    fig = sub.choices.get("figures")
    if (
        fig is not None
    ):  # the theory package draws F7 and F8 from run summaries; this package can retrain them
        fig.add_argument(
            "--retrain-regimes",
            action="store_true",
            help="train the F7/F8 runs again (about 3 minutes on 2 CPU cores) "
            "and write OUT/regime_runs.json before drawing",
        )
        fig.add_argument(
            "--retrain-adaptation",
            action="store_true",
            help="train the F10 runs again (12 shifting runs, about "
            "6 minutes on 2 CPU cores) and write OUT/adaptation_runs.json before drawing",
        )
        fig.add_argument(
            "--retrain-segmentation",
            action="store_true",
            help="train the F11 runs again (CE and NPE on shapes, 3 seeds, "
            "about 10 minutes on 2 CPU cores) and write OUT/segmentation_runs.json before drawing",
        )
        fig.set_defaults(func=_figures_with_regimes(fig.get_default("func")))

    p = sub.add_parser("train", help=helps["train"])
    p.add_argument(
        "--config",
        metavar="FILE.toml|RECIPE",
        help="settings file, or the name of a shipped recipe such as "
        "mnist1d_lt_equilibrium or cifar100_lt (flags given here override it)",
    )
    p.set_defaults(config_fields=add_config_flags(p))
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help=helps["sweep"])
    p.add_argument(
        "--config",
        metavar="FILE.toml|RECIPE",
        help="settings file, or the name of a shipped recipe such as "
        "mnist1d_lt_equilibrium or cifar100_lt (flags given here override it)",
    )
    p.set_defaults(config_fields=add_config_flags(p, exclude=SWEEP_SETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed (default 0 1 2)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["npe", "ce"],
        help=f"registered methods (default npe ce): {', '.join(method_choices())}",
    )
    p.add_argument(
        "--imbalances", type=float, nargs="+", default=[100.0], help="head over tail counts (default 100)"
    )
    p.add_argument("--gpus", nargs="+", help="spread runs over these GPU ids (one run per GPU at a time)")
    p.add_argument("--out", default="runs/sweep", help="sweep folder (default runs/sweep)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("reproduce", help=helps["reproduce"])
    p.add_argument(
        "table", metavar="TABLE", help="a table file (TOML), or a shipped table: " + ", ".join(_table_names())
    )
    p.add_argument("--data-dir", help="the data folder every run reads (CIFAR tables)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N for every run")
    p.add_argument("--gpus", nargs="+", help="spread runs over these GPU ids (one run per GPU at a time)")
    p.add_argument("--out", help="table folder (default runs/reproduce/TABLE)")
    p.add_argument("--dry-run", action="store_true", help="print the runs it would make, and which are done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("compare", help=helps["compare"])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("plot", help=helps["plot"])
    p.add_argument("run", metavar="RUN_DIR", help="a finished run folder (results.json and metrics.jsonl)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("eval", help=helps["eval"])
    p.add_argument("run", metavar="RUN_DIR", help="a finished run folder (results.json and its checkpoint)")
    p.add_argument(
        "--data-dir", help="read the test set from this folder instead (same kind of data as the run's)"
    )
    p.add_argument(
        "--test-profile",
        metavar="exp:R|reversed:R",
        help="subsample the test set: head classes (exp) or tail "
        "classes (reversed) most frequent, imbalance R",
    )
    p.add_argument(
        "--rule",
        help="report this rule as the chosen one: best (the rule and tau the run's validation set chose) or "
        f"one of {', '.join(RULES)}",
    )
    p.add_argument("--tau", type=float, help="score every rule at this tau (default: the run's, or best's)")
    p.add_argument(
        "--export", metavar="FILE", help="with --rule: write the rule (its tau and prior vector) as JSON"
    )
    p.set_defaults(func=cmd_eval)
