"""The training loop: one path for every task and method, config as a dataclass, the data set held as tensors on the device.

    run = train(make_config(dataset="mnist1d", imbalance=100))

Per epoch: the stream's samples and a seeded plan, SGD steps on the objective (CE or the
logit-adjusted loss, + alpha * the one-way PEM loss), then evaluation by the task, one line of
metrics.jsonl and an atomic checkpoint. ``resume=True`` continues from the checkpoint and ends
where the uninterrupted run would have. ``loop/build.py`` turns the config into the objects used
here; nothing below asks for a data set's or a method's name.

Launched by ``torchrun`` (WORLD_SIZE > 1) the same loop runs data-parallel: every rank draws the
same permutation and takes its own interleaved shard, so the global batch is the single-process
batch; rank 0 alone logs and checkpoints.

Besides the network, the loop keeps the PEM's *trace* for the prior report (docs/regimes.md): each
epoch's learning rate and number of steps, the PEM's initial weights, and the state of its replay, which advances
the optimizer on the PEM alone with each step's own feature rows and class shares; ``lambda_s`` in metrics.jsonl
is the weight decay the PEM has felt so far.
Imports: every layer below it (``data/``, ``models/``, ``methods/``, ``tasks/``, ``run/``, ``device/``).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from npe_theory.io import write_json

from ..data.image_list import on_device
from ..data.pipeline import DevicePipeline, LoaderPipeline, preparer
from ..device.distributed import check_workers, cpu_threads, init_distributed, thread_hint
from ..methods.feature_sample import EpochOutputs
from ..methods.trace import epoch_replay, felt_decay
from ..models.pem import check_pem_decay
from ..run.checkpoint import CHECKPOINT, Trainables, save_checkpoint
from ..run.config import TrainConfig
from ..run.metrics import TensorBoardLog, epoch_record, json_lines, write_metrics
from ..run.results import SCHEMA, environment
from ..run.runfolder import claim, open_run
from ..tasks.base import Held
from ..tasks.forecast import forecast_epochs, forecast_now, score, warning_line
from ..tasks.prior import fit_status, mark_underfit
from ..tasks.rules import rule_spec
from .build import (
    build_data,
    build_mixing,
    build_network,
    build_objective,
    build_optimizer,
    build_schedule,
    build_stages,
    build_task,
    lr_factor,
    pem_recipe,
    planned_steps,
    reach_equilibrium,
    report_every,
    run_label,
)
from .step import StepContext, epoch_plan, run_epoch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _wrap(model, compile_mode: str, rank_info, device):
    net = model
    if rank_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile_mode != "none":
        # dynamic=False: the full batch and the epoch's last, smaller batch each get kernels specialized
        # to their size (two compilations, no more), rather than a symbolic recompilation on the second size
        net = torch.compile(net, mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    return net


def subset_record(data, generator: str) -> dict | None:
    """Which source samples the run trained on: their indices, a SHA-256 of them (int64, little-endian) to compare
    subsets across runs and toolkits at a glance, and the generator that drew them."""
    if data.train_index is None:
        return None
    index = np.asarray(data.train_index, dtype="<i8")
    return {
        "generator": generator,
        "sha256": hashlib.sha256(index.tobytes()).hexdigest(),
        "size": int(index.size),
        "index": index.tolist(),
    }


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, task=None, datasets=None) -> dict:
    """Train, report on the PEM every epoch, evaluate on the test set every ``eval_every`` epochs (0: the last only), and
    write the run folder; returns results.json's content.

    ``task``: a task object (``tasks/base.py``) to use instead of the one the data set implies.
    ``datasets``: your own ``(train, test)`` or ``(train, test, validation)`` torch Datasets of
    ``(input, label)`` items, with ``dataset="torch"`` (samples are read as batches need them). The
    folder belongs to this run while it trains (``runfolder.claim``). Under torchrun, ranks other
    than 0 return ``{"rank": r}``.
    """
    cfg = cfg.resolved()
    cpu_threads(cfg.threads)
    rank_info, device = init_distributed(cfg.device, cfg.batch_size)
    # the data, its stream and the network first: one that cannot be built leaves no run folder behind
    data = build_data(cfg, datasets)
    cfg, stream = build_schedule(
        cfg, data, rank_info.world
    )  # the weight decay of --target-lambda-s needs the steps
    _seed_all(
        cfg.seed
    )  # after the data: building it (or not, when cached) must not move the model's initialization
    model = build_network(cfg, data).to(device)
    task = build_task(cfg) if task is None else task
    if cfg.tensorboard:
        TensorBoardLog.modules()  # a missing package is said before the run folder exists
    with claim(Path(cfg.out), rank_info.main):
        return _train(cfg, data, model, task, stream, (rank_info, device), resume, progress)


def _train(cfg: TrainConfig, data, model, task, stream, place, resume: bool, progress: bool) -> dict:
    from tqdm.auto import tqdm

    rank_info, device = place  # this process's rank and its device
    out = Path(cfg.out)
    channels_last = device.type == "cuda" and len(data.input_shape) == 3
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = build_optimizer(cfg, model)
    check_pem_decay(opt, model)  # the report assumes it; a custom optimizer builder must keep it
    recipe = pem_recipe(cfg)  # how the PEM trains: its replay advances with it (methods/trace.py)
    objective, mixing = build_objective(cfg, data.counts), build_mixing(cfg)
    stages = build_stages(cfg)  # a two-stage method's hooks (methods/stages.py), or None
    gen = torch.Generator().manual_seed(cfg.seed)  # the same on every rank: one permutation, sharded
    x_train = on_device(data.x_train, device)
    held = Held(
        data, x_train, on_device(data.x_test, device), preparer(data.x_train.dtype, device), rank_info
    )
    feed = (
        DevicePipeline(x_train, torch.as_tensor(data.y_train, device=device), channels_last)
        if cfg.pipeline == "device"
        else LoaderPipeline(data.x_train, data.y_train, device, channels_last, check_workers(cfg.workers))
    )
    use_amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    parts = Trainables(model, opt, sched, gen)
    start, trace, metrics = open_run(
        out, cfg, parts, device, resume, rank_info.main, data.num_classes, len(data.y_train)
    )
    net = _wrap(model, cfg.compile, rank_info, device)
    cudagraphs = device.type == "cuda" and cfg.compile in (
        "reduce-overhead",
        "max-autotune",
    )  # each step marked as a new one
    ctx = StepContext(
        task=task,
        mixing=mixing,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
        rank_info=rank_info,
        num_classes=data.num_classes,
        net=net,
        opt=opt,
        feed=feed,
        objective=objective,
        use_amp=use_amp,
        cudagraphs=cudagraphs,
        after_step=None if stages is None else lambda: stages.after_step(model),
    )

    board = TensorBoardLog(cfg.tensorboard) if cfg.tensorboard and rank_info.main else None
    every = report_every(cfg, data, model)
    step_report = getattr(task, "step_report", None)  # optional: a task may report only at its evaluations
    width = getattr(model, "feature_dim", None) if step_report is not None else None
    foreseen = (
        set(forecast_epochs(cfg.forecast_at, cfg.epochs)) if width is not None and not cfg.lean else set()
    )  # a forecast starts from the replay's PEM state, which a lean run does not keep
    steps_planned = planned_steps(stream, cfg.batch_size, rank_info.world, cfg.epochs) if foreseen else []
    done = float(metrics[-1].get("seconds", 0.0)) if metrics else 0.0  # the earlier segments of a resumed run
    t0, report, written = (
        time.perf_counter() - done,  # seconds in metrics.jsonl and train_seconds count every segment
        None,
        [],
    )  # written: metrics.jsonl's lines as JSON, each serialized once
    told = False  # whether the run was told that its epochs are too large for the per-epoch report
    bar = tqdm(
        range(start, cfg.epochs),
        desc=run_label(cfg),
        disable=not (progress and rank_info.main),
        initial=start,
        total=cfg.epochs,
    )
    for epoch in bar:
        model.train()
        if stages is not None:
            stages.start_epoch(epoch, model, opt)
        now = stream.counts_at(epoch)
        subset = stream.draw(gen, epoch)
        state = objective.at_epoch(
            epoch, now, device
        )  # what the method's loss reads: the current prior, a re-weighting
        plan = epoch_plan(gen, data.y_train, ctx, epoch, now, subset)
        lr = opt.param_groups[-1]["lr"]  # the PEM's rate this epoch (the scheduler steps after it)
        evaluated = (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or epoch + 1 == cfg.epochs
        reported = (epoch + 1) % every == 0  # the per-epoch report's cadence (evaluations always report)
        keep = width is not None and ((reported and not evaluated) or epoch in foreseen)
        outputs = EpochOutputs(len(plan.shard), width) if keep else None
        if outputs is not None and outputs.too_large and rank_info.main and not told:
            told = True  # once: every epoch of the run is as large
            warnings.warn(outputs.why_skipped(), stacklevel=2)
        began = time.perf_counter()
        replay = None if cfg.lean else epoch_replay(trace, recipe, lr, plan.fractions)
        losses = run_epoch(ctx, plan, state, replay, outputs)
        sched.step()
        if (
            epoch == start and device.type == "cpu" and rank_info.main
        ):  # once: is the thread count slowing it?
            hint = thread_hint(torch.get_num_threads(), time.perf_counter() - began)
            if hint:
                warnings.warn(hint, stacklevel=2)
        if not all(math.isfinite(v) for v in losses):
            raise TrainingDiverged(
                f"loss became {losses[0]} in epoch {epoch + 1}; the last good checkpoint "
                f"({'epoch ' + str(epoch) if epoch > 0 else 'none yet'}) is kept in {out}"
            )
        trace.record_epoch(lr, len(plan.fractions))
        trace.stream = {"index": subset, "counts": plan.counts}  # what the report reads the PEM against
        if evaluated:
            report = task.evaluate(model, held, trace, stream.now(epoch, trace))
        else:  # the prior report from the outputs the steps computed: no forward pass (a task without it reports at evaluations)
            report = (
                step_report(model, held, trace, stream.now(epoch, trace), outputs)
                if outputs is not None and reported
                else None
            )
        forecast, felt = None, felt_decay(trace, cfg.pem_weight_decay, cfg.momentum)  # lambda*s so far
        if epoch in foreseen and rank_info.main:  # where the PEM is headed, while the recipe can still change
            left = [
                cfg.lr * lr_factor(cfg, e)
                for e in range(epoch + 1, cfg.epochs)
                for _ in range(steps_planned[e])
            ]
            history = [
                (m["epoch"], m.get("pem_norm_sq")) for m in metrics
            ]  # earlier lines: how fast features grow
            forecast = forecast_now(outputs, trace, recipe, stream.counts_at(epoch), left, felt, history)
            if forecast is not None:
                if progress:
                    bar.write(warning_line(epoch, cfg.epochs, forecast))
                bar.set_postfix(forecast=forecast["regime"] or "made")
        line = epoch_record(epoch, lr, losses, felt, t0, report, plan.counts)
        if forecast is not None:
            line["forecast"] = forecast
        if report is not None:
            shown = {"npe_la_acc": f"{line['accuracy']['npe_la']:.3f}"} if "accuracy" in line else {}
            bar.set_postfix(loss=f"{losses[0]:.3f}", **shown, regime=line["regime"])
        metrics.append(line)
        if rank_info.main:
            save_checkpoint(out / CHECKPOINT, epoch, cfg, parts, trace, metrics, json_lines(metrics, written))
            write_metrics(out, metrics, written)
            if board is not None:
                board.write(line)
    bar.close()
    if board is not None:
        board.close()
    if report is None:  # resumed a finished run
        report = task.evaluate(model, held, trace, stream.now(cfg.epochs - 1, trace))
    if not rank_info.main:
        return {"rank": rank_info.rank}
    fit = fit_status(metrics, stream.counts_at(cfg.epochs - 1))
    mark_underfit(report["pem"], fit)
    results = {
        "fit": fit,
        "train_subset": subset_record(data, cfg.lt_generator),
        "schema": SCHEMA,
        "config": asdict(cfg),
        "counts": stream.counts_at(cfg.epochs - 1).tolist(),
        "class_names": data.class_names,
        "epochs": cfg.epochs,
        "report_every": every,  # the per-epoch report's cadence used (the config's None: by cost)
        "train_seconds": metrics[-1]["seconds"]
        if metrics
        else 0.0,  # training and its reports, not this resume's start
        "device": str(device),
        "bf16": use_amp,
        "world_size": rank_info.world,
        "environment": environment(),
        **report,
        **stream.results(metrics),
    }
    made = [(m["epoch"], m["forecast"]) for m in metrics if isinstance(m.get("forecast"), dict)]
    if made and "pem" in results and results["pem"].get("learned") is not None:
        results["pem"]["forecast"] = score(
            made, results["pem"]["learned"], results["pem"]["mean_norm_sq"], results["counts"], cfg.epochs
        )
    results["advice"] = {
        **task.advise(model, held, report),
        "recipe": reach_equilibrium(cfg, trace.steps, report["pem"]["lambda_s"]),
    }
    if "priors" in report:  # classification: the rule to use at inference, as a file (docs/metrics.md)
        best = results["advice"].get("best") or {"rule": "npe_la", "tau": cfg.tau}
        write_json(out / "rule.json", rule_spec(best["rule"], best["tau"] or 0.0, report["priors"]))
        results["advice"]["rule_file"] = "rule.json"
    write_json(out / "results.json", results)
    if not cfg.lean:  # a lean run leaves its figures to npe plot
        from ..run.plots import plot_run

        plot_run(out, results)
        task.figures(out, model, held)
    return results
