"""The training core: one loop, config as a dataclass, the data set held as tensors on the device.

    run = train(make_config(dataset="mnist1d", imbalance=100))

Per epoch: a seeded order, SGD steps on CE (or the logit-adjusted loss) + alpha * the one-way
PEM loss, then evaluation, one line of metrics.jsonl and an atomic checkpoint. ``resume=True``
continues from the checkpoint and ends where the uninterrupted run would have.

Batches come from ``pipeline.py`` (the data set on the device, or a standard DataLoader); the
epoch's permutation and augmentation draws are made here by one seeded generator. Launched by
``torchrun`` (WORLD_SIZE > 1) the same loop runs data-parallel: every rank draws the same
permutation and takes its own interleaved shard, so the global batch is the single-process
batch; rank 0 alone logs and checkpoints.

Besides the network, the loop keeps the PEM's *trace* for the prior report (docs/regimes.md):
the learning rate of every step, each step's class shares of the loss, the class-mean features
each epoch produced, and the PEM's initial weights, from which the report replays the optimizer
on the PEM alone; ``lambda_s`` in metrics.jsonl is the weight decay the PEM has felt so far.
"""
from __future__ import annotations

import json
import math
import pickle
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from npe_theory.io import atomic_write, write_json

from .config import TrainConfig
from .data import build
from .distributed import Dist, init_distributed
from .evaluate import evaluate_run
from .models import build_model
from .pem import heads_loss
from .pipeline import DevicePipeline, LoaderPipeline, draw_augmentation, preparer
from .results import SCHEMA, environment
from .runfolder import check_fresh, claim
from .trace import felt_decay, new_trace, record_epoch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


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


def training_logits(logits: torch.Tensor, cfg: TrainConfig, log_prior: torch.Tensor) -> torch.Tensor:
    """What CE is taken of: z, or z + tau ln pi for la_loss (the logit-adjusted loss, Bayias)."""
    return logits + cfg.tau * log_prior if cfg.method == "la_loss" else logits


def train_step(model, opt, x, y, cfg: TrainConfig, log_prior, use_amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on CE + alpha * PEM loss; returns ((loss, ce, pem), features), detached."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits, heads, h = model(x)
    ce = F.cross_entropy(training_logits(logits.float(), cfg, log_prior), y)
    pem = heads_loss(heads.float(), y, cfg.pem_loss, validate=False) if heads is not None else torch.zeros((), device=x.device)
    loss = ce + cfg.alpha * pem
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss.detach(), ce.detach(), pem.detach()]), h.detach()


# ---- one epoch ----

def epoch_order(gen: torch.Generator, y_train: np.ndarray, cfg: TrainConfig, rank_info: Dist, num_classes: int):
    """This rank's shard of the epoch's permutation, its augmentation draws, and every global step's class shares.

    Every rank draws the same permutation, padded to a multiple of the world size; global step i
    covers positions [i B, (i + 1) B) of the padded permutation, which is what its shards hold.
    """
    n = len(y_train)
    perm = torch.randperm(n, generator=gen)
    draws = draw_augmentation(n, gen) if cfg.augment else None
    padded = -(-n // rank_info.world) * rank_info.world  # every rank takes the same number of steps
    order = torch.cat([perm, perm[: padded - n]])
    shard = order[rank_info.rank :: rank_info.world]
    if draws is not None:
        draws = torch.cat([draws, draws[: padded - n]])[rank_info.rank :: rank_info.world]
    labels = y_train[order.numpy()]
    batch = cfg.batch_size
    fractions = np.stack([(np.bincount(labels[i : i + batch], minlength=num_classes) / len(labels[i : i + batch])).astype(np.float32)
                          for i in range(0, padded, batch)])
    return shard, draws, fractions


def run_epoch(net, opt, feed, shard, draws, cfg, rank_info: Dist, log_prior, use_amp: bool, cudagraphs: bool, num_classes: int):
    """SGD over one epoch; returns (mean loss, ce, pem) and the class-mean features the steps produced (C, D).

    A step that overflows outright (a learning rate beyond float32) counts as a diverged epoch: infinite losses.
    """
    try:
        return _epoch(net, opt, feed, shard, draws, cfg, rank_info, log_prior, use_amp, cudagraphs, num_classes)
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        return [math.inf] * 3, None


def _epoch(net, opt, feed, shard, draws, cfg, rank_info: Dist, log_prior, use_amp: bool, cudagraphs: bool, num_classes: int):
    device = log_prior.device
    sums = torch.zeros(3, device=device)  # loss, ce, pem (sample-weighted): read once per epoch
    feat_sums, feat_counts = None, torch.zeros(num_classes, device=device)
    for x, y in feed.epoch(shard, draws, cfg.batch_size // rank_info.world):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        step, h = train_step(net, opt, x, y, cfg, log_prior, use_amp)
        sums += step * len(y)
        if feat_sums is None:
            feat_sums = torch.zeros(num_classes, h.shape[1], device=device, dtype=torch.float64)
        feat_sums.index_add_(0, y, h.double())
        feat_counts += torch.bincount(y, minlength=num_classes)
    if rank_info.world > 1:
        for t in (sums, feat_sums, feat_counts):
            dist.all_reduce(t)
    losses = (sums / (len(shard) * rank_info.world)).tolist()
    return losses, (feat_sums / feat_counts.clamp_min(1)[:, None].double()).cpu().numpy()


def epoch_record(epoch: int, lr: float, losses, lam_s: float, t0: float, report: dict | None) -> dict:
    """One line of metrics.jsonl: the rate this epoch used, its losses, lambda_s so far, and the evaluation when there was one."""
    loss, ce, pem = losses
    line = {"epoch": epoch, "lr": lr, "loss": loss, "ce": ce, "pem": pem, "lambda_s": lam_s, "seconds": time.perf_counter() - t0}
    if report is not None:
        p = report["pem"]
        line.update(accuracy={r: v["overall"] for r, v in report["accuracy"].items()}, regime=p["regime"],
                    **{f"prior_rmse_{k}": m["centered_rmse"] for k, m in p["prior_match"].items()},
                    nc1=p["nc1"], pem_learned=p["learned"], pem_predicted=p["predicted"], pem_equilibrium=p["equilibrium"])
    return line


# ---- the checkpoint: written and read side by side ----

def save_checkpoint(path: Path, epoch: int, cfg: TrainConfig, model, opt, sched, gen, trace: dict, metrics: list[dict]) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "epoch": epoch, "config": asdict(cfg), "trace": trace, "metrics": metrics}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, cfg: TrainConfig, model, opt, sched, gen, device) -> tuple[int, dict, list[dict]]:
    """Restore everything ``save_checkpoint`` wrote; returns (the next epoch, the PEM trace, the metrics lines so far)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        saved = ckpt["config"]
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as exc:
        raise ValueError(f"checkpoint: {path} is damaged or not a checkpoint of ours ({type(exc).__name__}); "
                         f"delete it to start the run over") from None
    if saved != asdict(cfg):
        changed = sorted(k for k in asdict(cfg) if saved.get(k) != asdict(cfg)[k])
        raise ValueError(f"resume: the run in {path.parent} was made with other settings ({', '.join(changed)})")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["epoch"] + 1, ckpt["trace"], ckpt["metrics"]


def write_metrics(out: Path, metrics: list[dict]) -> None:
    """metrics.jsonl, rewritten whole and atomically from the lines the checkpoint holds: never torn, never short."""
    atomic_write(out / METRICS, lambda tmp: tmp.write_text("".join(json.dumps(line) + "\n" for line in metrics)))


def open_run(out: Path, cfg: TrainConfig, model, opt, sched, gen, device, resume: bool, main: bool) -> tuple[int, dict, list[dict]]:
    """(first epoch, PEM trace, metrics lines): from the checkpoint when resuming, else fresh in a folder holding no other run."""
    start, trace, metrics = 0, new_trace(model), []
    if resume and (out / CHECKPOINT).exists():
        start, trace, metrics = load_checkpoint(out / CHECKPOINT, cfg, model, opt, sched, gen, device)
    elif main:
        check_fresh(out)
    if main:
        write_metrics(out, metrics)
        write_json(out / "config.json", asdict(cfg))
    return start, trace, metrics


def _wrap(model, cfg: TrainConfig, rank_info: Dist, device):
    net = model
    if rank_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile != "none":
        # dynamic=False: the full batch and the epoch's last, smaller batch each get kernels specialized
        # to their size (two compilations, no more), rather than a symbolic recompilation on the second size
        net = torch.compile(net, mode=None if cfg.compile == "default" else cfg.compile, dynamic=False)
    return net


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train, evaluate every ``eval_every`` epochs, and write the run folder; returns results.json's content.

    The folder belongs to this run while it trains (``runfolder.claim``). Under torchrun, ranks other
    than 0 return ``{"rank": r}``.
    """
    cfg = cfg.resolved()
    rank_info, device = init_distributed(cfg, _device)
    # the data first: a data set that cannot be built leaves no run folder behind
    data = build(cfg.dataset, cfg.imbalance, cfg.profile, cfg.n_max, cfg.seed, cfg.data_dir, image_size=cfg.image_size,
                 test_fraction=cfg.test_fraction)
    with claim(Path(cfg.out), rank_info.main):
        return _train(cfg, data, rank_info, device, resume, progress)


def _train(cfg: TrainConfig, data, rank_info, device, resume: bool, progress: bool) -> dict:
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    _seed_all(cfg.seed)  # after the data: building it (or not, when cached) must not move the model's initialization
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.num_pems, cfg.pem_hidden, cfg.pem_detach, cfg.weights).to(device)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: one permutation, sharded
    x_train = torch.as_tensor(data.x_train, device=device)
    y_train = torch.as_tensor(data.y_train, device=device)
    feed = (DevicePipeline(x_train, y_train, channels_last) if cfg.pipeline == "device"
            else LoaderPipeline(data.x_train, data.y_train, device, channels_last, cfg.workers))
    log_prior = torch.as_tensor(np.log(data.counts / data.counts.sum()), dtype=torch.float32, device=device)
    use_amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    start, trace, metrics = open_run(out, cfg, model, opt, sched, gen, device, resume, rank_info.main)
    net = _wrap(model, cfg, rank_info, device)
    cudagraphs = device.type == "cuda" and cfg.compile in ("reduce-overhead", "max-autotune")  # each step marked as a new one
    evaluate = lambda: evaluate_run(model, data, cfg, x_train, torch.as_tensor(data.x_test, device=device),  # noqa: E731
                                    preparer(data.x_train.dtype, device), trace, rank_info)

    t0, report = time.perf_counter(), None
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not (progress and rank_info.main),
               initial=start, total=cfg.epochs)
    for epoch in bar:
        model.train()
        shard, draws, fractions = epoch_order(gen, data.y_train, cfg, rank_info, data.num_classes)
        lr = opt.param_groups[0]["lr"]  # the rate this epoch uses (the scheduler steps after it)
        losses, means = run_epoch(net, opt, feed, shard, draws, cfg, rank_info, log_prior, use_amp, cudagraphs, data.num_classes)
        sched.step()
        if not all(math.isfinite(v) for v in losses):
            raise TrainingDiverged(f"loss became {losses[0]} in epoch {epoch + 1}; the last good checkpoint "
                                   f"({'epoch ' + str(epoch) if epoch > 0 else 'none yet'}) is kept in {out}")
        record_epoch(trace, lr, fractions, means)
        report = evaluate() if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs else None
        line = epoch_record(epoch, lr, losses, felt_decay(trace, cfg), t0, report)
        if report is not None:
            bar.set_postfix(loss=f"{losses[0]:.3f}", acc=f"{line['accuracy']['npe_la']:.3f}", regime=line["regime"])
        metrics.append(line)
        if rank_info.main:
            save_checkpoint(out / CHECKPOINT, epoch, cfg, model, opt, sched, gen, trace, metrics)
            write_metrics(out, metrics)
    bar.close()
    if report is None:  # resumed a finished run
        report = evaluate()
    if not rank_info.main:
        return {"rank": rank_info.rank}
    results = {"schema": SCHEMA, "config": asdict(cfg), "counts": data.counts.tolist(), "class_names": data.class_names,
               "epochs": cfg.epochs, "train_seconds": time.perf_counter() - t0, "device": str(device), "bf16": use_amp,
               "world_size": rank_info.world, "environment": environment(), **report}
    write_json(out / "results.json", results)
    from .plots import plot_run

    plot_run(out, results)
    return results
