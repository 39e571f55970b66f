"""Accuracy for every inference rule and the prior comparison, the point of the package (SPEC sections 4 and 5)."""
from __future__ import annotations

import numpy as np
import torch

from npe_theory.collapse import class_means, nc1
from npe_theory.priors import predicted_priors, prior_match

RULES = ("argmax", "posthoc_la", "npe_la")
RULE_NAMES = {"argmax": "CE (argmax)", "posthoc_la": "post-hoc LA", "npe_la": "NPE-LA"}
# Many / Medium / Few by training count (SPEC section 5)
GROUPS = {"many": lambda n: n > 100, "medium": lambda n: (n >= 20) & (n <= 100), "few": lambda n: n < 20}
REPORT_GROUPS = ("overall", *GROUPS)  # the keys of every accuracy entry, besides per_class


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int, prepare) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, eta, features) for every input, eval mode, float64 on the host."""
    model.eval()
    outs = [[], [], []]
    for i in range(0, len(x), batch_size):
        logits, heads, h = model(prepare(x[i : i + batch_size]))
        for store, t in zip(outs, (logits, heads.mean(0), h)):
            store.append(t.float().cpu())
    return tuple(torch.cat(o).double().numpy() for o in outs)


def group_accuracy(correct: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict:
    """Mean per-class accuracy overall and per count group (None where a group has no class), and per class."""
    present = np.bincount(y, minlength=len(counts))
    if not present.all():
        raise ValueError(f"y: class {int(np.argmin(present))} has no test sample; accuracy per class is undefined")
    per_class = np.array([correct[y == c].mean() for c in range(len(counts))])
    out = {"overall": float(per_class.mean())}
    for name, rule in GROUPS.items():
        members = rule(counts)
        out[name] = float(per_class[members].mean()) if members.any() else None
    out["per_class"] = per_class.tolist()
    return out


def adjusted_logits(rule: str, logits: np.ndarray, eta: np.ndarray, log_prior: np.ndarray, tau: float) -> np.ndarray:
    """argmax: z; posthoc_la: z - tau ln pi (true counts); npe_la: z - tau eta(x)."""
    if rule == "argmax":
        return logits
    return logits - tau * (log_prior if rule == "posthoc_la" else eta)


def accuracy_report(logits, eta, y, counts, tau: float, tau_grid) -> dict:
    log_prior = np.log(counts / counts.sum())

    def acc(rule, t):
        return group_accuracy(adjusted_logits(rule, logits, eta, log_prior, t).argmax(1) == y, y, counts)

    return {
        "accuracy": {rule: acc(rule, tau) for rule in RULES},
        "tau_sweep": {rule: {f"{t:g}": {k: v for k, v in acc(rule, t).items() if k != "per_class"} for t in tau_grid} for rule in RULES[1:]},
    }


def prior_report(eta: np.ndarray, features: np.ndarray, y: np.ndarray, counts: np.ndarray, cfg, pem_is_linear: bool) -> dict:
    """Learned per-class PEM output against ln N_c and against the closed form at the measured norms."""
    C = len(counts)
    eta_matrix = class_means(eta, y, C)  # row c': E[eta | y = c']
    learned = np.diag(eta_matrix).copy()
    mu = class_means(features, y, C)
    norm_sq = np.sum(mu * mu, axis=1)
    # Batch-mean loss, PEM bias decayed with the optimizer's weight decay, each head weighted alpha (SPEC section 2).
    predicted = predicted_priors(counts, cfg.weight_decay, norm_sq, "mean", cfg.pem_loss, bias=True, weight=cfg.alpha)
    return {
        "learned": learned.tolist(),
        "predicted": predicted.tolist(),
        "log_counts": np.log(counts).tolist(),
        "mean_norm_sq": norm_sq.tolist(),
        "eta_matrix": eta_matrix.tolist(),
        "nc1": nc1(features, y, C),
        "closed_form_applies": bool(pem_is_linear),
        "prior_match": {
            "vs_log_counts": prior_match(learned, counts).as_dict(),
            "vs_closed_form": prior_match(learned, reference=predicted).as_dict(),
        },
    }
