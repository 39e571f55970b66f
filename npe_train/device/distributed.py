"""The device a run uses, its CPU threads, where a process stands in a torchrun launch, and gathering arrays across
ranks (one process: a no-op). Imports: torch, threadpoolctl and ``npe_theory`` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from npe_theory.errors import InputError


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a torchrun launch (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when there is a device, else the CPU; or the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"device: unknown {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda asked for, but no CUDA device is available")
    return dev


def init_distributed(device_name: str, batch_size: int) -> tuple[Dist, torch.device]:
    """(rank info, device): one process unless WORLD_SIZE > 1, then a process group (NCCL on CUDA, else gloo) over
    which the global ``batch_size`` must split evenly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), pick_device(device_name)
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if batch_size % world:
        raise InputError(f"batch_size: {batch_size} does not split over {world} processes")
    return Dist(dist.get_rank(), world), device


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(threads: int | None) -> int:
    """Set the CPU threads of torch and of NumPy's BLAS and return their number: ``threads`` when given; else
    OMP_NUM_THREADS when set; else 1. One is the default because the toolkit's CPU-sized networks gain little from
    more (0.92x the time at 2 threads on 2 idle cores) and lose several times over when the cores are shared
    (3.8x the time at 2 threads on 2 busy cores: OpenMP threads spin-wait on each other; benchmarks/threads.py).
    Results depend on the count: the same seed at another count sums in another order (docs/reliability.md)."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else 1
    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # NumPy / SciPy BLAS of the prior report, for the rest of the process
    return threads


BUSY_SHARE = 1.0  # load average per core above which extra threads cost more than they give
SLOW_EPOCH_S = (
    30.0  # a one-thread epoch this long on an idle machine with cores to spare: more threads may pay
)


def thread_hint(
    threads: int, epoch_seconds: float, load: float | None = None, cores: int | None = None
) -> str | None:
    """One line when the thread count is a likely cause of slowness, else None: more than one thread while the
    1-minute load average exceeds the cores (``BUSY_SHARE``), or one thread on an idle machine (load below half the
    cores) with at least 4 cores and an epoch over ``SLOW_EPOCH_S`` seconds."""
    cores = _cores() if cores is None else cores
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load > BUSY_SHARE * cores:
        return (
            f"threads: this run uses {threads} CPU threads while the machine's load ({load:.1f}) exceeds its {cores} "
            "cores; OpenMP threads then wait on each other and can make a run several times slower: try --threads 1"
        )
    if threads == 1 and cores >= 4 and load < cores / 2 and epoch_seconds > SLOW_EPOCH_S:
        return (
            f"threads: an epoch took {epoch_seconds:.0f} s on one CPU thread with {cores} mostly idle cores; "
            f"--threads {min(cores, 8)} may be faster for a network this size (results then differ in the last digits)"
        )
    return None


def gather_rows(parts: tuple[np.ndarray, ...], rank_info: Dist) -> tuple[np.ndarray, ...]:
    """Concatenate every rank's contiguous chunk of each array, in rank order."""
    if rank_info.world == 1:
        return parts
    gathered = [None] * rank_info.world
    dist.all_gather_object(gathered, parts)
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(len(parts)))
