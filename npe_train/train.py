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
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from npe_theory.io import atomic_write, write_json

from .checkpoint import CHECKPOINT, identity, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import build
from .distributed import Dist, init_distributed
from .evaluate import evaluate_run
from .models import build_model
from .pem import heads_loss
from .pipeline import DevicePipeline, LoaderPipeline, draw_augmentation, preparer
from .results import SCHEMA, environment
from .runfolder import check_fresh, claim
from .seg_data import IGNORE, SEG_DATASETS, build_segmentation
from .seg_eval import evaluate_segmentation
from .seg_models import build_seg_model, pixel_features
from .stream import draw_stream, parse_schedule, pool_by_class, stale_counts, stream_counts
from .trace import felt_decay, new_trace, record_epoch
from npe_theory.errors import InputError

METRICS = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"device: unknown {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda asked for, but no CUDA device is available")
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
    """What CE is taken of: z, or z + tau ln pi for la_loss (the logit-adjusted loss, Bayias), per pixel for (B, C, H, W)."""
    if cfg.method != "la_loss":
        return logits
    return logits + cfg.tau * log_prior.view(1, -1, *([1] * (logits.dim() - 2)))


def train_step(model, opt, x, y, cfg: TrainConfig, log_prior, use_amp: bool, mix=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on CE + alpha * PEM loss; returns ((loss, ce, pem), features), detached.

    ``mix = (y2, xi)``: x is a mixed batch and every loss is xi l(y) + (1 - xi) l(y2) per sample (UniMix).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits, heads, h = model(x)
    z = training_logits(logits.float(), cfg, log_prior)
    if mix is None:
        ce = F.cross_entropy(z, y)
        pem = heads_loss(heads.float(), y, cfg.pem_loss, validate=False) if heads is not None else None
    else:
        pairs = ((y, mix[1]), (mix[0], 1.0 - mix[1]))
        ce = sum((w * F.cross_entropy(z, t, reduction="none")).mean() for t, w in pairs)
        pem = sum(heads_loss(heads.float(), t, cfg.pem_loss, validate=False, weight=w) for t, w in pairs) if heads is not None else None
    pem = pem if pem is not None else torch.zeros((), device=x.device)
    loss = ce + cfg.alpha * pem
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return torch.stack([loss.detach(), ce.detach(), pem.detach()]), h.detach()


# ---- one epoch ----

@dataclass
class EpochPlan:
    """One epoch, drawn before it starts: this rank's samples in order and what goes with them.

    ``fractions`` (steps, C): every global step's class shares of the loss; ``counts`` (C,): the
    epoch's effective class counts (each sample's loss weight summed per class). With UniMix,
    ``partner`` and ``partner_draws`` are the shard's partners and ``xi`` its mixing factors.
    """

    shard: torch.Tensor
    draws: torch.Tensor | None
    fractions: np.ndarray
    counts: np.ndarray
    partner: torch.Tensor | None = None
    partner_draws: torch.Tensor | None = None
    xi: torch.Tensor | None = None


def mixing(cfg: TrainConfig, epoch: int) -> bool:
    """UniMix is on in this epoch."""
    return cfg.mix == "unimix" and (cfg.mix_until is None or epoch < cfg.mix_until)


def epoch_order(gen: torch.Generator, y_train: np.ndarray, cfg: TrainConfig, rank_info: Dist, num_classes: int,
                epoch: int = 0, counts: np.ndarray | None = None, subset: np.ndarray | None = None) -> EpochPlan:
    """This rank's shard of the epoch's permutation, its augmentation draws, every global step's class shares, and
    with UniMix each sample's partner (from the same rank's batch) and mixing factor.

    Every rank draws the same permutation, padded to a multiple of the world size; global step i
    covers positions [i B, (i + 1) B) of the padded permutation, which is what its shards hold.
    ``subset``: the epoch's samples (a shifting stream's draw from the pool; default all); ``counts``:
    the class counts UniMix draws partners by.
    """
    n = len(y_train) if subset is None else len(subset)
    perm = torch.randperm(n, generator=gen)
    if subset is not None:
        perm = torch.as_tensor(subset, dtype=torch.int64)[perm]
    draws = draw_augmentation(n, gen) if cfg.augment else None
    padded = -(-n // rank_info.world) * rank_info.world  # every rank takes the same number of steps
    order = torch.cat([perm, perm[: padded - n]])
    if draws is not None:
        draws = torch.cat([draws, draws[: padded - n]])
    labels = y_train[order.numpy()]
    # per position: its loss weight on each class (rows) and its number of loss terms (terms)
    if labels.ndim > 1:  # segmentation: every valid pixel is a loss term of its class
        mix = False
        rows = np.stack([np.bincount(r[r != IGNORE], minlength=num_classes) for r in labels.reshape(padded, -1)]).astype(np.float64)
        terms = rows.sum(1)
    else:  # one term per sample, split between its label and, under UniMix, its partner's
        weight = np.ones(padded)  # the share of the sample's own label
        partner_pos = np.arange(padded)
        mix = mixing(cfg, epoch)
        if mix:
            from .unimix import mix_batch

            count_t = torch.as_tensor(counts, dtype=torch.float64)
            local = cfg.batch_size // rank_info.world
            for r in range(rank_info.world):  # each rank mixes within its own local batches
                mine = np.arange(r, padded, rank_info.world)
                for i in range(0, len(mine), local):
                    pos = mine[i : i + local]
                    partner, xi = mix_batch(labels[pos], count_t, cfg.mix_tau, cfg.mix_a, gen)
                    partner_pos[pos], weight[pos] = pos[partner], xi.astype(np.float32)  # the weights the float32 steps use
        rows = np.zeros((padded, num_classes))
        np.add.at(rows, (np.arange(padded), labels), weight)
        np.add.at(rows, (np.arange(padded), labels[partner_pos]), 1.0 - weight)
        terms = np.ones(padded)
    batch = cfg.batch_size
    fractions = np.stack([(rows[i : i + batch].sum(0) / max(terms[i : i + batch].sum(), 1)).astype(np.float32)
                          for i in range(0, padded, batch)])
    mine = slice(rank_info.rank, None, rank_info.world)
    plan = EpochPlan(order[mine], None if draws is None else draws[mine], fractions, rows[:n].sum(0))
    if mix:
        plan.partner = order[torch.from_numpy(partner_pos)][mine]
        plan.partner_draws = None if draws is None else draws[torch.from_numpy(partner_pos)][mine]
        plan.xi = torch.from_numpy(weight[mine].astype(np.float32))
    return plan


def run_epoch(net, opt, feed, plan: EpochPlan, cfg, rank_info: Dist, log_prior, use_amp: bool, cudagraphs: bool, num_classes: int):
    """SGD over one epoch; returns (mean loss, ce, pem) and the class-mean features the steps produced (C, D).

    A step that overflows outright (a learning rate beyond float32) counts as a diverged epoch: infinite losses.
    """
    try:
        return _epoch(net, opt, feed, plan, cfg, rank_info, log_prior, use_amp, cudagraphs, num_classes)
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        return [math.inf] * 3, None


def _batches(feed, plan: EpochPlan, local: int):
    """(x, y, mix) per local batch: mix is None, or (y2, xi) with x already mixed."""
    if plan.partner is None:
        for x, y in feed.epoch(plan.shard, plan.draws, local):
            yield x, y, None
        return
    # each local batch followed by its partners, fetched as one batch of twice the size and split
    chunks = [(plan.shard[i : i + local], plan.partner[i : i + local]) for i in range(0, len(plan.shard), local)]
    both = torch.cat([torch.cat(c) for c in chunks])
    both_draws = None
    if plan.draws is not None:
        both_draws = torch.cat([torch.cat([plan.draws[i : i + local], plan.partner_draws[i : i + local]])
                                for i in range(0, len(plan.shard), local)])
    sizes = [2 * len(c[0]) for c in chunks]
    start = 0
    for (x, y), size in zip(feed.epoch(both, both_draws, 2 * local), sizes):
        half = size // 2
        xi = plan.xi[start // 2 : start // 2 + half].to(x.device)
        start += size
        mixed = xi.view(-1, *([1] * (x.dim() - 1))) * x[:half] + (1 - xi).view(-1, *([1] * (x.dim() - 1))) * x[half:]
        yield mixed, y[:half], (y[half:], xi)


def _epoch(net, opt, feed, plan: EpochPlan, cfg, rank_info: Dist, log_prior, use_amp: bool, cudagraphs: bool, num_classes: int):
    device = log_prior.device
    sums = torch.zeros(3, device=device)  # loss, ce, pem (sample-weighted): read once per epoch
    feat_sums, feat_counts = None, torch.zeros(num_classes, device=device, dtype=torch.float64)
    for x, y, mix in _batches(feed, plan, cfg.batch_size // rank_info.world):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        step, h = train_step(net, opt, x, y, cfg, log_prior, use_amp, mix)
        sums += step * len(y)
        if feat_sums is None:
            feat_sums = torch.zeros(num_classes, h.shape[1], device=device, dtype=torch.float64)
        # each label's class mean, weighted by its share of the sample's loss (1 without mixing)
        if y.dim() > 1:  # segmentation: the valid pixels, with their features at the label's resolution
            h = pixel_features(h, y.shape[-2:]).movedim(1, -1).reshape(-1, h.shape[1])
            y = y.reshape(-1)
            h, y = h[y != IGNORE], y[y != IGNORE]
        pairs = [(y, torch.ones(len(y), device=device))] if mix is None else [(y, mix[1]), (mix[0], 1.0 - mix[1])]
        for t, w in pairs:
            feat_sums.index_add_(0, t, h.double() * w.double()[:, None])
            feat_counts.index_add_(0, t, w.double())
    if rank_info.world > 1:
        for t in (sums, feat_sums, feat_counts):
            dist.all_reduce(t)
    losses = (sums / (len(plan.shard) * rank_info.world)).tolist()
    return losses, (feat_sums / feat_counts.clamp_min(1e-12)[:, None]).cpu().numpy()


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


# ---- the run folder's files ----

def write_metrics(out: Path, metrics: list[dict]) -> None:
    """metrics.jsonl, rewritten whole and atomically from the lines the checkpoint holds: never torn, never short."""
    atomic_write(out / METRICS, lambda tmp: tmp.write_text("".join(json.dumps(line) + "\n" for line in metrics)))


def open_run(out: Path, cfg: TrainConfig, model, opt, sched, gen, device, resume: bool, main: bool,
             num_classes: int, num_samples: int) -> tuple[int, dict, list[dict]]:
    """(first epoch, PEM trace, metrics lines): from the checkpoint when resuming, else fresh in a folder holding no
    other run (or, with ``resume``, one killed before its first checkpoint: it starts over)."""
    start, trace, metrics = 0, new_trace(model), []
    if resume and (out / CHECKPOINT).exists():
        start, trace, metrics = load_checkpoint(out / CHECKPOINT, cfg, model, opt, sched, gen, device, num_classes, num_samples)
    elif main:
        check_fresh(out, identity(asdict(cfg)) if resume else None)
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
    if cfg.dataset in SEG_DATASETS:
        data = build_segmentation(cfg.dataset, cfg.seed, cfg.data_dir, cfg.image_size, cfg.imbalance, cfg.n_max)
    else:  # a shifting stream draws from a pool of n_max samples of every class (imbalance 1)
        data = build(cfg.dataset, 1.0 if cfg.shift else cfg.imbalance, cfg.profile, cfg.n_max, cfg.seed, cfg.data_dir,
                     image_size=cfg.image_size, test_fraction=cfg.test_fraction)
    shifts = parse_schedule(cfg.shift, cfg.epochs)
    for epoch in [0] + [s.epoch for s in shifts] if shifts else []:  # every profile of the stream must fit the pool, before a folder is made
        try:
            stream_counts(cfg.profile, cfg.imbalance, shifts, epoch, data.num_classes, int(data.counts.max()))
        except InputError as exc:
            raise InputError(f"shift: the stream of epoch {epoch} does not fit the pool ({exc})") from None
    _seed_all(cfg.seed)  # after the data: building it (or not, when cached) must not move the model's initialization
    # the network before the folder too: one that cannot be built (a missing torchvision, bad weights) leaves none behind
    model = (build_seg_model if cfg.dataset in SEG_DATASETS else build_model)(
        cfg.model, data.input_shape, data.num_classes, cfg.num_pems, cfg.pem_hidden, cfg.pem_detach, cfg.weights).to(device)
    with claim(Path(cfg.out), rank_info.main):
        return _train(cfg, data, model, shifts, rank_info, device, resume, progress)


def _train(cfg: TrainConfig, data, model, shifts, rank_info, device, resume: bool, progress: bool) -> dict:
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    dense = cfg.dataset in SEG_DATASETS
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: one permutation, sharded
    x_train = torch.as_tensor(data.x_train, device=device)
    y_train = torch.as_tensor(data.y_train, device=device)
    x_test, prepare = torch.as_tensor(data.x_test, device=device), preparer(data.x_train.dtype, device)  # for every evaluation
    feed = (DevicePipeline(x_train, y_train, channels_last) if cfg.pipeline == "device"
            else LoaderPipeline(data.x_train, data.y_train, device, channels_last, cfg.workers))
    log_prior = torch.as_tensor(np.log(data.counts / data.counts.sum()), dtype=torch.float32, device=device)
    use_amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    start, trace, metrics = open_run(out, cfg, model, opt, sched, gen, device, resume, rank_info.main, data.num_classes, len(data.y_train))
    net = _wrap(model, cfg, rank_info, device)
    cudagraphs = device.type == "cuda" and cfg.compile in ("reduce-overhead", "max-autotune")  # each step marked as a new one
    pool = pool_by_class(data.y_train, data.num_classes) if shifts else None
    n_max = int(data.counts.max())

    def counts_at(epoch: int) -> np.ndarray:  # the class counts the stream draws in this epoch
        return stream_counts(cfg.profile, cfg.imbalance, shifts, epoch, data.num_classes, n_max) if shifts else data.counts

    def evaluate(epoch: int) -> dict:
        if dense:
            return evaluate_segmentation(model, data, cfg, x_train, x_test, prepare, trace)
        stream = trace.get("stream") or {}
        return evaluate_run(model, data, cfg, x_train, x_test, prepare, trace, rank_info, counts=counts_at(epoch),
                            report_counts=stream.get("counts"), train_index=stream.get("index"), stale_counts=stale_counts(cfg.profile, cfg.imbalance, shifts, epoch, data.num_classes, n_max) if shifts else None)

    t0, report = time.perf_counter(), None
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not (progress and rank_info.main),
               initial=start, total=cfg.epochs)
    for epoch in bar:
        model.train()
        now = counts_at(epoch)
        subset = draw_stream(gen, pool, now) if shifts else None
        if shifts:  # la_loss adjusts by the stream's current prior
            log_prior = torch.as_tensor(np.log(now / now.sum()), dtype=torch.float32, device=device)
        plan = epoch_order(gen, data.y_train, cfg, rank_info, data.num_classes, epoch, now, subset)
        lr = opt.param_groups[0]["lr"]  # the rate this epoch uses (the scheduler steps after it)
        losses, means = run_epoch(net, opt, feed, plan, cfg, rank_info, log_prior, use_amp, cudagraphs, data.num_classes)
        sched.step()
        if not all(math.isfinite(v) for v in losses):
            raise TrainingDiverged(f"loss became {losses[0]} in epoch {epoch + 1}; the last good checkpoint "
                                   f"({'epoch ' + str(epoch) if epoch > 0 else 'none yet'}) is kept in {out}")
        record_epoch(trace, lr, plan.fractions, means)
        trace["stream"] = {"index": subset, "counts": plan.counts}  # what the report reads the PEM against
        report = evaluate(epoch) if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs else None
        line = epoch_record(epoch, lr, losses, felt_decay(trace, cfg), t0, report, plan.counts)
        if report is not None:
            bar.set_postfix(loss=f"{losses[0]:.3f}", acc=f"{line['accuracy']['npe_la']:.3f}", regime=line["regime"])
        metrics.append(line)
        if rank_info.main:
            save_checkpoint(out / CHECKPOINT, epoch, cfg, model, opt, sched, gen, trace, metrics)
            write_metrics(out, metrics)
    bar.close()
    if report is None:  # resumed a finished run
        report = evaluate(cfg.epochs - 1)
    if not rank_info.main:
        return {"rank": rank_info.rank}
    results = {"schema": SCHEMA, "config": asdict(cfg), "counts": counts_at(cfg.epochs - 1).tolist(), "class_names": data.class_names,
               "epochs": cfg.epochs, "train_seconds": time.perf_counter() - t0, "device": str(device), "bf16": use_amp,
               "world_size": rank_info.world, "environment": environment(), **report}
    if shifts:
        from .adaptation import adaptation_report

        results["stream"] = {"pool_counts": data.counts.tolist(), "shifts": [str(s) for s in shifts],
                             "counts_per_epoch": [counts_at(e).tolist() for e in range(cfg.epochs)]}
        adaptation = adaptation_report(metrics, cfg, shifts)
        results["adaptation"], results["adaptation_series"] = adaptation["shifts"], adaptation["series"]
    write_json(out / "results.json", results)
    from .plots import plot_run

    plot_run(out, results)
    if dense:
        from .plots import plot_pem_map

        plot_pem_map(out / "pem_map.png", model, data, prepare, device)
    return results
