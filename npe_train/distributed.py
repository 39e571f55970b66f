"""Where a process stands in a torchrun launch, and gathering arrays across ranks (one process: a no-op)."""
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


def init_distributed(cfg, pick_device) -> tuple[Dist, torch.device]:
    """(rank info, device): one process unless WORLD_SIZE > 1, then a process group (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), pick_device(cfg.device)
    use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise InputError(f"batch_size: {cfg.batch_size} does not split over {world} processes")
    return Dist(dist.get_rank(), world), device


def gather_rows(parts: tuple[np.ndarray, ...], rank_info: Dist) -> tuple[np.ndarray, ...]:
    """Concatenate every rank's contiguous chunk of each array, in rank order."""
    if rank_info.world == 1:
        return parts
    gathered = [None] * rank_info.world
    dist.all_gather_object(gathered, parts)
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(len(parts)))
