"""Classification: one label per sample, every rule scored on the balanced test set, the prior report on the
training set (docs/metrics.md). Imports: torch, ``npe_theory``, ``data/``, ``device/``, ``methods/`` and the rest of
``tasks/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from npe_theory.report import MAX_ETA_MATRIX

from ..data.image_list import batch, on_device
from ..data.pipeline import augment, draw_augmentation
from ..device.distributed import gather_rows
from ..methods.trace import PemRecipe, Trace
from .base import Held, LossWeights, Now, train_mode_batches
from .prior import conditional_slopes_of, forward_mode, log_count_direction, prior_report
from .rules import PRIOR_KEYS, RULE_NAMES, accuracy_report


def _batches(model, x: torch.Tensor, batch_size: int, prepare, train_mode: bool, augment_draws):
    """Each batch's (start, stop, logits, eta averaged over the heads, features), on the model's device, in order."""
    device = next((p.device for p in model.parameters()), x.device)  # where a batch read from disk must go
    bounds = (
        train_mode_batches(len(x), batch_size)
        if train_mode
        else [(i, i + batch_size) for i in range(0, len(x), batch_size)]
    )
    with forward_mode(model, train_mode):
        for i, j in bounds:
            xb = batch(x[i:j], device)
            if augment_draws is not None:
                xb = augment(xb, augment_draws[i:j].to(x.device))
            logits, heads, h = model(prepare(xb))
            yield i, j, logits, heads.mean(0), h


@torch.no_grad()
def predict(
    model,
    x: torch.Tensor,
    batch_size: int,
    prepare,
    train_mode: bool = False,
    augment_draws=None,
    features: bool = True,
):
    """(logits, eta, features) for every input, float64 on the host (features None unless ``features``).

    Eval mode by default; ``train_mode``: batch statistics, running statistics left as they were (``forward_mode``),
    and a last batch of one sample joins the one before; ``augment_draws`` (n, 3) crop and flip the inputs as in training.
    """
    outs = [[], [], []]
    for _, _, logits, eta, h in _batches(model, x, batch_size, prepare, train_mode, augment_draws):
        for store, t in zip(outs, (logits, eta, h if features else None)):
            if t is not None:
                store.append(t.float().cpu())
    # logits and outputs in float64 for the rules; features in float32, as computed (the report reads them by class or
    # chunk in float64: a float64 copy of 10^5 x 2,048 features would be 1.9 GB)
    logits, eta = (torch.cat(o) for o in outs[:2])
    return logits.double().numpy(), eta.double().numpy(), torch.cat(outs[2]).numpy() if features else None


@torch.no_grad()
def predict_reduced(
    model,
    x: torch.Tensor,
    labels: np.ndarray,
    direction: np.ndarray,
    batch_size: int,
    prepare,
    train_mode: bool = False,
    augment_draws=None,
    features: bool = True,
):
    """What the prior report reads of the PEM's outputs on inputs whose (n, C) outputs are too large to keep (at 8,000
    classes and 437,513 samples, 28 GB in float64): (each input's output for its own label ``labels`` (n,), its outputs'
    projection ``sum_j eta_j(x) direction_j`` (n,), the outputs' column sums (1, C), the features (n, D) in float32 or
    None), reduced batch by batch on the device, float64 on the host. Passes as ``predict``."""
    own, projection, feats, total = [], [], [], None
    y, d = None, None
    for i, j, _, eta, h in _batches(model, x, batch_size, prepare, train_mode, augment_draws):
        if d is None:
            y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=eta.device)
            d = torch.as_tensor(np.asarray(direction), dtype=torch.float64, device=eta.device)
        e = eta.float().double()  # the float32 outputs, as predict keeps them
        own.append(e.gather(1, y[i:j, None])[:, 0].cpu())
        projection.append((e @ d).cpu())
        total = e.sum(0) if total is None else total + e.sum(0)
        if features:
            feats.append(h.float().cpu())
    C = len(direction)
    return (
        torch.cat(own).numpy() if own else np.zeros(0),
        torch.cat(projection).numpy() if projection else np.zeros(0),
        (total.cpu().numpy() if total is not None else np.zeros(C))[None],
        (torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32)) if features else None,
    )


def evaluate_run(
    model,
    held: Held,
    trace: Trace,
    now: Now,
    recipe: PemRecipe,
    batch_size: int,
    seed: int,
    augmented: bool,
    tau: float,
    tau_grid,
) -> dict:
    """Accuracy per rule on the balanced test set (eval mode), and the prior report on the training set.

    The report reads the training-mode outputs and features (what the PEM trained on), in shuffled
    batches of ``batch_size`` with the training crops and flips when ``augmented``, and records the
    eval-mode outputs beside them. Each rank predicts a contiguous chunk; the chunks are gathered.
    Post-hoc LA and the count groups use ``now.counts``; the report, ``now.report_counts``.
    """
    data, rank_info = held.data, held.rank_info
    x_train, y_train = held.x_train, data.y_train
    if now.train_index is not None:
        x_train, y_train = (
            x_train[torch.as_tensor(now.train_index, device=x_train.device)],
            y_train[now.train_index],
        )

    counts = np.asarray(now.counts)
    report_counts = counts if now.report_counts is None else now.report_counts
    direction = log_count_direction(report_counts)

    def run(x, reduced_labels=None, **kw):
        """This rank's contiguous chunk of ``x`` predicted (``predict``, or ``predict_reduced`` given the labels), every
        rank's gathered in order."""
        idx = np.array_split(np.arange(len(x)), rank_info.world)[rank_info.rank]
        sl = slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
        if kw.get("augment_draws") is not None:
            kw["augment_draws"] = kw["augment_draws"][sl]
        size = kw.pop("batch_size", max(batch_size, 256))
        if reduced_labels is None:
            got = predict(model, x[sl], size, held.prepare, **kw)
        else:
            got = predict_reduced(model, x[sl], reduced_labels[sl], direction, size, held.prepare, **kw)
        kept = gather_rows(tuple(g for g in got if g is not None), rank_info)
        return tuple(kept) + (None,) * (len(got) - len(kept))  # a features slot left out is the last

    logits, eta, _ = run(held.x_test, features=False)
    # eval mode on the training set: the report reads each sample's own-class output, the marginal prior the mean of
    # all of them; at thousands of classes the (N, C) outputs are not kept
    own_eval, _, sums, _ = run(x_train, reduced_labels=np.asarray(y_train), features=False)
    # E_x[eta(x)] over the training set, eval mode as at test time
    marginal = sums.sum(0) / max(len(y_train), 1)
    # training-mode pass: batches of the training size in a shuffled order (class-sorted batches would skew the batch
    # statistics), crops and flips as in training; a generator of its own leaves the run's untouched
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=gen)
    draws = draw_augmentation(len(x_train), gen) if augmented else None
    shuffled = dict(
        batch_size=batch_size // rank_info.world,
        train_mode=True,
        augment_draws=draws,
    )
    back = torch.argsort(order).numpy()
    x_order = x_train[order.to(x_train.device)]
    if len(report_counts) <= MAX_ETA_MATRIX:  # the whole (N, C) outputs: the report keeps E[eta | y] (C x C)
        _, eta_tr, feats_tr = run(x_order, **shuffled)
        eta_tr, feats_tr = eta_tr[back], feats_tr[back]
        projection = eta_tr @ direction
    else:
        eta_tr, projection, _, feats_tr = run(
            x_order, reduced_labels=np.asarray(y_train)[order.numpy()], **shuffled
        )
        eta_tr, projection, feats_tr = eta_tr[back], projection[back], feats_tr[back]
    pem, implied = prior_report(
        eta_tr,
        feats_tr,
        y_train,
        report_counts,
        recipe,
        trace,
        model.pem.is_linear,
        own_eval,
    )
    pem["features_from"] = "a training-mode pass after the epoch"
    pem["conditional_slopes"] = conditional_slopes_of(projection, y_train, report_counts)
    priors = {
        "counts": counts.tolist(),
        "implied": None if implied is None else implied.tolist(),
        "marginal": marginal.tolist(),
        "class_mean": pem["learned"],  # training mode, on each class's own samples
    }
    fixed = {rule: priors[key] for rule, key in PRIOR_KEYS.items()}
    report = accuracy_report(logits, eta, data.y_test, counts, tau, tau_grid, fixed, now.stale_counts)
    return {**report, "pem": pem, "priors": priors}


#: PEM outputs (rows x classes) the per-epoch report computes at a time: 64 MB in float32; the (n, C) outputs of an epoch
#: at iNaturalist's size (437,513 rows, 8,142 classes) would be 14 GB
OWN_CLASS_CHUNK = 2**24


def step_report(
    model, held: Held, trace: Trace, now: Now, outputs, recipe: PemRecipe, warm: dict | None = None
) -> dict | None:
    """The prior report of one epoch on the feature rows its own steps computed (``EpochOutputs``), read by the PEM as it
    is at the epoch's end, as the replay and the equilibrium are (no backbone pass); every reference but the spread-aware
    ones (``references="core"``), from each row's output for its own class (E[eta | y] is an evaluation's). None when
    the rows were not kept (mixing, dense maps, too large) or some class has none (its only sample fell out of the
    epoch)."""
    got = None if outputs is None else outputs.result()
    if got is None or model.pem is None:
        return None
    h, labels = got
    with (
        torch.no_grad()
    ):  # each row's output for its own class (all the per-epoch report reads), by chunks of rows
        step = max(1, OWN_CLASS_CHUNK // model.pem.num_classes)
        eta = torch.cat(
            [
                model.pem.heads_output(h[i : i + step])
                .mean(0)
                .gather(1, labels[i : i + step, None].long())[:, 0]
                for i in range(0, len(h), step)
            ]
        )
    eta, h, y = gather_rows(
        (eta.double().cpu().numpy(), h.float().cpu().numpy(), labels.to(torch.int64).cpu().numpy()),
        held.rank_info,
    )
    counts = np.asarray(now.counts if now.report_counts is None else now.report_counts)
    if y.size == 0 or y.max() >= len(counts) or np.bincount(y, minlength=len(counts)).min() == 0:
        return None
    pem, _ = prior_report(eta, h, y, counts, recipe, trace, model.pem.is_linear, references="core", warm=warm)
    pem["features_from"] = "the epoch's training steps"
    return {"pem": pem}


@dataclass
class Classification:
    """One label per sample (``tasks/base.py`` says what a task supplies). ``batch_size``, ``seed`` and ``augmented``
    shape the report's training-mode pass; ``tau`` and ``tau_grid`` the rules' strength and the recorded sweep.
    ``warm``: the exact equilibrium's last solution, from which the next per-epoch report starts (per-epoch lines of a
    resumed run therefore agree with an uninterrupted run's to the solver's tolerance, 1e-10, not bit for bit)."""

    recipe: PemRecipe
    batch_size: int
    seed: int
    tau: float
    tau_grid: list
    augmented: bool = False
    warm: dict = field(default_factory=dict, repr=False, compare=False)

    def loss_weights(
        self,
        labels: np.ndarray,
        num_classes: int,
        partner: np.ndarray | None = None,
        weight: np.ndarray | None = None,
    ) -> LossWeights:
        """One loss term per sample: weight 1 on its label; with a partner, ``weight`` on its own label and
        ``1 - weight`` on the partner's."""
        n = len(labels)
        position = np.arange(n)
        if partner is None:
            return LossWeights(position, labels, np.ones(n), np.ones(n))
        weight = np.asarray(weight, dtype=np.float64)
        return LossWeights(
            np.concatenate([position, position]),
            np.concatenate([labels, partner]),
            np.concatenate([weight, 1.0 - weight]),
            np.ones(n),
        )

    def loss_terms(self, pairs):
        return pairs

    def feature_terms(self, h: torch.Tensor, terms):
        """Each sample's features count toward each of its labels by the label's loss weight (1 without mixing)."""
        return h, [(t, torch.ones(len(t), device=h.device) if w is None else w) for t, w in terms]

    def evaluate(self, model, held: Held, trace: Trace, now: Now) -> dict:
        # a cold start: results.json must not depend on where a run was resumed (the warm start is lost with the process)
        return evaluate_run(
            model,
            held,
            trace,
            now,
            self.recipe,
            self.batch_size,
            self.seed,
            self.augmented,
            self.tau,
            self.tau_grid,
        )

    def step_report(self, model, held: Held, trace: Trace, now: Now, outputs) -> dict | None:
        return step_report(model, held, trace, now, outputs, self.recipe, self.warm)

    def figures(self, out, model, held: Held) -> list:
        return []

    def advise(self, model, held: Held, report: dict) -> dict:
        """The rule and tau a validation set prefers, and whether NPE-LA falls below argmax or post-hoc LA (docs/metrics.md)."""
        return advise(model, held, report, self.batch_size, self.tau, self.tau_grid)


def advise(model, held: Held, report: dict, batch_size: int, tau: float, tau_grid) -> dict:
    """On the data's validation set (balanced, neither training nor test data): every rule at every tau of
    ``tau_grid`` and at ``tau``; the best (rule, tau) by mean per-class accuracy, with its test accuracy beside it;
    and NPE-LA against argmax and post-hoc LA at ``tau``, on validation and on test. Priors as the last evaluation's."""
    data = held.data
    if data.x_val is None:
        return {
            "validation": None,
            "why": "no validation set: some class has fewer than 5 training samples the long-tailed "
            "subset leaves unused; give one (--val-list, a val/ folder beside train/, or X_val.npy / y_val.npy)",
        }
    logits, eta, _ = predict(
        model, on_device(data.x_val, held.x_train.device), max(batch_size, 256), held.prepare, features=False
    )
    priors = report["priors"]
    fixed = {rule: priors.get(key) for rule, key in PRIOR_KEYS.items()}
    val = accuracy_report(
        logits, eta, data.y_val, np.asarray(priors["counts"]), tau, sorted({*tau_grid, tau}), fixed
    )
    scores = {("argmax", 0.0): val["accuracy"]["argmax"]["overall"]}
    scores.update(
        {(rule, float(t)): v["overall"] for rule, sweep in val["tau_sweep"].items() for t, v in sweep.items()}
    )
    (rule, best_tau), best = max(
        scores.items(), key=lambda kv: kv[1]
    )  # first of equals: argmax, then the grid in order

    def at(source, r):
        return source["accuracy"][r]["overall"] if r in source["accuracy"] else None

    test_best = (
        at(report, "argmax")
        if rule == "argmax"
        else report["tau_sweep"].get(rule, {}).get(f"{best_tau:g}", {}).get("overall")
    )
    below = {
        other: {
            "validation": at(val, "npe_la") < at(val, other),
            "test": at(report, "npe_la") < at(report, other),
        }
        for other in ("argmax", "posthoc_la")
    }
    return {
        "validation": {
            "source": data.val_source,
            "per_class": int(len(data.y_val) // data.num_classes),
            "samples": int(len(data.y_val)),
        },
        "best": {
            "rule": rule,
            "name": RULE_NAMES[rule],
            "tau": None if rule == "argmax" else best_tau,
            "validation_accuracy": best,
            "test_accuracy": test_best,
        },
        "at_tau": {
            "tau": tau,
            **{r: {"validation": at(val, r), "test": at(report, r)} for r in val["accuracy"]},
        },
        "npe_la_below": below,
    }
