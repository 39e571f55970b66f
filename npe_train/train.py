"""The training core: one loop, config as a dataclass, the data set held as tensors on the device.

    run = train(make_config(dataset="mnist1d", imbalance=100))

Per epoch: shuffle with a seeded generator, SGD steps on CE (or the logit-adjusted
loss) + alpha * the one-way PEM loss, then evaluation, one line of metrics.jsonl,
and an atomic checkpoint. ``resume=True`` continues from the checkpoint and ends
where the uninterrupted run would have.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import CIFAR_MEAN, CIFAR_STD, build
from .evaluate import accuracy_report, predict, prior_report
from .models import build_model
from .pem import heads_loss

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


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-padded image and a horizontal flip, batched (SPEC's CIFAR recipe)."""
    b, _, hgt, wid = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 9, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(hgt, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(wid, device=x.device))[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _preparer(data, device):
    """uint8 CIFAR images -> normalized float on the device; other data is float already."""
    if data.x_train.dtype != np.uint8:
        return lambda x: x
    mean = torch.tensor(CIFAR_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(CIFAR_STD, device=device)[None, :, None, None]
    return lambda x: (x.float() / 255.0 - mean) / std


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train, evaluate every ``eval_every`` epochs, and write the run folder; returns results.json's content.

    ``stop_after`` ends the process-equivalent of a kill after that many epochs (for resume tests).
    """
    from tqdm.auto import tqdm

    cfg = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.device)
    _seed_all(cfg.seed)
    data = build(cfg.dataset, cfg.imbalance, cfg.profile, cfg.n_max, cfg.seed, cfg.data_dir)
    model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.num_pems, cfg.pem_hidden, cfg.pem_detach).to(device)
    if device.type == "cuda" and len(data.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.seed)
    prepare = _preparer(data, device)
    x_train = torch.as_tensor(data.x_train, device=device)
    y_train = torch.as_tensor(data.y_train, device=device)
    x_test = torch.as_tensor(data.x_test, device=device)
    counts = data.counts
    log_prior = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32, device=device)
    use_amp = cfg.amp and device.type == "cuda"

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
        lines = metrics_path.read_text().splitlines() if metrics_path.exists() else []
        metrics_path.write_text("".join(line + "\n" for line in lines if json.loads(line)["epoch"] < start))
    else:
        metrics_path.write_text("")
    _write_json(out / "config.json", asdict(cfg))

    n, t0 = len(y_train), time.perf_counter()
    bar = tqdm(range(start, cfg.epochs), desc=f"{cfg.dataset} {cfg.method}", disable=not progress, initial=start, total=cfg.epochs)
    report = None
    for epoch in bar:
        model.train()
        sums = torch.zeros(3, device=device)  # loss, ce, pem: accumulated on the device, read once per epoch
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            x, y = prepare(x_train[idx]), y_train[idx]
            if cfg.augment:
                x = _augment(x, gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits, heads, _ = model(x)
            logits, heads = logits.float(), heads.float()
            ce = F.cross_entropy(logits + cfg.tau * log_prior if cfg.method == "la_loss" else logits, y)
            pem = heads_loss(heads, y, cfg.pem_loss, validate=False)
            loss = ce + cfg.alpha * pem
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), ce.detach(), pem.detach()]) * len(y)
        sched.step()
        loss_e, ce_e, pem_e = (sums / n).tolist()
        if not all(math.isfinite(v) for v in (loss_e, ce_e, pem_e)):
            raise TrainingDiverged(f"loss became {loss_e} in epoch {epoch + 1}; the last good checkpoint (epoch {start if epoch == start else epoch}) is kept in {out}")
        line = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "loss": loss_e, "ce": ce_e, "pem": pem_e, "seconds": time.perf_counter() - t0}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            report = evaluate_run(model, data, cfg, x_train, x_test, prepare)
            line.update(accuracy={r: v["overall"] for r, v in report["accuracy"].items()},
                        prior_rmse_vs_log_counts=report["pem"]["prior_match"]["vs_log_counts"]["centered_rmse"],
                        prior_rmse_vs_closed_form=report["pem"]["prior_match"]["vs_closed_form"]["centered_rmse"],
                        nc1=report["pem"]["nc1"], pem_learned=report["pem"]["learned"], pem_predicted=report["pem"]["predicted"])
            bar.set_postfix(loss=f"{loss_e:.3f}", acc=f"{line['accuracy']['npe_la']:.3f}")
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "epoch": epoch, "config": asdict(cfg)}, ckpt_path)
        if stop_after is not None and epoch + 1 - start >= stop_after and epoch + 1 < cfg.epochs:
            return {"stopped_after_epoch": epoch}
    bar.close()
    if report is None:  # resumed a finished run
        report = evaluate_run(model, data, cfg, x_train, x_test, prepare)
    results = {"config": asdict(cfg), "counts": counts.tolist(), "epochs": cfg.epochs, "train_seconds": time.perf_counter() - t0,
               "device": str(device), **report}
    _write_json(out / "results.json", results)
    from .plots import plot_run

    plot_run(out, results)
    return results


def evaluate_run(model, data, cfg, x_train, x_test, prepare) -> dict:
    """Final-epoch numbers: accuracy per rule on the balanced test set, and the prior comparison on the training set."""
    bs = max(cfg.batch_size, 256)
    logits, eta, _ = predict(model, x_test, bs, prepare)
    acc = accuracy_report(logits, eta, data.y_test, data.counts, cfg.tau, cfg.tau_grid)
    _, eta_tr, feats_tr = predict(model, x_train, bs, prepare)
    return {**acc, "pem": prior_report(eta_tr, feats_tr, data.y_train, data.counts, cfg, model.pem.is_linear)}
