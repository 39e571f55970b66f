"""What `npe train` costs beside a plain PyTorch loop on the same model, data and schedule, measured side by side.

    OMP_NUM_THREADS=1 python benchmarks/loop_overhead.py [--epochs 200] [--repeats 2] [--eval-every 0]
    OMP_NUM_THREADS=1 python benchmarks/loop_overhead.py --dataset digits100 --epochs 30   # 100 classes

Both train the main job's network (MNIST-1D-LT, the 1-D CNN with its PEM, CE + alpha * the one-way loss) with the same
SGD, weight decay and learning-rate schedule for ``--epochs`` epochs. The plain loop shuffles, steps and evaluates the
test set once, at the end. ``npe train`` runs with its defaults: the prior report every epoch (from the steps' own
feature rows), the replay advancing with the steps, a checkpoint and a metrics line every epoch, the test-set evaluation
at the end (``--eval-every``), results.json and the figures. Prints the CPU-time ratio (target: at most 1.3x at 200
epochs), the breakdown of `npe train`'s time, the growth exponent of the replay's and the per-epoch report's cost in
the epochs (cumulative cost at E against E/2: 1 is linear), and the machine's load; the forecasts' share (target: at
most 2%). Best of ``--repeats``, alternating.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
from timing import timed  # benchmarks/timing.py

import npe_train.loop.train as train_mod
import npe_train.methods.trace as trace_mod
import npe_train.run.plots as plots
import npe_train.tasks.classification as classification
from npe_train.data.pipeline import DevicePipeline
from npe_train.device.distributed import Dist
from npe_train.loop.build import (
    build_data,
    build_mixing,
    build_network,
    build_objective,
    build_optimizer,
    build_schedule,
    build_task,
)
from npe_train.loop.step import StepContext, epoch_plan, run_epoch
from npe_train.run.config import make_config


def _setup(cfg):
    """The plain loop's parts, built as npe train builds them."""
    cfg = cfg.resolved()
    data = build_data(cfg)
    cfg, _ = build_schedule(cfg, data, 1)  # the weight decay npe train's default (lambda*s = 1.5) picks
    torch.manual_seed(cfg.seed)
    model = build_network(cfg, data)
    opt, sched = build_optimizer(cfg, model)
    objective = build_objective(cfg, data.counts)
    return cfg, data, model, opt, sched, objective, objective.at_epoch(0, data.counts, "cpu")


def plain_epoch(cfg, model, opt, objective, state, x, y, gen) -> None:
    """One epoch of a textbook loop: shuffle, step (a last batch of one sample skipped, as npe train does)."""
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    for i in range(0, len(y), cfg.batch_size):
        idx = perm[i : i + cfg.batch_size]
        if len(idx) < 2:
            continue
        logits, heads, _ = model(x[idx])
        loss = objective(logits, heads, [(y[idx], None)], state)[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def plain_loop(cfg) -> tuple[float, float]:
    """A textbook loop: shuffle, step, schedule; the test set once at the end. Returns its test accuracy and the CPU
    seconds of its training steps."""
    cfg, data, model, opt, sched, objective, state = _setup(cfg)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    gen = torch.Generator().manual_seed(cfg.seed)
    began = time.process_time()
    for _ in range(cfg.epochs):
        plain_epoch(cfg, model, opt, objective, state, x, y, gen)
        sched.step()
    steps = time.process_time() - began
    model.eval()
    with torch.no_grad():
        logits, _, _ = model(torch.as_tensor(data.x_test))
    return float((logits.argmax(1).numpy() == data.y_test).mean()), steps


def interleaved_steps(cfg, epochs: int = 40) -> float:
    """CPU time of npe train's epoch of steps (its plan, its input pipeline, ``run_epoch`` without replay: a lean run's)
    over the plain loop's, the two alternated epoch by epoch on one network in one process, so that the machine's
    drift falls on both alike."""
    cfg, data, model, opt, _, objective, state = _setup(cfg)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    ctx = StepContext(
        task=build_task(cfg),
        mixing=build_mixing(cfg),
        batch_size=cfg.batch_size,
        augment=cfg.augment,
        rank_info=Dist(0, 1),
        num_classes=data.num_classes,
        net=model,
        opt=opt,
        feed=DevicePipeline(x, y),
        objective=objective,
    )
    gen, spent = torch.Generator().manual_seed(cfg.seed), np.zeros(2)

    def theirs():
        plain_epoch(cfg, model, opt, objective, state, x, y, gen)

    def ours():
        model.train()
        run_epoch(ctx, epoch_plan(gen, data.y_train, ctx, 0, data.counts), state)

    for i in range(epochs):  # ABBA order: a drift linear in time falls on both alike
        for k, one in enumerate((theirs, ours) if i % 2 == 0 else (ours, theirs)):
            t = time.process_time()
            one()
            spent[k if i % 2 == 0 else 1 - k] += time.process_time() - t
    return float(spent[1] / spent[0])


def exponent(cumulative: list[float]) -> float:
    """log2 of the cumulative cost after all epochs over that after half of them: 1 for linear growth, 2 for quadratic."""
    half, full = cumulative[len(cumulative) // 2 - 1], cumulative[-1]
    return float(np.log2(full / half)) if half > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist1d", help="the data set (its default network), e.g. digits100")
    ap.add_argument("--model", default=None, help="another network than the data set's, e.g. mlp:64")
    ap.add_argument(
        "--lean",
        action="store_true",
        help="npe train --lean: the report at the end only, no replay, no figures",
    )
    args = ap.parse_args()
    totals, history = defaultdict(float), []
    for module, name in (
        (train_mod, "run_epoch"),
        (classification, "evaluate_run"),
        (trace_mod, "replay_steps"),
        (trace_mod, "advance_replay"),
        (train_mod, "save_checkpoint"),
        (train_mod, "write_metrics"),
        (plots, "plot_run"),
        (train_mod, "forecast_now"),
    ):
        timed(module, name, totals)
    # cumulative costs at each epoch's end (the replay's epoch ends with its last flush, before the report)
    timed(
        classification,
        "step_report",
        totals,
        after=lambda: history.append(
            (totals["replay_steps"] + totals["advance_replay"], totals["step_report"])
        ),
    )
    plain_loop(
        make_config(dataset=args.dataset, model=args.model, epochs=1, seed=args.seed)
    )  # imports and data caches warm for both
    best = {"npe train": np.inf, "plain loop": np.inf}
    kept, pairs = {}, []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_config(
                dataset=args.dataset,
                model=args.model,
                epochs=args.epochs,
                eval_every=args.eval_every,
                seed=args.seed,
                out=tmp,
                lean=args.lean,
            )
            totals.clear()
            history.clear()
            t = time.process_time()
            res = train_mod.train(cfg, progress=False)
            spent = time.process_time() - t
            if spent < best["npe train"]:
                best["npe train"], kept = (
                    spent,
                    dict(
                        totals,
                        npe_la=res["accuracy"]["npe_la"]["overall"],
                        argmax=res["accuracy"]["argmax"]["overall"],
                        growth=[exponent([h[i] for h in history]) for i in (0, 1)]
                        if len(history) > 1
                        else None,
                    ),
                )
        t = time.process_time()
        acc, plain_steps = plain_loop(
            make_config(dataset=args.dataset, model=args.model, epochs=args.epochs, seed=args.seed)
        )
        plain = time.process_time() - t
        best["plain loop"] = min(best["plain loop"], plain)
        pairs.append((spent, plain, totals["run_epoch"], plain_steps))
    ratio = best["npe train"] / best["plain loop"]
    paired = sorted(a / b for a, b, _, _ in pairs)
    print(
        f"{args.dataset}{' --model ' + args.model if args.model else ''}{' --lean' if args.lean else ''}, "
        f"{args.epochs} epochs, best of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  plain loop        {best['plain loop']:7.1f} CPU s   (argmax test accuracy {acc:.3f})")
    print(
        f"  npe train         {best['npe train']:7.1f} CPU s   (argmax {kept['argmax']:.3f}, NPE-LA {kept['npe_la']:.3f})"
    )
    print(f"  ratio             {ratio:7.2f}x   (targets: <= 1.3x for the main job, <= 1.1x at 100 classes)")
    # the machine's speed drifts between runs (a shared host, +-15% here): each repeat's own ratio, run back to back;
    # the two training loops' step time against each other; and what npe train spends outside its steps beyond what
    # the plain loop does (data, start-up, evaluation), as a share of the plain loop: the part the drift touches least
    drift = sorted(steps / plain_steps for _, _, steps, plain_steps in pairs)
    extra = sorted(((a - steps) - (b - plain_steps)) / b for a, b, steps, plain_steps in pairs)
    print(f"  paired ratios     {' '.join(f'{r:.2f}' for r in paired)}   (median {np.median(paired):.2f}x)")
    print(
        f"  steps (the replay among them), npe / plain, per repeat {' '.join(f'{r:.2f}' for r in drift)}; "
        f"outside the steps, npe train's extra: {' '.join(f'{r:.1%}' for r in extra)} of the plain loop"
    )
    if (
        args.lean
    ):  # no replay in the steps: their cost against the plain loop's is measured interleaved, drift-free
        same = interleaved_steps(make_config(dataset=args.dataset, model=args.model, seed=args.seed))
        corrected = sorted((plain_steps * same + (a - steps)) / b for a, b, steps, plain_steps in pairs)
        print(
            f"  steps interleaved epoch by epoch in one process, npe / plain: {same:.3f}; so the run's ratio without "
            f"the drift: {' '.join(f'{r:.3f}' for r in corrected)} (median {np.median(corrected):.3f}x)"
        )
    labels = {
        "run_epoch": "training steps (replay and feature rows included)",
        "step_report": "prior report every epoch",
        "evaluate_run": "test-set evaluation with its full report",
        "save_checkpoint": "checkpoints",
        "write_metrics": "metrics.jsonl",
        "plot_run": "figures",
        "forecast_now": "forecasts (10%, 25%, 50% of the run)",
    }
    for name, label in labels.items():
        print(
            f"    {label:<52} {kept.get(name, 0.0):7.2f} CPU s  {100 * kept.get(name, 0.0) / best['npe train']:5.1f}%"
        )
    rest = best["npe train"] - sum(kept.get(n, 0.0) for n in labels)
    print(
        f"    {'the rest (start-up, data, results.json)':<52} {rest:7.2f} CPU s  {100 * rest / best['npe train']:5.1f}%"
    )
    replay = kept.get("replay_steps", 0.0) + kept.get("advance_replay", 0.0)
    print(f"    of the training steps, the replay itself {replay:.2f} CPU s")
    if kept["growth"] is not None:
        print(
            f"  cost growth in epochs (1 = linear): replay {kept['growth'][0]:.2f}, per-epoch report {kept['growth'][1]:.2f}"
        )


if __name__ == "__main__":
    main()
