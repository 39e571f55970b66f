"""From a count profile to the prior a PEM will learn, and how well estimates match log-counts.

docs/theory.md section 2, docs/metrics.md and docs/data.md: ``count_profile`` builds long-tailed counts,
``predicted_priors`` gives the optimal PEM output per class for every variant of
the training objective, ``prior_match`` measures "log-prior up to a constant".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import log_softmax, softmax

from .errors import InputError
from .losses import get_loss
from .optimum import optimal_logit
from .validate import MAX_CLASSES, REDUCTIONS, as_float_array, as_float_scalar, choice, positive_int

PROFILES = ("exp", "step")
MAX_LOG_SATURATION = 700.0  # ln x given to outputs beyond a loss's reach (the largest prior, still finite)

#: The conventions of the paper's official code (docs/theory.md, section 1): batch-mean loss, decayed PEM bias,
#: one-way logistic loss with weight 1. ``predicted_priors(counts, lam, norms, **OFFICIAL_CODE)``.
OFFICIAL_CODE = {"reduction": "mean", "bias": True, "loss": "logistic", "weight": 1.0}


def count_profile(kind: str, num_classes: int, n_max: int, imbalance: float) -> np.ndarray:
    """Long-tailed class counts, head first.

    exp:  N_c = floor(n_max * imbalance^(-c / (C - 1))), c = 0..C-1 (the CIFAR-LT protocol);
    step: the first floor(C / 2) classes get n_max, the rest floor(n_max / imbalance).
    """
    choice("kind", kind, PROFILES)
    num_classes = positive_int("num_classes", num_classes, maximum=MAX_CLASSES)
    n_max = positive_int("n_max", n_max, maximum=2**53)
    imbalance = as_float_scalar("imbalance", imbalance)
    if imbalance < 1:
        raise InputError(f"imbalance: must be >= 1 (head over tail count), got {imbalance!r}")
    c = np.arange(num_classes)
    if kind == "exp":
        # Written as (1/rho)^(c/(C-1)) like the LDAM-DRW code, so floors land on the published totals.
        frac = (1.0 / imbalance) ** (c / max(num_classes - 1.0, 1.0))
    else:
        frac = np.where(c < num_classes // 2, 1.0, 1.0 / imbalance)
    counts = (n_max * frac).astype(np.int64)
    if counts.min() < 1:
        raise InputError(f"imbalance: {imbalance:g} leaves the tail class of n_max = {n_max} with no sample")
    return counts


def _counts(counts) -> np.ndarray:
    arr = as_float_array("counts", counts, positive=True)
    if arr.ndim != 1 or arr.size < 1:
        raise InputError(f"counts: expected a 1-D array of class counts, got shape {arr.shape}")
    return arr


def saturation(
    counts, lam, feature_norm_sq=1.0, reduction: str = "sum", bias: bool = False, weight: float = 1.0
) -> np.ndarray:
    """x_c = weight * m_c * (feature_norm_sq_c + [bias]) / lam, m_c = N_c ("sum") or pi_c ("mean"); +inf where x_c
    lies beyond the float64 range (its true value overflowed: ``predicted_priors`` works in log space and takes it)."""
    n = _effective_counts(counts, reduction, weight)
    with np.errstate(over="ignore"):
        return n * _norm_term(feature_norm_sq, bias, n.shape) / as_float_scalar("lam", lam, positive=True)


def _effective_counts(counts, reduction: str, weight: float) -> np.ndarray:
    counts = _counts(counts)
    choice("reduction", reduction, REDUCTIONS)
    weight = as_float_scalar("weight", weight, positive=True)
    out = weight * (counts if reduction == "sum" else counts / counts.sum())
    if not np.all(out > 0):
        raise InputError(
            f"weight, counts: the effective counts weight * m_c underflow to 0 (weight {weight!r})"
        )
    return out


def _norm_term(feature_norm_sq, bias: bool, shape) -> np.ndarray:
    if not isinstance(bias, (bool, np.bool_)):
        raise InputError(f"bias: expected true or false, got {bias!r:.60}")
    fns = as_float_array("feature_norm_sq", feature_norm_sq, nonnegative=True)
    if fns.ndim > 1 or (fns.ndim == 1 and fns.shape != shape):
        raise InputError(
            f"feature_norm_sq: expected a scalar or one value per class {shape}, got shape {fns.shape}"
        )
    total = fns + (1.0 if bias else 0.0)
    if not np.all(total > 0):
        raise InputError("feature_norm_sq: must be > 0 when the PEM has no bias")
    return np.broadcast_to(total, shape)


def predicted_priors(
    counts,
    lam,
    feature_norm_sq=1.0,
    reduction: str = "sum",
    loss: str = "exp",
    bias: bool = False,
    weight: float = 1.0,
) -> np.ndarray:
    """Optimal PEM output per class under Neural Collapse (docs/theory.md, section 2).

    eta_c = the optimum of the loss at x_c (``optimal_logit``: W(x_c) for "exp", the root of eta (1 + e^eta) = x_c
    for "logistic", 2 x_c / (2 x_c + 1) for "squared_hinge"), with x_c = weight * m_c * (||mu_c||^2 + [bias]) / lam,
    m_c = N_c ("sum") or N_c / N ("mean"). ``feature_norm_sq`` is a scalar or the measured squared norm of each class.
    """
    get_loss(loss)
    n = _effective_counts(counts, reduction, weight)
    return np.asarray(optimal_logit(n, lam, loss, _norm_term(feature_norm_sq, bias, n.shape)))


def norm_statistics(norm_sq, counts) -> tuple[float, float]:
    """(g, beta): the least-squares fit ``ln ||mu_c||^2 = ln g + beta (ln N_c - mean_c ln N_c)``. g is the geometric mean
    of the squared class-mean norms (the scale of x_c) and beta how they grow with the class count (beta > 0: head
    classes have longer means). Two scalars that ``norms_from_statistics`` turns back into one norm per class."""
    n = as_float_array("norm_sq", norm_sq, positive=True)
    c = _counts(counts)
    if n.shape != c.shape:
        raise InputError(
            f"norm_sq, counts: expected one squared norm per class ({c.size}), got shape {n.shape}"
        )
    lc = np.log(c) - np.log(c).mean()
    ln = np.log(n)
    denom = float(lc @ lc)
    return float(np.exp(ln.mean())), float(lc @ (ln - ln.mean()) / denom) if denom > 0 else 0.0


def norms_from_statistics(geomean: float, exponent: float, counts) -> np.ndarray:
    """||mu_c||^2 = g * exp(beta (ln N_c - mean_c ln N_c)): the class-mean norms the two statistics imply."""
    c = _counts(counts)
    g = as_float_scalar("geomean", geomean, positive=True)
    beta = as_float_scalar("exponent", exponent)
    with np.errstate(over="ignore"):
        out = g * np.exp(beta * (np.log(c) - np.log(c).mean()))
    if not np.all(np.isfinite(out)):
        raise InputError("geomean, exponent: the implied class-mean norms overflow the float64 range")
    return out


@dataclass(frozen=True)
class PriorMatch:
    """How closely estimates e_c match a reference r_c (default ln N_c) up to an additive constant.

    offset: b* = mean(e - r); centered_rmse, max_deviation: RMS and max |e - r - b*|;
    rmse: RMS of e - r with no offset; slope, intercept, r2: least squares of e on r;
    spearman: rank correlation of e and r; kl: KL(softmax(r) || softmax(e)) (for r = ln N,
    softmax(r) = pi); tv: total variation between them. slope/intercept are None when r is
    constant, r2 and spearman when e or r is constant (undefined, never NaN).
    """

    offset: float
    centered_rmse: float
    max_deviation: float
    rmse: float
    slope: float | None
    intercept: float | None
    r2: float | None
    spearman: float | None
    kl: float
    tv: float
    num_classes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _is_constant(v: np.ndarray) -> bool:
    """All values equal up to rounding: a spread below 16 ulps of the largest magnitude."""
    return bool(
        np.ptp(v) <= 16 * np.finfo(np.float64).eps * max(float(np.max(np.abs(v))), np.finfo(np.float64).tiny)
    )


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing the mean of their ranks (scipy.stats.rankdata's "average"), without
    importing scipy.stats (a second of start-up)."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def prior_match(estimates, counts=None, *, reference=None) -> PriorMatch:
    """Compare per-class estimates with ``ln(counts)`` (or any ``reference`` log-values, e.g. a prediction)."""
    e = as_float_array("estimates", estimates)
    if (counts is None) == (reference is None):
        raise InputError("counts, reference: give exactly one of them")
    r = np.log(_counts(counts)) if counts is not None else as_float_array("reference", reference)
    if e.ndim != 1 or e.shape != r.shape:
        raise InputError(
            f"estimates, {'counts' if counts is not None else 'reference'}: expected estimates of shape {r.shape} "
            f"to match, got {e.shape}"
        )
    if e.size < 2:
        raise InputError("estimates: need at least 2 classes to compare up to a constant")
    if np.max(np.abs(e)) > 1e150 or np.max(np.abs(r)) > 1e150:
        raise InputError(
            "estimates: values beyond 1e150 in magnitude are not log-priors (squares would overflow)"
        )
    dev = e - r
    offset = float(dev.mean())
    centered = dev - offset
    r_c, e_c = r - r.mean(), e - e.mean()
    r_const, e_const = _is_constant(r), _is_constant(e)
    # each side scaled to unit size first, so tiny spreads (1e-200) do not underflow to 0/0
    r_scale, e_scale = float(np.max(np.abs(r_c))), float(np.max(np.abs(e_c)))
    r_u = r_c / r_scale if r_scale > 0 else r_c
    e_u = e_c / e_scale if e_scale > 0 else e_c
    with np.errstate(over="ignore", invalid="ignore"):
        slope = float(r_u @ e_u) / float(r_u @ r_u) * (e_scale / r_scale) if not r_const else None
        intercept = float(e.mean() - slope * r.mean()) if slope is not None else None
    if slope is None or not (
        np.isfinite(slope) and np.isfinite(intercept)
    ):  # beyond the float range: undefined here
        slope = intercept = None
    r2 = spearman = None
    if not (r_const or e_const):
        resid = e_u - (float(r_u @ e_u) / float(r_u @ r_u)) * r_u
        r2 = float(1.0 - (resid @ resid) / (e_u @ e_u))
        spearman = float(np.corrcoef(average_ranks(e), average_ranks(r))[0, 1])
        if not np.isfinite(spearman):  # nearly constant inputs: ranks tie
            spearman = None
    p, q = softmax(r), softmax(e)
    kl = float(np.sum(p * (log_softmax(r) - log_softmax(e))))
    return PriorMatch(
        offset=offset,
        centered_rmse=float(np.sqrt(np.mean(centered**2))),
        max_deviation=float(np.max(np.abs(centered))),
        rmse=float(np.sqrt(np.mean(dev**2))),
        slope=slope,
        intercept=intercept,
        r2=r2,
        spearman=spearman,
        kl=max(kl, 0.0),
        tv=float(0.5 * np.abs(p - q).sum()),
        num_classes=int(e.size),
    )


def implied_log_prior(
    eta,
    lam,
    feature_norm_sq=1.0,
    loss: str = "logistic",
    bias: bool = True,
    weight: float = 1.0,
    floor: float = 1e-6,
) -> np.ndarray:
    """Invert the optimum: the log-share ``ln pi_c`` (up to a constant) that makes ``eta_c`` optimal.

    ln x_c = ln eta - ln p(eta) (``OneWayLoss.log_saturation``: ln eta + softplus(eta) for the logistic root,
    ln eta + eta for W), and ln pi_c = ln x_c - ln(weight * (feature_norm_sq_c + [bias]) / lam) for a batch-mean
    loss. Outputs at or below 0 have no preimage; they are raised to ``floor`` (the smallest prior). Outputs a loss
    of finite support never reaches (the squared hinge's 1 and above) get the largest share, ln x = 700.
    """
    spec = get_loss(loss)
    e = as_float_array("eta", eta)
    if e.ndim != 1:
        raise InputError(f"eta: expected one output per class, got shape {e.shape}")
    lam = as_float_scalar("lam", lam, positive=True)
    weight = as_float_scalar("weight", weight, positive=True)
    e = np.maximum(e, floor)
    log_x = np.minimum(spec.log_saturation(e), MAX_LOG_SATURATION)
    return log_x - (
        np.log(weight) + np.log(_norm_term(feature_norm_sq, bias, e.shape)) - np.log(lam)
    )  # no overflow at lam 1e-300
