"""Where the per-epoch prior report should run on a GPU machine: the figures that decide it, measured on the device.

    python benchmarks/report_gpu.py                       # cuda when there is one, else the CPU (the plan's baseline)
    python benchmarks/report_gpu.py --classes 1000 --width 2048

Two ways a report can stay off a GPU run's critical path (docs/report.md, "The report at scale"):

1. a background worker on the host: the epoch's feature rows are copied to host memory, and a separate process runs
   the NumPy report while the next epochs train. The run waits only for the copy; the worker keeps up while one
   report takes less than one epoch.
2. the report's arithmetic on the training device in float64 (the class Gram matrices of the equilibrium's Newton
   steps and NC1's projection dominate it): the run waits for it, on a device that does it far faster.

For a long-tailed set of C classes and width d (the sizes of benchmarks/report_scale.py) this prints: the
device-to-host copy of the epoch's features, the NumPy report's CPU seconds, the device's seconds for the dominant
float64 arithmetic, and a training epoch of an MLP of that width on the device; then what each way would block per
epoch. Nothing is written. On a CPU the copy is free and both ways are the NumPy report: the numbers there are the
baseline a GPU run is set against.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_scale  # noqa: E402  (benchmarks/report_scale.py: the data and the training epoch)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_arithmetic(h, y, C: int, device) -> float:
    """Seconds of the report's dominant float64 arithmetic on ``device``: every class's Gram matrix in the cheaper
    form (n_c x n_c when n_c < d + 1, else d x d) and NC1's projection on the C - 1 between-class directions."""
    x = torch.as_tensor(h, device=device)
    labels = torch.as_tensor(y, device=device)
    _sync(device)
    t = time.perf_counter()
    means = torch.zeros(C, x.shape[1], dtype=torch.float64, device=device).index_add_(0, labels, x.double())
    means /= torch.bincount(labels, minlength=C)[:, None]
    order = torch.argsort(labels)
    edges = torch.searchsorted(labels[order], torch.arange(C + 1, device=device)).tolist()
    for c in range(C):
        rows = x[order[edges[c] : edges[c + 1]]].double()
        _ = rows @ rows.T if len(rows) < rows.shape[1] + 1 else rows.T @ rows
    centred = means - means.mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    directions = vt.T / s
    total = torch.zeros((), dtype=torch.float64, device=device)
    for lo in range(0, len(x), 8192):
        part = slice(lo, lo + 8192)
        projected = x[part].double() @ directions - (means @ directions)[labels[part]]
        total += (projected * projected).sum()
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    counts, y, h, own = report_scale.data(args.classes, args.width)
    on_device = torch.as_tensor(h, device=device)
    _sync(device)
    t = time.perf_counter()
    _ = on_device.cpu().numpy()
    copy = time.perf_counter() - t
    _, report_cpu, _ = report_scale.report_seconds(counts, y, h, own)
    arithmetic = device_arithmetic(h, y, args.classes, device)
    epoch = _epoch_on(device, args.width, args.classes, len(y))
    print(f"{args.classes} classes, width {args.width}, {len(y)} samples, device {device}:")
    print(f"  copy of the epoch's features to the host   {copy:8.3f} s")
    print(f"  the NumPy report (host, one thread)        {report_cpu:8.2f} s")
    print(f"  its dominant arithmetic on the device      {arithmetic:8.3f} s")
    print(f"  a training epoch of an MLP of this width   {epoch:8.2f} s")
    keeps = "yes" if report_cpu < epoch else f"no: a report every {int(np.ceil(report_cpu / epoch))} epochs"
    print(
        f"  background worker: blocks {copy:.3f} s an epoch ({copy / epoch:.1%}); keeps up while the report "
        f"({report_cpu:.1f} s) takes less than an epoch ({epoch:.1f} s): {keeps}"
    )
    print(f"  on the device: blocks about {arithmetic:.3f} s an epoch ({arithmetic / epoch:.1%})")


def _epoch_on(device, d: int, C: int, n: int, steps: int = 100, batch: int = 256) -> float:
    """Seconds of one epoch of report_scale's MLP on ``device`` (timed steps, scaled to n samples)."""
    if device.type == "cpu":
        return report_scale.epoch_seconds(d, C, n, steps=steps, batch=batch)
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, d), torch.nn.ReLU())
    head, pem = torch.nn.Linear(d, C), torch.nn.Linear(d, C)
    modules = torch.nn.ModuleList([body, head, pem]).to(device)
    opt = torch.optim.SGD(modules.parameters(), lr=0.01, momentum=0.9)
    x, target = torch.randn(batch, d, device=device), torch.randint(0, C, (batch,), device=device)
    for i in range(steps + 10):
        if i == 10:
            _sync(device)
            t = time.perf_counter()
        out = body(x)
        loss = (
            torch.nn.functional.cross_entropy(head(out), target)
            + torch.nn.functional.softplus(-pem(out).gather(1, target[:, None])).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return (time.perf_counter() - t) / steps * (n / batch)


if __name__ == "__main__":
    main()
