"""Accuracy for every inference rule and the prior report of a run (docs/metrics.md, docs/data.md)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from scipy.special import softmax

from npe_theory._validate import as_float_array, positive_int
from npe_theory.priors import implied_log_prior
from npe_theory.report import PemSettings, pem_report

from .distributed import Dist, gather_rows
from .trace import felt_decay, replay_inputs
from npe_theory.errors import InputError

RULES = ("argmax", "posthoc_la", "npe_la", "npe_inverse")
STALE_RULE = "posthoc_la_stale"  # a shifting stream only: post-hoc LA still using the counts before the last shift
RULE_NAMES = {"argmax": "CE (argmax)", "posthoc_la": "post-hoc LA", "npe_la": "NPE-LA", "npe_inverse": "NPE inverse",
              STALE_RULE: "post-hoc stale"}
# Many / Medium / Few by training count (docs/data.md)
GROUPS = {"many": lambda n: n > 100, "medium": lambda n: (n >= 20) & (n <= 100), "few": lambda n: n < 20}
REPORT_GROUPS = ("overall", *GROUPS)  # the keys of every accuracy entry, besides per_class
# Head / medium / tail by class index, as the official codes group CIFAR-LT (docs/data.md): source -> classes -> ranges
INDEX_GROUPS = {
    "npe_official": {10: ((0, 3), (3, 7), (7, 10)), 100: ((0, 36), (36, 71), (71, 100))},
    "prior_lt": {10: ((0, 3), (3, 7), (7, 10)), 100: ((0, 33), (33, 66), (66, 100))},
}
ECE_BINS = 15


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b| over ``bins`` equal-width bins of the top-1
    confidence, sample i in bin b when edge_b < conf_i <= edge_{b+1} (as Prior-LT). A fraction; x100 for percent.
    """
    p = as_float_array("probs", probs, nonnegative=True)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise InputError(f"probs: expected (N, C) class probabilities with N >= 1, C >= 2, got shape {p.shape}")
    if not np.allclose(p.sum(1), 1.0, atol=1e-6):
        raise InputError("probs: rows must sum to 1 (softmax outputs)")
    y = np.asarray(labels)
    if y.shape != (len(p),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= p.shape[1]:
        raise InputError(f"labels: expected {len(p)} integer class ids in [0, {p.shape[1]})")
    n_b, acc_b, conf_b = _bin_sums(p, y, positive_int("bins", bins, maximum=1_000_000))
    return float(np.sum(np.abs(acc_b - conf_b)) / len(p))


def _bin_sums(probs: np.ndarray, labels: np.ndarray, bins: int):
    """Per confidence bin (edge_b, edge_b+1], edges = linspace(0, 1, bins + 1): count, number correct, summed confidence."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), conf, side="left") - 1, 0, bins - 1)
    return (np.bincount(which, minlength=bins), np.bincount(which, weights=correct, minlength=bins),
            np.bincount(which, weights=conf, minlength=bins))


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> dict:
    """Per bin: count, accuracy and mean confidence (None where empty), for a reliability diagram."""
    n_b, acc, conf = _bin_sums(probs, labels, bins)
    return {"count": n_b.tolist(), "accuracy": [a / n if n else None for a, n in zip(acc, n_b)],
            "confidence": [c / n if n else None for c, n in zip(conf, n_b)]}


@contextmanager
def forward_mode(model, train_mode: bool):
    """Passes in ``model.train(train_mode)`` that change nothing: in training mode BatchNorm normalizes with each batch's
    statistics, as the PEM saw its features in training, and its running statistics are restored afterwards; eval mode after."""
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches_tracked" in k} if train_mode else None
    model.train(train_mode)
    try:
        yield
    finally:
        if train_mode:
            model.load_state_dict(buffers, strict=False)
        model.eval()


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int, prepare, train_mode: bool = False, augment_draws=None):
    """(logits, eta, features) for every input, float64 on the host.

    Eval mode by default; ``train_mode``: batch statistics, running statistics left as they were (``forward_mode``);
    ``augment_draws`` (n, 3) crop and flip the inputs as in training.
    """
    from .pipeline import augment

    outs = [[], [], []]
    with forward_mode(model, train_mode):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            if augment_draws is not None:
                xb = augment(xb, augment_draws[i : i + batch_size].to(x.device))
            logits, heads, h = model(prepare(xb))
            for store, t in zip(outs, (logits, heads.mean(0), h)):
                store.append(t.float().cpu())
    return tuple(torch.cat(o).double().numpy() for o in outs)


def group_accuracy(correct: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict:
    """Mean per-class accuracy overall and per count group (None where a group has no class), and per class."""
    present = np.bincount(y, minlength=len(counts))
    if not present.all():
        raise InputError(f"y: class {int(np.argmin(present))} has no test sample; accuracy per class is undefined")
    per_class = np.array([correct[y == c].mean() for c in range(len(counts))])
    out = {"overall": float(per_class.mean())}
    for name, rule in GROUPS.items():
        members = rule(counts)
        out[name] = float(per_class[members].mean()) if members.any() else None
    out["per_class"] = per_class.tolist()
    return out


def adjusted_logits(rule: str, logits: np.ndarray, eta: np.ndarray, log_prior: np.ndarray, tau: float,
                    implied_prior: np.ndarray | None = None, stale_prior: np.ndarray | None = None) -> np.ndarray:
    """argmax: z; posthoc_la: z - tau ln pi (true counts); npe_la: z - tau eta(x);
    npe_inverse: z - tau ln pi_hat, the log-prior Proposition 1 implies from the learned PEM outputs;
    posthoc_la_stale: z - tau ln pi_old, the prior before the stream's last shift."""
    if rule not in RULE_NAMES:
        raise InputError(f"rule: unknown {rule!r}; choose from {', '.join(RULE_NAMES)}")
    if rule == "argmax":
        return logits
    if rule == "npe_inverse":
        return logits - tau * implied_prior
    if rule == STALE_RULE:
        return logits - tau * stale_prior
    return logits - tau * (log_prior if rule == "posthoc_la" else eta)


def available_rules(implied_prior=None, stale_prior=None) -> list[str]:
    """The rules that apply: npe_inverse with an implied prior (a linear PEM), posthoc_la_stale with a stale one."""
    return [r for r in RULES if r != "npe_inverse" or implied_prior is not None] + ([STALE_RULE] if stale_prior is not None else [])


def accuracy_report(logits, eta, y, counts, tau: float, tau_grid, implied_prior=None, stale_counts=None) -> dict:
    """Accuracy of every rule at ``tau`` and over ``tau_grid``; npe_inverse only when ``implied_prior`` is given,
    posthoc_la_stale only when ``stale_counts`` are."""
    log_prior = np.log(counts / counts.sum())
    stale = None if stale_counts is None else np.log(stale_counts / np.sum(stale_counts))
    rules = available_rules(implied_prior, stale)

    def adjusted(rule, t):
        return adjusted_logits(rule, logits, eta, log_prior, t, implied_prior, stale)

    def acc(rule, t):
        return group_accuracy(adjusted(rule, t).argmax(1) == y, y, counts)

    probs = {rule: softmax(adjusted(rule, tau), axis=1) for rule in rules}
    out = {
        "accuracy": {rule: acc(rule, tau) for rule in rules},
        "tau_sweep": {rule: {f"{t:g}": {k: v for k, v in acc(rule, t).items() if k != "per_class"} for t in tau_grid} for rule in rules[1:]},
        "calibration": {rule: {"ece": expected_calibration_error(p, y), "bins": reliability_bins(p, y)} for rule, p in probs.items()},
    }
    if len(counts) in INDEX_GROUPS["npe_official"]:
        out["accuracy_by_index"] = {source: {rule: index_groups(out["accuracy"][rule]["per_class"], table[len(counts)])
                                             for rule in rules} for source, table in INDEX_GROUPS.items()}
    return out


def index_groups(per_class, ranges) -> dict:
    """Mean per-class accuracy over head / medium / tail class-index ranges."""
    return {name: float(np.mean(per_class[a:b])) for name, (a, b) in zip(("head", "medium", "tail"), ranges)}


def pem_settings(cfg, lam_s: float) -> PemSettings:
    """What the PEM was trained with: batch-mean loss, its bias decayed by the optimizer's weight decay, each head weighted alpha."""
    return PemSettings(weight_decay=cfg.weight_decay, alpha=cfg.alpha, loss=cfg.pem_loss, reduction="mean", bias=True,
                       momentum=cfg.momentum, lambda_s=lam_s)


def prior_report(eta, features, labels, counts, cfg, trace: dict, linear: bool, eta_eval=None) -> tuple[dict, np.ndarray | None]:
    """(the prior report of the run's PEM, the log-prior Proposition 1 implies from it, None for an MLP PEM)."""
    pem = pem_report(eta, features, labels, counts, pem_settings(cfg, felt_decay(trace, cfg)), trace=replay_inputs(trace),
                     eta_eval=eta_eval, linear=linear)
    implied = implied_log_prior(pem["learned"], cfg.weight_decay, pem["mean_norm_sq"], cfg.pem_loss, True, cfg.alpha) if linear else None
    return pem, implied


def evaluate_run(model, data, cfg, x_train, x_test, prepare, trace: dict, rank_info=None, *, counts=None, report_counts=None,
                 train_index=None, stale_counts=None) -> dict:
    """Accuracy per rule on the balanced test set (eval mode), and the prior report on the training set.

    The report reads the training-mode outputs and features (what the PEM trained on) and records the
    eval-mode outputs beside them. Each rank predicts a contiguous chunk; the chunks are gathered.
    ``counts``: the class counts of post-hoc LA and the count groups (default the data's);
    ``report_counts``: the counts the PEM's loss saw, for the prior report (default ``counts``; UniMix
    spreads them by the mixing weights); ``train_index``: the training samples of the current stream
    (a shifting stream's last epoch; default all); ``stale_counts``: the counts before the last shift.
    """
    rank_info = rank_info or Dist()
    counts = data.counts if counts is None else np.asarray(counts)
    y_train = data.y_train
    if train_index is not None:
        x_train, y_train = x_train[torch.as_tensor(train_index, device=x_train.device)], y_train[train_index]

    def run(x, **kw):
        idx = np.array_split(np.arange(len(x)), rank_info.world)[rank_info.rank]
        sl = slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
        if kw.get("augment_draws") is not None:
            kw["augment_draws"] = kw["augment_draws"][sl]
        return gather_rows(predict(model, x[sl], kw.pop("batch_size", max(cfg.batch_size, 256)), prepare, **kw), rank_info)

    logits, eta, _ = run(x_test)
    _, eta_eval, _ = run(x_train)
    # training-mode pass: batches of the training size in a shuffled order (class-sorted batches would skew the batch
    # statistics), crops and flips as in training; a generator of its own leaves the run's untouched
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(x_train), generator=gen)
    draws = None
    if cfg.augment:
        from .pipeline import draw_augmentation

        draws = draw_augmentation(len(x_train), gen)
    _, eta_tr, feats_tr = run(x_train[order.to(x_train.device)], batch_size=cfg.batch_size // rank_info.world, train_mode=True,
                              augment_draws=draws)
    back = torch.argsort(order).numpy()
    eta_tr, feats_tr = eta_tr[back], feats_tr[back]
    pem, implied = prior_report(eta_tr, feats_tr, y_train, counts if report_counts is None else report_counts, cfg, trace,
                                model.pem.is_linear, eta_eval)
    return {**accuracy_report(logits, eta, data.y_test, counts, cfg.tau, cfg.tau_grid, implied, stale_counts), "pem": pem}
