"""metrics.jsonl: one line per epoch, what it used and measured (docs/report.md), and its TensorBoard copy.
Imports: ``npe_theory`` only (torch's tensorboard writer lazily)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from npe_theory.errors import InputError
from npe_theory.io import atomic_write, ensure_folder, why

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
    """The numeric scalars of each metrics.jsonl line (losses, lr, lambda_s, accuracy per rule, prior RMSEs, NC1) as a
    TensorBoard event file in ``folder``, at step = epoch; lists (per-class values) stay in metrics.jsonl only.

    The events are written and flushed in this thread, record by record (tensorboard's own record format), not by
    SummaryWriter's background thread: a full disk or a vanished folder is then one OSError naming the event file,
    raised where the run can stop cleanly with its last checkpoint, not a traceback from another thread."""

    def __init__(self, folder: str):
        import os
        import socket

        record_writer, self._event, self._scalar = self.modules()
        folder = ensure_folder(folder)
        self.path = (
            folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.npe"
        )
        self._guarded(lambda: setattr(self, "_file", open(self.path, "ab")))
        self._writer = record_writer(self._file)
        self._record(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    @staticmethod
    def modules():
        """(RecordWriter, Event, scalar summary) of the tensorboard package, or a one-line InputError without it."""
        try:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.summary.writer.record_writer import RecordWriter
            from torch.utils.tensorboard.summary import scalar
        except ImportError:
            raise InputError(
                "tensorboard: the tensorboard package is not installed (pip install tensorboard)"
            ) from None
        return RecordWriter, Event, scalar

    def _guarded(self, act) -> None:
        try:
            act()
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {self.path}: {why(self.path, exc)}") from None

    def _record(self, event) -> None:
        self._guarded(lambda: (self._writer.write(event.SerializeToString()), self._writer.flush()))

    def write(self, line: dict) -> None:
        def scalars(prefix: str, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    yield from scalars(f"{prefix}/{k}" if prefix else k, v)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                yield prefix, value

        for tag, value in scalars("", {k: v for k, v in line.items() if k != "epoch"}):
            event = self._event(wall_time=time.time(), step=line["epoch"], summary=self._scalar(tag, value))
            self._record(event)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:  # a full disk was reported when it happened; closing must not mask that
            pass
