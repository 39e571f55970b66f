"""``npe report DIR``: the prior report of a PEM trained anywhere, from arrays dumped to a folder.

DIR holds ``eta.npy`` (N, C), or (K, N, C) for K heads, averaged), ``features.npy`` (N, D),
``labels.npy`` (N,), optionally ``counts.json`` (a list; default: the label counts), and a
settings TOML (``settings.toml`` unless ``--settings``; keys of ``PemSettings``). Writes
``report.json`` and the PNG figures of a run folder. NumPy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .io import check_writable, read_array, read_json, read_toml_table, write_json
from .validate import MAX_CLASSES

SIGNS = ("eta", "p")


def _load_array(folder: Path, name: str):
    arr = read_array(folder / name, f"DIR: {name}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    return arr


def load_settings(path: Path):
    from .report import PemSettings

    if not Path(path).exists():
        raise InputError(f"settings: no file {path} (write the training settings there, or pass --settings)")
    raw = read_toml_table(path, "settings", "pem")
    return PemSettings.from_dict(
        {k: v for k, v in raw.items() if k != "forecast"}
    )  # [forecast]: load_forecast


def load_outputs(folder, sign: str = "eta") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eta (N, C), features, labels, counts) from a dump folder; ``sign="p"``: the files hold the official p = -eta."""
    if str(folder) == "":
        raise InputError("DIR: empty path")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DIR: no folder {folder}")
    if sign not in SIGNS:
        raise InputError(f"--sign: expected one of {', '.join(SIGNS)}, got {sign!r}")
    if not (folder / "eta.npy").exists() and (folder / "results.json").exists():
        raise InputError(
            f"DIR: {folder} is an npe train run folder, which holds its prior report already (results.json): "
            f"npe priors --from {folder} predicts from it, npe eval {folder} re-scores it; npe report reads a dump "
            "of eta.npy, features.npy and labels.npy (docs/report.md)"
        )
    eta = _load_array(folder, "eta.npy")
    if eta.ndim == 3:  # K heads: averaged, as NPE-LA does at inference
        eta = eta.mean(0)
    if sign == "p":
        eta = -eta
    features, labels = _load_array(folder, "features.npy"), _load_array(folder, "labels.npy")
    if labels.dtype.kind not in "iu" and not (labels.size and np.all(labels == np.round(labels))):
        raise InputError(f"labels.npy: expected integer class ids, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    counts_path = folder / "counts.json"
    if counts_path.is_file():
        raw = read_json(counts_path, "counts.json")
        if (
            not isinstance(raw, list)
            or len(raw) > MAX_CLASSES
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in raw)
        ):
            raise InputError(
                f"counts.json: expected a JSON list of at most {MAX_CLASSES} class counts (numbers, not booleans)"
            )
        counts = np.asarray(raw, dtype=np.float64)
    else:
        C = eta.shape[-1]
        if C > MAX_CLASSES:
            raise InputError(f"eta.npy: {C} classes; at most {MAX_CLASSES} are supported")
        if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= C)):
            raise InputError(f"labels.npy: expected a 1-D array of class ids in [0, {C}) (C from eta.npy)")
        counts = np.bincount(labels, minlength=C).astype(np.float64)
    return eta, features, labels, counts


def load_forecast(
    folder: Path, settings_path: Path, sign: str, features, labels, counts, settings
) -> dict | None:
    """The forecast of the PEM's final outputs (``npe_theory.forecast``) when the dump holds its heads and the settings
    its remaining schedule: ``pem_weight.npy`` (C, D) or (K, C, D), ``pem_bias.npy`` (C,) or (K, C), optionally the
    momentum buffers ``pem_momentum_weight.npy`` / ``pem_momentum_bias.npy`` (zeros without them), and a
    ``[forecast]`` table with ``lr`` (one rate per epoch left) and ``steps`` (per epoch, one number or a list).
    None without ``pem_weight.npy``."""
    import tomllib

    from .forecast import forecast_pem
    from .io import read_text
    from .priors import prior_match
    from .report import EQUILIBRIUM_GAP
    from .spread import NoRoot, class_spread, spread_logit

    if not (folder / "pem_weight.npy").exists():
        return None
    w = _load_array(folder, "pem_weight.npy")
    b = _load_array(folder, "pem_bias.npy") if (folder / "pem_bias.npy").exists() else np.zeros(w.shape[:-1])
    state = {"weight": w[None] if w.ndim == 2 else w, "bias": b[None] if b.ndim == 1 else b}
    for key, name in (
        ("velocity_weight", "pem_momentum_weight.npy"),
        ("velocity_bias", "pem_momentum_bias.npy"),
    ):
        if (folder / name).exists():
            v = _load_array(folder, name)
            state[key] = v[None] if v.ndim == state[key.replace("velocity_", "")].ndim - 1 else v
    if sign == "p":  # heads that produce p = -eta: the same heads with the other sign
        state = {k: -v for k, v in state.items()}
    try:
        plan = (
            tomllib.loads(read_text(settings_path, "settings")).get("forecast")
            if settings_path.exists()
            else None
        )
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"settings: {settings_path} is not valid TOML ({exc})") from None
    if not isinstance(plan, dict) or "lr" not in plan:
        raise InputError(
            f"settings: {settings_path} has no [forecast] table with lr (one rate per epoch left) and steps; the "
            "forecast needs the rest of the schedule"
        )
    from .validate import as_float_array

    rates = np.atleast_1d(as_float_array("settings: [forecast] lr", plan["lr"], nonnegative=True)).tolist()
    steps = np.broadcast_to(
        np.atleast_1d(np.asarray(plan.get("steps", 1), dtype=object)), (len(rates),)
    ).tolist()
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
        raise InputError("settings: [forecast] steps must be whole numbers of steps per epoch")
    lrs = [r for r, n in zip(rates, steps) for _ in range(n)]
    kind = dict(
        momentum=settings.momentum, alpha=settings.alpha, loss=settings.loss, reduction=settings.reduction
    )
    fc = forecast_pem(
        features, labels, counts, state, lrs, settings.weight_decay, pem_bias=settings.bias, **kind
    )
    out = {
        "eta": fc.eta.tolist(),
        "now": fc.now.tolist(),
        "steps_left": fc.steps,
        "gap": None,
        "regime": None,
    }
    try:
        eq = spread_logit(
            class_spread(features, labels, counts.size, bias=settings.bias),
            counts,
            settings.weight_decay,
            loss=settings.loss,
            reduction=settings.reduction,
            weight=settings.alpha,
        )
        gap = prior_match(fc.eta, reference=eq).centered_rmse
        out.update(
            equilibrium=eq.tolist(), gap=gap, regime="equilibrium" if gap <= EQUILIBRIUM_GAP else "lagging"
        )
    except (NoRoot, InputError):
        pass
    return out


def assumed(settings, num_samples: int) -> str:
    """The settings the report used, in one line, with how the steps of each epoch were counted."""
    s = settings
    parts = [
        f"weight decay {s.weight_decay:g}",
        f"alpha {s.alpha:g}",
        f"loss {s.loss}",
        f"reduction {s.reduction}",
    ]
    parts += [f"bias {'decayed' if s.bias else 'none'}", f"momentum {s.momentum:g}"]
    if s.lr is None:
        parts.append(f"lambda*s {s.lambda_s:g} (given)")
    else:
        counted = (
            "steps per epoch as given"
            if s.steps is not None
            else f"steps per epoch = ceil({num_samples} samples / batch {s.batch_size}); give steps = [...] if your "
            "loader dropped the last batch or sampled"
        )
        parts.append(f"{s.epochs} epochs, {counted}")
    return ", ".join(parts)


def cmd_report(args) -> int:
    from .figures import plot_eta_matrix, plot_prior_report
    from .report import pem_report, summary_lines

    folder = Path(args.dir)
    check_writable("--out", folder if args.out is None else args.out, folder=True)
    eta, features, labels, counts = load_outputs(folder, args.sign)
    settings = load_settings(Path(args.settings) if args.settings else folder / "settings.toml")
    report = pem_report(eta, features, labels, counts, settings)
    settings_path = Path(args.settings) if args.settings else folder / "settings.toml"
    forecast = load_forecast(folder, settings_path, args.sign, features, labels, counts, settings)
    if forecast is not None:
        report["forecast"] = forecast
    out = folder if args.out is None else Path(args.out)
    result = {
        "schema": "npe-report/1",
        "source": str(folder),
        "sign": args.sign,
        "counts": counts.tolist(),
        "pem": report,
    }
    write_json(out / "report.json", result)
    plot_prior_report(out / "pem_vs_log_counts.png", report)
    matrix = plot_eta_matrix(out / "eta_matrix.png", report)
    print(f"PEM report of {folder} ({len(labels)} samples, {counts.size} classes):")
    print(f"  settings assumed: {assumed(settings, len(labels))}")
    print("\n".join(summary_lines(report, sign=args.sign)))
    if forecast is not None:
        where = (
            f"{forecast['gap']:.3f} nats from its equilibrium at these features ({forecast['regime']})"
            if forecast["gap"] is not None
            else "where report.json says (no equilibrium found to compare with)"
        )
        print(
            f"  forecast over the {forecast['steps_left']} steps left, the features held as they are: the PEM ends {where}"
        )
    print(f"wrote {out / 'report.json'}, pem_vs_log_counts.png" + (", eta_matrix.png" if matrix else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="prior report of a PEM trained anywhere: eta.npy, features.npy, labels.npy + settings.toml in DIR",
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        help="folder with eta.npy, features.npy, labels.npy (counts.json, settings.toml optional)",
    )
    p.add_argument(
        "--settings",
        metavar="FILE.toml",
        help="training settings (default DIR/settings.toml): weight_decay, alpha, loss, "
        "reduction, bias, momentum, and lambda_s or lr + batch_size + epochs",
    )
    p.add_argument(
        "--sign",
        choices=SIGNS,
        default="eta",
        help="eta: the files hold the prior signal; p: the official code's p = -eta",
    )
    p.add_argument("--out", metavar="DIR", help="where report.json and the figures go (default DIR)")
    p.set_defaults(func=cmd_report)
