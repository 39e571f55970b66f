"""``npe train`` and ``npe compare``. Imported by ``npe_theory.cli``; torch loads only when a command runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .evaluate import REPORT_GROUPS as GROUPS
from .evaluate import RULE_NAMES


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def format_summary(results: dict) -> str:
    cfg = results["config"]
    lines = [f"{cfg['dataset']}-LT (imbalance {cfg['imbalance']:g}), {cfg['model']}, method {cfg['method']}, seed {cfg['seed']}, "
             f"{cfg['epochs']} epochs in {results['train_seconds']:.0f} s; mean per-class test accuracy (tau {cfg['tau']:g}):",
             f"  {'rule':<14}" + "".join(f"{g:>9}" for g in GROUPS)]
    for rule, name in RULE_NAMES.items():
        lines.append(f"  {name:<14}" + "".join(f"{_fmt(results['accuracy'][rule][g]):>9}" for g in GROUPS))
    pem = results["pem"]
    for key, label in (("vs_log_counts", "ln N_c"), ("vs_closed_form", "closed form")):
        m = pem["prior_match"][key]
        lines.append(f"  PEM vs {label:<12} centered RMSE {m['centered_rmse']:.3f}, max dev {m['max_deviation']:.3f}, "
                     f"slope {_fmt(m['slope'], '.2f')}, offset {m['offset']:+.2f}, KL {m['kl']:.4f}")
    lines.append(f"  NC1 of the features {pem['nc1']:.3g}" + ("" if pem["closed_form_applies"] else "  (MLP PEM: the closed form assumes a linear PEM)"))
    lines.append(f"  run folder: {cfg['out']}")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from .config import make_config
    from .train import TrainingDiverged, train

    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS}
    cfg = make_config(args.config, **overrides)
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


TRAIN_FLAGS = ("dataset", "model", "method", "profile", "imbalance", "n_max", "data_dir", "epochs", "batch_size", "lr", "weight_decay",
               "schedule", "milestones", "warmup_epochs", "alpha", "num_pems", "pem_hidden", "pem_loss", "pem_detach", "tau", "seed",
               "device", "amp", "compile", "pipeline", "workers", "eval_every", "out")


def cmd_sweep(args) -> int:
    from .config import make_config
    from .sweep import grid, run_grid, summarize, write_tables

    overrides = {k: getattr(args, k, None) for k in TRAIN_FLAGS if k not in ("method", "imbalance", "seed", "out")}
    base = make_config(args.config, **overrides)
    out = Path(args.out)
    runs = grid(base, args.seeds, args.methods, args.imbalances, out)
    print(f"sweep: {len(runs)} runs ({len(args.methods)} methods x {len(args.imbalances)} imbalances x {len(args.seeds)} seeds) in {out}"
          + (f" over GPUs {', '.join(args.gpus)}" if args.gpus else ", one after another"))
    table = summarize(run_grid(runs, args.gpus, progress=not args.quiet))
    csv_path, md_path = write_tables(table, out)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    return 0


def _load_results(run: str) -> dict:
    path = Path(run) / "results.json"
    if not path.is_file():
        raise ValueError(f"RUN_DIR: no results.json in {run} (a finished run writes it)")
    return json.loads(path.read_text())


def cmd_compare(args) -> int:
    runs = [_load_results(r) for r in args.runs]
    names = [Path(r).name for r in args.runs]
    width = max(12, *(len(n) for n in names)) + 2
    rows = [("dataset", lambda r: r["config"]["dataset"]), ("method", lambda r: r["config"]["method"]),
            ("imbalance", lambda r: f"{r['config']['imbalance']:g}"), ("seed", lambda r: str(r["config"]["seed"])),
            ("epochs", lambda r: str(r["epochs"]))]
    for rule, name in RULE_NAMES.items():
        for g in GROUPS:
            rows.append((f"{name} {g}", lambda r, rule=rule, g=g: _fmt(r["accuracy"][rule][g])))
    for key, label in (("vs_log_counts", "ln N_c"), ("vs_closed_form", "closed form")):
        rows.append((f"PEM RMSE vs {label}", lambda r, key=key: _fmt(r["pem"]["prior_match"][key]["centered_rmse"])))
    rows.append(("PEM slope on ln N_c", lambda r: _fmt(r["pem"]["prior_match"]["vs_log_counts"]["slope"], ".2f")))
    rows.append(("NC1", lambda r: f"{r['pem']['nc1']:.3g}"))
    label_w = max(len(r[0]) for r in rows) + 2
    print(" " * label_w + "".join(f"{n:>{width}}" for n in names))
    for label, get in rows:
        print(f"{label:<{label_w}}" + "".join(f"{get(r):>{width}}" for r in runs))
    return 0


def _add_run_flags(p, sweep: bool = False) -> None:
    """The settings of a run, shared by train and sweep (sweep sets method, imbalance, seed and folders itself)."""
    p.add_argument("--config", metavar="FILE.toml", help="settings file (flags given here override it)")
    p.add_argument("--dataset", help="synthetic | mnist1d | digits | cifar10 | cifar100 (default mnist1d)")
    p.add_argument("--model", help="mlp | cnn1d | resnet32 (default by dataset)")
    if not sweep:
        p.add_argument("--method", help="npe | ce | la_loss (default npe)")
        p.add_argument("--imbalance", type=float, help="head over tail count (default 100)")
        p.add_argument("--seed", type=int)
    p.add_argument("--profile", help="exp | step count profile (default exp)")
    p.add_argument("--n-max", type=int, help="head-class count (default by dataset)")
    p.add_argument("--data-dir", help="folder with cifar-10-batches-py/ or cifar-100-python/ (never downloaded)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float, help="on every parameter, PEM included")
    p.add_argument("--schedule", help="cosine | step")
    p.add_argument("--milestones", type=int, nargs="+", help="step schedule: epochs after which lr x gamma")
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--alpha", type=float, help="PEM loss weight")
    p.add_argument("--num-pems", type=int)
    p.add_argument("--pem-hidden", type=int, help="hidden width of an MLP PEM (default: linear PEM)")
    p.add_argument("--pem-loss", help="logistic | exp")
    if not sweep:
        p.add_argument("--pem-detach", action="store_const", const=True, help="keep the PEM loss from the backbone")
        p.add_argument("--pem-joint", dest="pem_detach", action="store_const", const=False, help="let the PEM loss reach the backbone")
    p.add_argument("--tau", type=float, help="logit-adjustment strength (default 1)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", dest="amp", action="store_const", const=True, help="bf16 autocast on any device (default: on CUDA only)")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, help="no bf16 autocast, not even on CUDA")
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="torch.compile the network; MODE: default (if omitted) | reduce-overhead (CUDA graphs) | max-autotune | none")
    p.add_argument("--pipeline", help="device (data set on the device, the default) | loader (a standard DataLoader)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes for --pipeline loader (default 4)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a network with PEMs on long-tailed data and compare learned with closed-form priors")
    _add_run_flags(p)
    p.add_argument("--out", help="run folder (default runs/<dataset>-<method>-ir<imbalance>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run seeds x methods x imbalances and write one mean/std table (CSV and Markdown)")
    _add_run_flags(p, sweep=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["npe", "ce"], help="from npe, ce, la_loss")
    p.add_argument("--imbalances", type=float, nargs="+", default=[100.0])
    p.add_argument("--gpus", nargs="+", help="spread runs over these GPU ids (one run per GPU at a time)")
    p.add_argument("--out", default="runs/sweep", help="sweep folder (default runs/sweep)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", help="print finished runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.set_defaults(func=cmd_compare)
