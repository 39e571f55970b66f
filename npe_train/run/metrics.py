"""metrics.jsonl: one line per epoch, what it used and measured (docs/report.md), and its TensorBoard copy.
Imports: ``npe_theory`` only (torch's tensorboard writer lazily)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.io import atomic_write

METRICS = "metrics.jsonl"


def epoch_record(
    epoch: int, lr: float, losses, lam_s: float, t0: float, report: dict | None, counts=None
) -> dict:
    """One line of metrics.jsonl: the rate this epoch used, its losses, lambda_s so far, the class counts its loss
    saw (``effective_counts``: mixing weights summed per class), and the prior report (every epoch where the task gives
    one) with the test accuracy (at evaluations)."""
    loss, ce, pem = losses
    line = {
        "epoch": epoch,
        "lr": lr,
        "loss": loss,
        "ce": ce,
        "pem": pem,
        "lambda_s": lam_s,
        "seconds": time.perf_counter() - t0,
    }
    if counts is not None:
        line["effective_counts"] = [round(float(c), 6) for c in counts]
    if report is not None and "accuracy" in report:
        line["accuracy"] = {r: v["overall"] for r, v in report["accuracy"].items()}
    if report is not None:
        p = report["pem"]
        line.update(
            regime=p["regime"],
            report_from=p.get("features_from"),
            **{f"prior_rmse_{k}": m["centered_rmse"] for k, m in p["prior_match"].items()},
            nc1=p["nc1"],
            pem_learned=p["learned"],
            pem_predicted=p["predicted"],
            pem_equilibrium=p["equilibrium"],
            pem_norm_sq=p["mean_norm_sq"],
        )
    return line


def json_lines(metrics: list[dict], written: list[str] | None = None) -> list[str]:
    """Each line of ``metrics`` as JSON; ``written`` holds those of earlier calls and is extended, so that a run that
    rewrites its files every epoch serializes each line once rather than all of them every time."""
    written = [] if written is None else written
    written.extend(json.dumps(line) + "\n" for line in metrics[len(written) :])
    return written


def write_metrics(out: Path, metrics: list[dict], written: list[str] | None = None) -> None:
    """metrics.jsonl, rewritten whole and atomically from the lines the checkpoint holds: never torn, never short."""
    text = "".join(json_lines(metrics, written))
    atomic_write(out / METRICS, lambda tmp: tmp.write_text(text))


class TensorBoardLog:
    """The numeric scalars of each metrics.jsonl line (losses, lr, lambda_s, accuracy per rule, prior RMSEs, NC1), written
    through ``torch.utils.tensorboard`` at step = epoch; lists (per-class values) stay in metrics.jsonl only."""

    def __init__(self, folder: str):
        self.writer = self.writer_class()(log_dir=folder)

    @staticmethod
    def writer_class():
        """torch's SummaryWriter, or a one-line InputError when the tensorboard package it needs is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError(
                "tensorboard: the tensorboard package is not installed (pip install tensorboard)"
            ) from None
        return SummaryWriter

    def write(self, line: dict) -> None:
        def scalars(prefix: str, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    yield from scalars(f"{prefix}/{k}" if prefix else k, v)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                yield prefix, value

        for tag, value in scalars("", {k: v for k, v in line.items() if k != "epoch"}):
            self.writer.add_scalar(tag, value, global_step=line["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
