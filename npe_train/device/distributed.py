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
from npe_theory.validate import env_threads, usable_cores


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a torchrun launch (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


DEVICE_TYPES = (
    "cpu",
    "cuda",
    "mps",
)  # what the loop runs on; torch knows more (meta, xla, ...) that it cannot


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when there is a device, else the CPU; or the device named: ``cpu``, ``cuda``, ``cuda:N`` (N below
    the device count), or ``mps`` where torch has it. InputError naming ``device`` for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"device: unknown {name!r}; give auto, cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise InputError(
            f"device: {name!r} is a device the training loop does not run on; give auto, cpu, cuda or cuda:N"
        )
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise InputError(f"device: {name!r}: the CPU is one device (give cpu; threads are --threads)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device: cuda asked for, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device: {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError("device: mps asked for, but this torch has no MPS device")
    return dev


MAX_WORLD = 1 << 16  # processes of one launch


def _env_int(var: str, default: int | None, low: int, high: int | None = None) -> int | None:
    """An integer environment variable of a torchrun launch, checked: InputError naming the variable."""
    text = os.environ.get(var)
    if text is None or text.strip() == "":
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < low or (high is not None and int(text) > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{var}: expected an integer {bound} (a torchrun launch sets it), got {text[:40]!r}")
    return int(text)


def launch_env() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) of the environment, each checked; a multi-process launch also needs
    MASTER_ADDR and MASTER_PORT (torchrun sets all five)."""
    world = _env_int("WORLD_SIZE", 1, 1, MAX_WORLD)
    rank = _env_int("RANK", None if world > 1 else 0, 0, world - 1)
    local = _env_int("LOCAL_RANK", 0, 0, MAX_WORLD - 1)
    if world > 1:
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
        if missing:
            raise InputError(
                f"{missing[0]}: WORLD_SIZE is {world} but {', '.join(missing)} not set; start a multi-process run "
                "with torchrun, which sets them"
            )
        _env_int("MASTER_PORT", None, 1, 65535)
    return world, rank, local


def init_distributed(device_name: str, batch_size: int) -> tuple[Dist, torch.device]:
    """(rank info, device): one process unless WORLD_SIZE > 1, then a process group (NCCL on CUDA, else gloo) over
    which the global ``batch_size`` must split evenly."""
    world, _, local = launch_env()
    if world == 1:
        return Dist(), pick_device(device_name)
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if batch_size % world:
        raise InputError(f"batch_size: {batch_size} does not split over {world} processes")
    return Dist(dist.get_rank(), world), device


def _cores() -> int:
    return usable_cores()


def check_workers(workers: int) -> int:
    """DataLoader worker processes, at most the cores this process may use (each is a process holding a copy of the
    data set's reader: more than the cores only compete for them and for memory)."""
    cores = _cores()
    if workers > cores:
        raise InputError(
            f"workers: {workers} DataLoader processes on the {cores} core(s) this process may use; give at most {cores}"
        )
    return workers


def cpu_threads(threads: int | None) -> int:
    """Set the CPU threads of torch and of NumPy's BLAS and return their number: ``threads`` when given; else
    OMP_NUM_THREADS when set; else 1. One is the default because the toolkit's CPU-sized networks gain little from
    more (0.92x the time at 2 threads on 2 idle cores) and lose several times over when the cores are shared
    (3.8x the time at 2 threads on 2 busy cores: OpenMP threads spin-wait on each other; benchmarks/threads.py).
    Results depend on the count: the same seed at another count sums in another order (docs/reliability.md)."""
    cores = _cores()
    source = "threads"
    if threads is None:
        env = env_threads()
        threads, source = (env, "OMP_NUM_THREADS") if env is not None else (1, "threads")
    if threads > cores:  # OpenMP threads beyond the cores spin-wait on each other: a run slows to a near halt
        raise InputError(
            f"{source}: {threads} threads on the {cores} core(s) this process may use would spin-wait on each other "
            f"(a run slows to a near halt); give at most {cores}"
        )
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
