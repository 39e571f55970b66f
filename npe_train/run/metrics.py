"""metrics.jsonl: one line per epoch, what it used and measured (docs/report.md). Imports: ``npe_theory.io`` only."""
from __future__ import annotations

import json
import time
from pathlib import Path

from npe_theory.io import atomic_write

METRICS = "metrics.jsonl"


def epoch_record(epoch: int, lr: float, losses, lam_s: float, t0: float, report: dict | None, counts=None) -> dict:
    """One line of metrics.jsonl: the rate this epoch used, its losses, lambda_s so far, the class counts its loss
    saw (``effective_counts``: mixing weights summed per class), and the evaluation when there was one."""
    loss, ce, pem = losses
    line = {"epoch": epoch, "lr": lr, "loss": loss, "ce": ce, "pem": pem, "lambda_s": lam_s, "seconds": time.perf_counter() - t0}
    if counts is not None:
        line["effective_counts"] = [round(float(c), 6) for c in counts]
    if report is not None:
        p = report["pem"]
        line.update(accuracy={r: v["overall"] for r, v in report["accuracy"].items()}, regime=p["regime"],
                    **{f"prior_rmse_{k}": m["centered_rmse"] for k, m in p["prior_match"].items()},
                    nc1=p["nc1"], pem_learned=p["learned"], pem_predicted=p["predicted"], pem_equilibrium=p["equilibrium"],
                    pem_norm_sq=p["mean_norm_sq"])
    return line


def write_metrics(out: Path, metrics: list[dict]) -> None:
    """metrics.jsonl, rewritten whole and atomically from the lines the checkpoint holds: never torn, never short."""
    atomic_write(out / METRICS, lambda tmp: tmp.write_text("".join(json.dumps(line) + "\n" for line in metrics)))
