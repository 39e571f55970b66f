"""The inference rules and what is scored of them: accuracy per class and count group, the tau sweep, calibration
(docs/metrics.md, docs/data.md). NumPy in, plain dicts out; imports ``npe_theory`` only.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from npe_theory.errors import InputError
from npe_theory.validate import as_float_array, as_float_scalar, instance, positive_int

RULES = ("argmax", "posthoc_la", "npe_la", "npe_marginal", "npe_class_mean", "npe_inverse")
STALE_RULE = (
    "posthoc_la_stale"  # a shifting stream only: post-hoc LA still using the counts before the last shift
)
RULE_NAMES = {
    "argmax": "argmax (this network)",
    "posthoc_la": "post-hoc LA",
    "npe_la": "NPE-LA",
    "npe_marginal": "NPE marginal",
    "npe_class_mean": "NPE class mean",
    "npe_inverse": "NPE inverse",
    STALE_RULE: "post-hoc stale",
}
# The rules that subtract one fixed vector (the same for every sample) and the key of ``priors`` that holds it;
# posthoc_la's vector is ln pi of the counts, npe_la's prior is per sample (eta(x)) and argmax subtracts nothing
FIXED_PRIOR_RULES = ("npe_marginal", "npe_class_mean", "npe_inverse", STALE_RULE)
# Many / Medium / Few by training count (docs/data.md)
GROUPS = {"many": lambda n: n > 100, "medium": lambda n: (n >= 20) & (n <= 100), "few": lambda n: n < 20}
REPORT_GROUPS = ("overall", *GROUPS)  # the keys of every accuracy entry, besides per_class
# Head / medium / tail by class index, as the official codes group CIFAR-LT (docs/data.md): source -> classes -> ranges
INDEX_GROUPS = {
    "npe_official": {10: ((0, 3), (3, 7), (7, 10)), 100: ((0, 36), (36, 71), (71, 100))},
    "prior_lt": {10: ((0, 3), (3, 7), (7, 10)), 100: ((0, 33), (33, 66), (66, 100))},
}
INDEX_LABELS = {"npe_official": "the NPE code's index groups", "prior_lt": "Prior-LT's index groups"}
ECE_BINS = 15
THIRDS = ("many", "medium", "few")  # thirds of the classes by training count, most frequent first


def frequency_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class ids by training count: the most frequent third ("many"), the middle ("medium"), the rarest ("few")."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return dict(zip(THIRDS, np.array_split(order, 3)))


def group_sizes(y_test: np.ndarray, counts: np.ndarray) -> dict:
    """Per count group: its number of classes and of test samples (what each group's accuracy averages over)."""
    per_class = np.bincount(y_test, minlength=len(counts))
    return {
        name: {"classes": int(rule(counts).sum()), "test_samples": int(per_class[rule(counts)].sum())}
        for name, rule in GROUPS.items()
    }


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b| over ``bins`` equal-width bins of the top-1
    confidence, sample i in bin b when edge_b < conf_i <= edge_{b+1} (as Prior-LT). A fraction; x100 for percent.
    """
    p = as_float_array("probs", probs, nonnegative=True)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise InputError(
            f"probs: expected (N, C) class probabilities with N >= 1, C >= 2, got shape {p.shape}"
        )
    if not np.allclose(p.sum(1), 1.0, atol=1e-6):
        raise InputError("probs: rows must sum to 1 (softmax outputs)")
    try:
        y = np.asarray(labels)
    except ValueError:  # ragged nesting
        y = None
    if y is None or y.shape != (len(p),) or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= p.shape[1]:
        raise InputError(f"labels: expected {len(p)} integer class ids in [0, {p.shape[1]})")
    n_b, acc_b, conf_b = _bin_sums(p, y, positive_int("bins", bins, maximum=1_000_000))
    return float(np.sum(np.abs(acc_b - conf_b)) / len(p))


def _bin_sums(probs: np.ndarray, labels: np.ndarray, bins: int):
    """Per confidence bin (edge_b, edge_b+1], edges = linspace(0, 1, bins + 1): count, number correct, summed confidence."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), conf, side="left") - 1, 0, bins - 1)
    return (
        np.bincount(which, minlength=bins),
        np.bincount(which, weights=correct, minlength=bins),
        np.bincount(which, weights=conf, minlength=bins),
    )


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> dict:
    """Per bin: count, accuracy and mean confidence (None where empty), for a reliability diagram."""
    n_b, acc, conf = _bin_sums(probs, labels, bins)
    return {
        "count": n_b.tolist(),
        "accuracy": [a / n if n else None for a, n in zip(acc, n_b)],
        "confidence": [c / n if n else None for c, n in zip(conf, n_b)],
    }


def group_accuracy(correct: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict:
    """Mean per-class accuracy overall and per count group (None where a group has no class), and per class."""
    present = np.bincount(y, minlength=len(counts))
    if not present.all():
        raise InputError(
            f"y: class {int(np.argmin(present))} has no test sample; accuracy per class is undefined"
        )
    per_class = (
        np.bincount(y, weights=correct, minlength=len(counts)) / present
    )  # one pass, not one per class
    out = {"overall": float(per_class.mean())}
    for name, rule in GROUPS.items():
        members = rule(counts)
        out[name] = float(per_class[members].mean()) if members.any() else None
    out["per_class"] = per_class.tolist()
    return out


def adjusted_logits(
    rule: str, logits: np.ndarray, eta: np.ndarray, log_prior: np.ndarray, tau: float, priors=None
) -> np.ndarray:
    """argmax: z; posthoc_la: z - tau ln pi (true counts); npe_la: z - tau eta(x); each rule of
    ``FIXED_PRIOR_RULES``: z - tau priors[rule], one vector for every sample:

    - npe_marginal: E_x[eta(x)], the PEM's eval-mode output averaged over the training set (count-free);
    - npe_class_mean: the per-class mean of the PEM's training-mode output on its own class's training samples,
      the report's learned vector (what is matched against ln N_c);
    - npe_inverse: ln pi_hat, the log-prior Proposition 1 implies from the learned PEM outputs;
    - posthoc_la_stale: ln pi_old, the prior before the stream's last shift."""
    if rule not in RULE_NAMES:
        raise InputError(f"rule: unknown {rule!r}; choose from {', '.join(RULE_NAMES)}")
    if rule == "argmax":
        return logits
    if rule == "posthoc_la":
        return logits - tau * log_prior
    if rule == "npe_la":
        return logits - tau * eta
    vector = (priors or {}).get(rule)
    if vector is None:
        raise InputError(f"priors: rule {rule!r} needs its prior vector, none was given")
    return logits - tau * vector


def available_rules(priors=None) -> list[str]:
    """The rules that apply: argmax, posthoc_la and npe_la always; each fixed-prior rule whose vector ``priors`` holds
    (npe_inverse needs a linear PEM, posthoc_la_stale a shifting stream)."""
    given = {k: v for k, v in (priors or {}).items() if v is not None}
    unknown = set(given) - set(FIXED_PRIOR_RULES)
    if unknown:
        raise InputError(
            f"priors: unknown rule {sorted(unknown)[0]!r}; fixed-prior rules: {FIXED_PRIOR_RULES}"
        )
    return [r for r in RULES if r not in FIXED_PRIOR_RULES or r in given] + (
        [STALE_RULE] if STALE_RULE in given else []
    )


def accuracy_report(logits, eta, y, counts, tau: float, tau_grid, priors=None, stale_counts=None) -> dict:
    """Accuracy of every rule at ``tau`` and over ``tau_grid``; each fixed-prior rule only when ``priors`` holds its
    vector (``adjusted_logits``), posthoc_la_stale only when ``stale_counts`` are given. Each count group's size
    (``group_sizes``); where a count group is empty, accuracy by count thirds beside it (``accuracy_by_third``)."""
    log_prior = np.log(counts / counts.sum())
    priors = {k: np.asarray(v, dtype=np.float64) for k, v in (priors or {}).items() if v is not None}
    if stale_counts is not None:
        priors[STALE_RULE] = np.log(stale_counts / np.sum(stale_counts))
    rules = available_rules(priors)

    def adjusted(rule, t):
        return adjusted_logits(rule, logits, eta, log_prior, t, priors)

    def acc(rule, t):
        return group_accuracy(adjusted(rule, t).argmax(1) == y, y, counts)

    def calibration(rule):  # one rule's (N, C) probabilities at a time: 1.6 GB each at iNaturalist's test set
        p = softmax(adjusted(rule, tau), axis=1)
        return {"ece": expected_calibration_error(p, y), "bins": reliability_bins(p, y)}

    out = {
        "accuracy": {rule: acc(rule, tau) for rule in rules},
        "tau_sweep": {
            rule: {f"{t:g}": {k: v for k, v in acc(rule, t).items() if k != "per_class"} for t in tau_grid}
            for rule in rules[1:]
        },
        "calibration": {rule: calibration(rule) for rule in rules},
    }
    out["group_sizes"] = group_sizes(y, counts)
    if any(g["classes"] == 0 for g in out["group_sizes"].values()):
        thirds = frequency_groups(counts)
        out["accuracy_by_third"] = {
            rule: {
                g: float(np.mean(np.asarray(out["accuracy"][rule]["per_class"])[m]))
                for g, m in thirds.items()
            }
            for rule in rules
        }
    if len(counts) in INDEX_GROUPS["npe_official"]:
        out["accuracy_by_index"] = {
            source: {
                rule: index_groups(out["accuracy"][rule]["per_class"], table[len(counts)]) for rule in rules
            }
            for source, table in INDEX_GROUPS.items()
        }
    return out


def index_groups(per_class, ranges) -> dict:
    """Mean per-class accuracy over head / medium / tail class-index ranges."""
    return {name: float(np.mean(per_class[a:b])) for name, (a, b) in zip(("head", "medium", "tail"), ranges)}


# results.json's ``priors`` key of each fixed-prior rule's vector (docs/metrics.md)
PRIOR_KEYS = {"npe_marginal": "marginal", "npe_class_mean": "class_mean", "npe_inverse": "implied"}
RULE_FORMAT = "npe-rule/1"


def rule_spec(rule: str, tau: float, priors: dict) -> dict:
    """The inference rule ``rule`` at ``tau`` as a self-contained record (rule.json): which logits it subtracts
    (``"adjusted = z - tau * prior"`` with the prior vector written out, or ``"z - tau * eta(x)"`` for NPE-LA, which
    needs the network's PEM), from results.json's ``priors`` (counts, marginal, class_mean, implied)."""
    if not isinstance(rule, str) or rule not in RULE_NAMES or rule == STALE_RULE:
        raise InputError(f"rule: unknown {rule!r}; choose from {', '.join(RULES)}")
    tau = as_float_scalar("tau", tau, nonnegative=True)
    instance("priors", priors, dict, "results.json's priors mapping (counts, marginal, class_mean, implied)")
    if rule == "argmax":
        vector, tau = None, 0.0
    elif rule == "posthoc_la":
        if "counts" not in priors:
            raise InputError("priors: holds no counts (post-hoc LA subtracts ln pi from the training counts)")
        counts = as_float_array("priors.counts", priors["counts"], positive=True)
        if counts.ndim != 1 or counts.size < 2:
            raise InputError(f"priors.counts: expected one count per class, got shape {counts.shape}")
        vector = np.log(counts) - np.log(counts.sum())
    elif rule == "npe_la":
        vector = None
    else:
        vector = priors.get(PRIOR_KEYS[rule])
        if vector is None:
            raise InputError(f"rule: {rule} has no prior in this run (npe_inverse needs a linear PEM)")
        vector = as_float_array(f"priors.{PRIOR_KEYS[rule]}", vector)
        if vector.ndim != 1:
            raise InputError(
                f"priors.{PRIOR_KEYS[rule]}: expected one value per class, got shape {vector.shape}"
            )
    return {
        "format": RULE_FORMAT,
        "rule": rule,
        "name": RULE_NAMES[rule],
        "tau": tau,
        "per_sample": rule == "npe_la",
        "formula": "z - tau * eta(x)"
        if rule == "npe_la"
        else ("z" if rule == "argmax" else "z - tau * prior"),
        "prior": None if vector is None else [float(v) for v in vector],
    }


def apply_rule(spec: dict, logits, eta=None) -> np.ndarray:
    """The adjusted logits of a rule record (``rule_spec``): z, z - tau * prior, or z - tau * eta(x) (``eta``, the
    PEM's (N, C) eval-mode outputs, needed for NPE-LA only). Predict with ``argmax(axis=1)``."""
    if not isinstance(spec, dict) or spec.get("format") != RULE_FORMAT or spec.get("rule") not in RULE_NAMES:
        raise InputError(f"spec: not a rule record ({RULE_FORMAT}, as rule.json holds)")
    z = as_float_array("logits", logits)
    if z.ndim != 2:
        raise InputError(f"logits: expected (N, C), got shape {z.shape}")
    tau = as_float_scalar("spec.tau", spec.get("tau"), nonnegative=True)
    if spec["per_sample"]:
        if eta is None:
            raise InputError("eta: NPE-LA subtracts the PEM's outputs eta(x); give them, shape (N, C)")
        e = as_float_array("eta", eta)
        if e.shape != z.shape:
            raise InputError(f"eta: expected shape {z.shape} like the logits, got {e.shape}")
        return z - tau * e
    if spec["prior"] is None:
        return z
    prior = as_float_array("spec.prior", spec["prior"])
    if prior.shape != (z.shape[1],):
        raise InputError(f"spec.prior, logits: {prior.size} prior values for logits of {z.shape[1]} classes")
    return z - tau * prior
