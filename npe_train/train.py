"""The training core: one loop, config as a dataclass, the data set held as tensors on the device.

    run = train(make_config(dataset="mnist1d", imbalance=100))

Per epoch: shuffle with a seeded generator, SGD steps on CE (or the logit-adjusted
loss) + alpha * the one-way PEM loss, then evaluation, one line of metrics.jsonl,
and an atomic checkpoint. ``resume=True`` continues from the checkpoint and ends
where the uninterrupted run would have.

Batches come from ``pipeline.py`` (the data set on the device, or a standard DataLoader);
either way the epoch's permutation and augmentation draws are made here, on the host,
by one seeded generator. Losses accumulate on the device and are read once per epoch,
so with the device pipeline no step waits for the host.
Launched by ``torchrun`` (WORLD_SIZE > 1) the same loop runs data-parallel (DDP):
every rank draws the same permutation and takes its own interleaved shard, so the
global batch is the single-process batch; rank 0 alone logs and checkpoints, and
evaluation is split across ranks and gathered.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from npe_theory.io import atomic_write, write_json

from .config import TrainConfig
from .data import build
from .evaluate import accuracy_report, predict, prior_report
from .models import build_model
from .pem import heads_loss
from .pipeline import DevicePipeline, LoaderPipeline, draw_augmentation, preparer

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: unknown {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but no CUDA device is available")
    return dev


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Linear warmup over ``warmup_epochs``, then cosine to 0 or x gamma after each milestone."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "step":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a torchrun launch (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(cfg: TrainConfig) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), _device(cfg.device)
    use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size: {cfg.batch_size} does not split over {world} processes")
    return Dist(dist.get_rank(), world), device


def train_step(model, opt, x, y, cfg: TrainConfig, log_prior, use_amp: bool) -> torch.Tensor:
    """One SGD step on CE (or CE(z + tau ln pi) for la_loss) + alpha * PEM loss; returns (loss, ce, pem), detached."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits, heads, _ = model(x)
    logits = logits.float()
    ce = F.cross_entropy(logits + cfg.tau * log_prior if cfg.method == "la_loss" else logits, y)
    pem = heads_loss(heads.float(), y, cfg.pem_loss, validate=False) if heads is not None else torch.zeros((), device=x.device)
    loss = ce + cfg.alpha * pem
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss.detach(), ce.detach(), pem.detach()])


def _gather_rows(parts: tuple[np.ndarray, ...], rank_info: Dist) -> tuple[np.ndarray, ...]:
    """Concatenate every rank's contiguous chunk of each array, in rank order."""
    if rank_info.world == 1:
        return parts
    gathered = [None] * rank_info.world
    dist.all_gather_object(gathered, parts)
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(len(parts)))


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train, evaluate every ``eval_every`` epochs, and write the run folder; returns results.json's content.

    ``stop_after`` returns early after that many epochs, as if the process were killed (for resume tests).
    Under torchrun, ranks other than 0 return ``{"rank": r}``.
    """
    from tqdm.auto import tqdm

    cfg = cfg.resolved()
    rank_info, device = _init_distributed(cfg)
    out, main = Path(cfg.out), rank_info.main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    data = build(cfg.dataset, cfg.imbalance, cfg.profile, cfg.n_max, cfg.seed, cfg.data_dir)
    _seed_all(cfg.seed)  # after the data: building it (or not, when cached) must not move the model's initialization
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.num_pems, cfg.pem_hidden, cfg.pem_detach).to(device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: one permutation, sharded
    prepare = preparer(data.x_train.dtype, device)
    x_train = torch.as_tensor(data.x_train, device=device)  # evaluation reads these whichever pipeline trains
    y_train = torch.as_tensor(data.y_train, device=device)
    x_test = torch.as_tensor(data.x_test, device=device)
    if cfg.pipeline == "device":
        feed = DevicePipeline(x_train, y_train, channels_last)
    else:
        feed = LoaderPipeline(data.x_train, data.y_train, device, channels_last, cfg.workers)
    counts = data.counts
    log_prior = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32, device=device)
    use_amp = cfg.amp if cfg.amp is not None else device.type == "cuda"

    start, ckpt_path, metrics_path = 0, out / CHECKPOINT, out / "metrics.jsonl"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["config"] != asdict(cfg):
            changed = sorted(k for k in asdict(cfg) if ckpt["config"].get(k) != asdict(cfg)[k])
            raise ValueError(f"resume: the run in {out} was made with other settings ({', '.join(changed)})")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        start = ckpt["epoch"] + 1
        if main:
            lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
            metrics_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["epoch"] < start))
    elif main:
        metrics_path.write_text("")
    if main:
        write_json(out / "config.json", asdict(cfg))
    net = model
    if rank_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile != "none":
        # dynamic=False: the full batch and the epoch's last, smaller batch each get kernels specialized
        # to their size (two compilations, no more), rather than a symbolic recompilation on the second size
        net = torch.compile(net, mode=None if cfg.compile == "default" else cfg.compile, dynamic=False)
    # CUDA graphs replay into the same output buffers: each step must be marked as a new one
    cudagraphs = device.type == "cuda" and cfg.compile in ("reduce-overhead", "max-autotune")

    n, t0 = len(y_train), time.perf_counter()
    per_rank_batch = cfg.batch_size // rank_info.world
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not (progress and main), initial=start, total=cfg.epochs)
    report = None
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        draws = draw_augmentation(n, gen) if cfg.augment else None
        padded = -(-n // rank_info.world) * rank_info.world  # every rank takes the same number of steps
        shard = torch.cat([perm, perm[: padded - n]])[rank_info.rank :: rank_info.world]
        if draws is not None:
            draws = torch.cat([draws, draws[: padded - n]])[rank_info.rank :: rank_info.world]
        sums = torch.zeros(3, device=device)  # loss, ce, pem (sample-weighted): read once per epoch
        for x, y in feed.epoch(shard, draws, per_rank_batch):
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            step = train_step(net, opt, x, y, cfg, log_prior, use_amp)
            sums += step * len(y)  # a Python scalar: no host-to-device copy, no wait
        sched.step()
        if rank_info.world > 1:
            dist.all_reduce(sums)
        loss_e, ce_e, pem_e = (sums / (len(shard) * rank_info.world)).tolist()  # equal shards on every rank
        if not all(math.isfinite(v) for v in (loss_e, ce_e, pem_e)):
            raise TrainingDiverged(f"loss became {loss_e} in epoch {epoch + 1}; the last good checkpoint "
                                   f"({'epoch ' + str(epoch) if epoch > 0 else 'none yet'}) is kept in {out}")
        line = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": loss_e, "ce": ce_e, "pem": pem_e, "seconds": time.perf_counter() - t0}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            report = evaluate_run(model, data, cfg, x_train, x_test, prepare, rank_info)
            line.update(accuracy={r: v["overall"] for r, v in report["accuracy"].items()},
                        prior_rmse_vs_log_counts=report["pem"]["prior_match"]["vs_log_counts"]["centered_rmse"],
                        prior_rmse_vs_closed_form=report["pem"]["prior_match"]["vs_closed_form"]["centered_rmse"],
                        nc1=report["pem"]["nc1"], pem_learned=report["pem"]["learned"], pem_predicted=report["pem"]["predicted"])
            bar.set_postfix(loss=f"{loss_e:.3f}", acc=f"{line['accuracy']['npe_la']:.3f}")
        if main:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            atomic_write(ckpt_path, lambda tmp: torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch, "config": asdict(cfg)}, tmp))
        if stop_after is not None and epoch + 1 - start >= stop_after and epoch + 1 < cfg.epochs:
            return {"stopped_after_epoch": epoch}
    bar.close()
    if report is None:  # resumed a finished run
        report = evaluate_run(model, data, cfg, x_train, x_test, prepare, rank_info)
    if not main:
        return {"rank": rank_info.rank}
    results = {"config": asdict(cfg), "counts": counts.tolist(), "epochs": cfg.epochs, "train_seconds": time.perf_counter() - t0,
               "device": str(device), "bf16": use_amp, "world_size": rank_info.world, **report}
    write_json(out / "results.json", results)
    from .plots import plot_run

    plot_run(out, results)
    return results


def evaluate_run(model, data, cfg, x_train, x_test, prepare, rank_info: Dist = Dist()) -> dict:
    """Final-epoch numbers: accuracy per rule on the balanced test set, and the prior comparison on the training set.

    Each rank predicts a contiguous chunk; the chunks are gathered so every rank holds the full arrays.
    """
    bs = max(cfg.batch_size, 256)

    def run(x):
        chunk = np.array_split(np.arange(len(x)), rank_info.world)[rank_info.rank]
        return _gather_rows(predict(model, x[chunk[0] : chunk[-1] + 1] if len(chunk) else x[:0], bs, prepare), rank_info)

    logits, eta, _ = run(x_test)
    acc = accuracy_report(logits, eta, data.y_test, data.counts, cfg.tau, cfg.tau_grid)
    _, eta_tr, feats_tr = run(x_train)
    return {**acc, "pem": prior_report(eta_tr, feats_tr, data.y_train, data.counts, cfg, model.pem.is_linear)}
