"""A grid of runs (seeds x methods x imbalance) and one table of mean and standard deviation over seeds.

Runs go one after another in this process, or, given GPUs, one subprocess per GPU at a time
(``CUDA_VISIBLE_DEVICES`` pins each). A run whose ``results.json`` exists is skipped and one with
a checkpoint is resumed, so an interrupted sweep continues where it stopped.
Imports: the training loop (lazily), ``run/`` and ``tasks/rules.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from npe_theory.errors import InputError
from npe_theory.io import atomic_write, write_csv
from npe_theory.references import table_references

from ..run.config import TrainConfig
from ..run.results import read_results
from ..tasks.rules import REPORT_GROUPS as GROUPS
from ..tasks.rules import RULE_NAMES, RULES


def grid(base: TrainConfig, seeds, methods, imbalances, out: Path) -> list[TrainConfig]:
    """One resolved config per (method, imbalance, seed), each with its own run folder under ``out``."""
    runs = []  # each value once: a repeated seed or method must not count one run twice
    for method, imbalance, seed in itertools.product(
        dict.fromkeys(methods), dict.fromkeys(map(float, imbalances)), dict.fromkeys(seeds)
    ):
        cfg = replace(
            base, method=method, imbalance=float(imbalance), seed=int(seed), out=None, pem_detach=None
        )
        name = Path(cfg.resolved().out).name
        runs.append(replace(cfg, out=str(out / name)).resolved())
    return runs


def _toml(cfg: TrainConfig) -> str:
    # JSON literals of str, numbers, booleans and lists are valid TOML values; None means "default".
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in asdict(cfg).items() if v is not None)


def run_grid(runs: list[TrainConfig], gpus: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Run every config not finished yet; returns the results of all of them, in grid order."""
    todo = [c for c in runs if not (Path(c.out) / "results.json").is_file()]
    for c in runs:  # a finished run is reused only if it is the run this grid asks for
        # set from lambda*s when the run starts
        derived = {k for k in ("weight_decay", "pem_weight_decay") if getattr(c, k) is None}
        asked, done = asdict(c), read_results(c.out).config if c not in todo else None
        if done is not None and {k: v for k, v in done.items() if k not in derived} != {
            k: v for k, v in asked.items() if k not in derived
        }:
            raise InputError(
                f"sweep: {c.out} holds a finished run with other settings; remove it or choose another --out"
            )
    if not gpus:
        from ..loop.train import train

        for cfg in todo:
            train(cfg, resume=True, progress=progress)
    else:

        def launch(item):
            gpu, cfg = item
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            spec = Path(cfg.out) / "sweep_run.toml"
            spec.write_text(_toml(cfg))
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            with (Path(cfg.out) / "sweep_log.txt").open("w") as log:
                done = subprocess.run(
                    [sys.executable, "-m", "npe", "train", "--config", str(spec), "--resume", "--quiet"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            return cfg.out, done.returncode

        slots = [gpus[i % len(gpus)] for i in range(len(todo))]
        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:  # one run per GPU at a time
            failed = [(o, rc) for o, rc in pool.map(launch, zip(slots, todo)) if rc]
        if failed:
            raise RuntimeError(
                "sweep: runs failed (see sweep_log.txt in each): "
                + ", ".join(f"{o} (exit {rc})" for o, rc in failed)
            )
    return [read_results(c.out).raw for c in runs]


def summarize(results: list[dict]) -> list[dict]:
    """One row per (dataset, method, imbalance): mean and std over seeds of every accuracy and prior-match number."""
    rows: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["config"]
        rows.setdefault((c["dataset"], c["method"], c.get("mix", "none"), c["imbalance"]), []).append(r)
    table = []
    for (dataset, method, mix, imbalance), rs in rows.items():
        row = {"dataset": dataset, "method": method, "mix": mix, "imbalance": imbalance, "seeds": len(rs)}
        values = {
            f"{rule}_{g}": [r["accuracy"].get(rule, {}).get(g) for r in rs] for rule in RULES for g in GROUPS
        }
        values.update(
            {
                f"pem_rmse_{k}": [r["pem"]["prior_match"].get(k, {}).get("centered_rmse") for r in rs]
                for k in table_references()
            }
        )
        values["pem_slope"] = [r["pem"]["prior_match"]["vs_log_counts"]["slope"] for r in rs]
        values["lambda_s"] = [r["pem"].get("lambda_s") for r in rs]
        values.update(
            {f"{rule}_ece": [r.get("calibration", {}).get(rule, {}).get("ece") for r in rs] for rule in RULES}
        )
        seg = [
            r.get("segmentation", {}) for r in rs
        ]  # segmentation runs: mIoU overall and on the rarest third of the classes
        values.update({f"{rule}_miou": [s.get(rule, {}).get("miou") for s in seg] for rule in RULES})
        values.update(
            {
                f"{rule}_miou_few": [
                    s.get(rule, {}).get("by_frequency", {}).get("few", {}).get("miou") for s in seg
                ]
                for rule in RULES
            }
        )
        for key, vals in values.items():
            if any(v is None for v in vals):
                row[f"{key}_mean"] = row[f"{key}_std"] = None
            else:
                row[f"{key}_mean"] = float(np.mean(vals))
                row[f"{key}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        table.append(row)
    return table


def write_tables(table: list[dict], out: Path) -> tuple[Path, Path]:
    """sweep.csv (every mean and std) and sweep.md (mean ± std, accuracy in percent)."""
    csv_path, md_path = write_csv(out / "sweep.csv", table), out / "sweep.md"

    def cell(row, key, scale=1.0, digits=1):
        m, s = row[f"{key}_mean"], row[f"{key}_std"]
        return "-" if m is None else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"

    dense = any(row.get("argmax_miou_mean") is not None for row in table)
    rules = [r for r in RULES if any(row.get(f"{r}_overall_mean") is not None for row in table)]
    key_cells = lambda row: [
        row["dataset"],
        row["method"],
        row.get("mix", "none"),
        f"{row['imbalance']:g}",
        str(row["seeds"]),
    ]
    keys = ["dataset", "method", "mix", "imbalance", "seeds"]

    def block(title, head, cells_of):  # one narrow table per question; sweep.csv holds every column at once
        out = [
            f"## {title}",
            "",
            "| " + " | ".join(keys + head) + " |",
            "|" + "---|" * (len(keys) + len(head)),
        ]
        out += ["| " + " | ".join(key_cells(row) + cells_of(row)) + " |" for row in table]
        return out + [""]

    lines = block(
        "Mean per-class test accuracy (%) by rule",
        [RULE_NAMES[r] for r in rules],
        lambda row: [cell(row, f"{r}_overall", 100.0) for r in rules],
    )
    lines += block(
        "NPE-LA by count group (%) and its calibration",
        [f"NPE-LA {g}" for g in GROUPS if g != "overall"] + ["NPE-LA ECE %"],
        lambda row: (
            [cell(row, f"npe_la_{g}", 100.0) for g in GROUPS if g != "overall"]
            + [cell(row, "npe_la_ece", 100.0)]
        ),
    )
    if dense:
        lines += block(
            "mIoU (%) by rule, overall and on the rarest third",
            [f"{RULE_NAMES[r]} mIoU{part}" for r in rules for part in ("", " few")],
            lambda row: [cell(row, f"{r}_miou{part}", 100.0) for r in rules for part in ("", "_few")],
        )
    lines += block(
        "The PEM: centered RMSE (nats) against each reference, and lambda*s",
        [f"vs {k[3:] if k.startswith('vs_') else k}" for k in table_references()] + ["lambda*s"],
        lambda row: (
            [cell(row, f"pem_rmse_{k}", digits=3) for k in table_references()]
            + [cell(row, "lambda_s", digits=3)]
        ),
    )
    text = (
        "Mean ± standard deviation over seeds; every column of every rule (and each rule's ECE) is in sweep.csv.\n\n"
        + "\n".join(lines)
    )
    atomic_write(md_path, lambda tmp: tmp.write_text(text))
    return csv_path, md_path
