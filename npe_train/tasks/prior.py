"""The prior report of a trained PEM, shared by every task (docs/report.md), and the forward passes it reads.

The report reads the PEM's outputs and features in training mode, as the PEM saw them when it trained;
``forward_mode`` makes such passes without changing the network. Imports: torch, ``npe_theory``,
``methods/trace.py`` and ``rules.py``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from npe_theory.priors import implied_log_prior
from npe_theory.report import pem_report

from ..methods.trace import PemRecipe, Trace, replayed_heads
from .rules import GROUPS


@contextmanager
def forward_mode(model, train_mode: bool):
    """Passes in ``model.train(train_mode)`` that change nothing: in training mode BatchNorm normalizes with each batch's
    statistics, as the PEM saw its features in training, and its running statistics are restored afterwards; eval mode after."""
    buffers = (
        {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches_tracked" in k}
        if train_mode
        else None
    )
    model.train(train_mode)
    try:
        yield
    finally:
        if train_mode:
            model.load_state_dict(buffers, strict=False)
        model.eval()


def conditional_slopes(eta_matrix, counts) -> dict:
    """Slope of each row of E[eta_j | y = c] on ln N_j (least squares over j), and its mean over the Many / Medium / Few
    classes c: 1 when the PEM's output for class-c samples carries the whole log-prior, lower when it also recognizes c."""
    m, xc = np.asarray(eta_matrix, dtype=np.float64), log_count_direction(counts)
    return _by_group((m - m.mean(1, keepdims=True)) @ xc / max(float(xc @ xc), 1e-300), counts)


def log_count_direction(counts) -> np.ndarray:
    """xc = ln N - mean(ln N): the direction a sample's outputs are projected on for ``conditional_slopes_of``."""
    x = np.log(np.asarray(counts, dtype=np.float64))
    return x - x.mean()


def conditional_slopes_of(projection, labels, counts) -> dict:
    """``conditional_slopes`` without the C x C matrix: with ``projection`` each sample's sum_j eta_j(x) xc_j
    (``log_count_direction``), the slope of row c is the mean projection over class c's samples over xc . xc (xc sums to
    0, so a row's mean drops out). At 8,000 classes the matrix would be 64 M numbers and the outputs behind it
    (N, C)."""
    xc = log_count_direction(counts)
    C = len(xc)
    labels = np.asarray(labels)
    per_class = np.bincount(labels, weights=np.asarray(projection, dtype=np.float64), minlength=C)
    n = np.bincount(labels, minlength=C)
    return _by_group(per_class / np.maximum(n, 1) / max(float(xc @ xc), 1e-300), counts)


def _by_group(per_row: np.ndarray, counts) -> dict:
    counts = np.asarray(counts)
    return {
        "per_row": per_row.tolist(),
        **{
            g: float(per_row[rule(counts)].mean()) if rule(counts).any() else None
            for g, rule in GROUPS.items()
        },
    }


def prior_report(
    eta,
    features,
    labels,
    counts,
    recipe: PemRecipe,
    trace: Trace,
    linear: bool,
    eta_eval=None,
    references: str = "all",
    warm: dict | None = None,
) -> tuple[dict, np.ndarray | None]:
    """(the prior report of the run's PEM, the log-prior its learned outputs imply, None for an MLP PEM).

    The report's settings are ``recipe`` with the schedule the trace's steps took (lambda_s = weight_decay * sum_t lr_t
    / (1 - momentum)). The implied log-prior inverts the spread-aware model (``npe_theory.spread.spread_inverse``), or
    Proposition 1 where that model has no fixed point. ``references`` and ``warm``: as ``npe_theory.report.pem_report``.
    """
    pem = pem_report(
        eta,
        features,
        labels,
        counts,
        recipe.settings(trace),
        replayed=replayed_heads(trace),
        eta_eval=eta_eval,
        linear=linear,
        references=references,
        warm=warm,
    )
    if not linear:
        implied = None
    elif (
        pem.get("implied_log_prior") is not None
    ):  # the spread-aware inverse: what the PEM learns on spread features
        implied = np.asarray(pem["implied_log_prior"])
    else:  # the spread model has no fixed point here: Proposition 1's inverse (collapse assumed)
        implied = implied_log_prior(
            pem["learned"], recipe.weight_decay, pem["mean_norm_sq"], recipe.loss, True, recipe.alpha
        )
    return pem, implied


UNDERFIT_SHARE = (
    0.8  # a classifier loss above this share of the prior's entropy has learned little beyond the prior
)


def fit_status(metrics, counts) -> dict:
    """Whether the classifier fit its training data: its last epoch's loss (``metrics``: metrics.jsonl's lines, or the
    loss itself) against H(pi) = -sum pi_c ln pi_c, the loss of predicting the class prior alone. ``fitted`` is False
    above ``UNDERFIT_SHARE`` of it (docs/regimes.md)."""
    train_loss = metrics[-1]["ce"] if isinstance(metrics, list) else metrics
    pi = np.asarray(counts, dtype=np.float64)
    pi = pi[pi > 0] / pi.sum()
    prior_loss = float(-(pi * np.log(pi)).sum())
    return {
        "train_loss": float(train_loss),
        "prior_loss": prior_loss,
        "fitted": bool(np.isfinite(train_loss) and train_loss <= UNDERFIT_SHARE * prior_loss),
    }


def mark_underfit(pem: dict, fit: dict) -> None:
    """A run that has not fit says so in its regime: the PEM's numbers then describe an untrained network."""
    if fit["fitted"]:
        return
    pem["regime"] = f"{pem['regime']}, under-fit"
    pem["regime_note"] = (
        f"the classifier has not fit its training data (training loss {fit['train_loss']:.3g} against "
        f"{fit['prior_loss']:.3g} for predicting the class prior alone): train longer or check the learning "
        f"rate before reading the PEM's numbers. " + pem["regime_note"]
    )
