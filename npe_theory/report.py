"""The prior report of a trained PEM: one function for ``npe train``, ``npe report`` and anyone's own outputs.

NumPy in, a JSON-ready dict out. Given per-sample PEM outputs, penultimate features, labels,
the class counts and the training settings that matter, it compares the learned per-class
output ``e_c = mean of eta_c(x) over class-c training samples`` with every registered reference
(``references.py``; docs/metrics.md): ``ln N_c``, Proposition 1 at the measured class-mean norms, the
exact minimizer of the PEM's own objective on these features, the optimizer's steps replayed, the
spread-aware optimum and the two-statistic prediction; and says which regime the PEM is in from
``lambda_s``, the weight decay it has felt (docs/theory.md, section 5).
May import: numpy and the npe_theory modules below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .collapse import NC1_EXACT_BUDGET, class_means, nc1_of
from .dynamics import lambda_s, steps_per_epoch
from .errors import InputError
from .losses import check_loss
from .priors import norm_statistics, prior_match
from .references import DERIVED_FIELDS, REFERENCES, ReportContext
from .spread import spread_statistics
from .validate import (
    REDUCTIONS,
    as_float_array,
    as_float_scalar,
    choice,
    class_count,
    class_ids,
    instance,
    momentum_value,
    positive_int,
)

#: lambda_s at and above which a PEM is reported as at equilibrium. Near its optimum the PEM output
#: relaxes like exp(-lambda_s (1 + eta sigmoid(eta))), never slower than exp(-lambda_s) (docs/theory.md,
#: section 5), so at 1 even the slowest direction has shed two thirds of its transient. Measured
#: (docs/regimes.md, figure F7): every run with
#: lambda_s >= 1 sat within 0.05 nats of Proposition 1 and of the exact equilibrium; runs below 0.6 were
#: 0.15 to 0.9 nats off Proposition 1, and a short run at 0.47 still 0.25 off its own equilibrium.
EQUILIBRIUM_LAMBDA_S = 1.0
# nats: past the clock's threshold, classification PEMs sat within this of their exact equilibrium from lambda*s = 1.5 on
# (docs/regimes.md). A larger measured gap there is reported as lag: the PEM follows features that are still moving.
EQUILIBRIUM_GAP = 0.05
REGIME_NOTES = {
    "transient": "lambda*s = {:.3g} < {:g}: the PEM has not felt enough weight decay to reach Proposition 1's optimum; "
    "its outputs follow the optimizer's own dynamics (compare vs_finite_time), often steeper than ln N_c.",
    "equilibrium": "lambda*s = {:.3g} >= {:g}: the PEM sits near the optimum of its regularized objective, where "
    "Proposition 1 at the measured norms applies (compare vs_equilibrium and vs_closed_form).",
}


MAX_STEPS = 10**7  # SGD steps of one run's schedule (a 200-epoch ImageNet-LT run at batch 64 takes 360,000)


@dataclass(frozen=True)
class PemSettings:
    """The training settings that decide what a PEM learns.

    weight_decay: lam on the PEM weights (and bias); alpha: PEM loss weight; loss: logistic | exp;
    reduction: mean (batch mean, as the official code) | sum; bias: the PEM has a decayed bias.
    Either ``lambda_s`` directly, or ``lr`` (one rate, or one per epoch), ``batch_size`` and
    ``epochs`` (with ``momentum``) to compute it as ``weight_decay * sum_t lr_t / (1 - momentum)``;
    ``steps`` (one number or one per epoch) gives the steps each epoch took, instead of ceil(N / batch_size).
    """

    weight_decay: float
    alpha: float = 1.0
    loss: str = "logistic"
    reduction: str = "mean"
    bias: bool = True
    momentum: float = 0.9
    lambda_s: float | None = None
    lr: float | list[float] | None = None
    batch_size: int | None = None
    epochs: int | None = None
    steps: int | list[int] | None = None

    def __post_init__(self):
        def keep(name, value):  # frozen: validated values are stored through object.__setattr__
            object.__setattr__(self, name, value)

        keep("weight_decay", as_float_scalar("weight_decay", self.weight_decay, positive=True))
        keep("alpha", as_float_scalar("alpha", self.alpha, positive=True))
        check_loss(self.loss)
        choice("reduction", self.reduction, REDUCTIONS)
        if not isinstance(self.bias, (bool, np.bool_)):
            raise InputError(f"bias: expected true or false, got {self.bias!r}")
        keep("bias", bool(self.bias))
        keep("momentum", momentum_value(self.momentum))
        if self.lambda_s is not None:
            keep("lambda_s", as_float_scalar("lambda_s", self.lambda_s, nonnegative=True))
        if self.lr is not None:
            lr = as_float_array("lr", self.lr, nonnegative=True)
            if lr.ndim > 1:
                raise InputError(f"lr: expected one rate or one per epoch, got shape {lr.shape}")
            keep("lr", float(lr) if lr.ndim == 0 else lr.tolist())
            keep("epochs", positive_int("epochs", self.epochs, maximum=10**7))
            if self.steps is None or self.batch_size is not None:
                keep("batch_size", positive_int("batch_size", self.batch_size, maximum=10**9))
            if self.steps is not None:
                steps = as_float_array("steps", self.steps, positive=True)
                if (
                    steps.ndim > 1
                    or (steps.ndim == 1 and steps.size != self.epochs)
                    or np.any(steps != np.round(steps))
                ):
                    raise InputError(
                        f"steps: expected one whole number of steps, or one per epoch ({self.epochs})"
                    )
                keep("steps", int(steps) if steps.ndim == 0 else [int(v) for v in steps])
            if lr.ndim == 1 and lr.size != self.epochs:
                raise InputError(
                    f"lr: {lr.size} rates for {self.epochs} epochs (give one rate, or one per epoch)"
                )
        if self.lambda_s is None and self.lr is None:
            raise InputError("lambda_s, lr: give lambda_s, or lr with batch_size and epochs to compute it")

    @classmethod
    def from_dict(cls, raw: dict) -> "PemSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(
                f"settings: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "weight_decay" not in raw:
            raise InputError("weight_decay: missing from the settings")
        return cls(**raw)

    def step_rates(self, num_samples: int) -> np.ndarray | None:
        """The learning rate of every step, from lr and epochs, and steps (or ceil(num_samples / batch_size)) per epoch
        (None when lr is not given)."""
        if self.lr is None:
            return None
        steps = self.steps if self.steps is not None else steps_per_epoch(num_samples, self.batch_size)
        if np.sum(np.broadcast_to(steps, (self.epochs,))) > MAX_STEPS:
            raise InputError(
                f"settings: {self.epochs} epochs of {steps} steps are more than the {MAX_STEPS} steps "
                f"a report replays; check epochs and batch_size"
            )
        lr = np.broadcast_to(np.asarray(self.lr, dtype=np.float64), (self.epochs,))
        return np.repeat(lr, steps)

    def felt(self, num_samples: int) -> float:
        return (
            float(self.lambda_s)
            if self.lambda_s is not None
            else lambda_s(self.weight_decay, self.step_rates(num_samples), self.momentum)
        )


def regime(lam_s: float) -> tuple[str, str]:
    """("transient" | "equilibrium", one line of explanation) for the weight decay a PEM has felt."""
    lam_s = as_float_scalar("lam_s", lam_s, nonnegative=True)
    name = "equilibrium" if lam_s >= EQUILIBRIUM_LAMBDA_S else "transient"
    return name, REGIME_NOTES[name].format(lam_s, EQUILIBRIUM_LAMBDA_S)


def _outputs(name: str, value, n: int, C: int) -> np.ndarray:
    arr = as_float_array(name, value, single=True)
    if arr.shape not in ((n, C), (n,)):
        raise InputError(
            f"{name}: expected shape ({n}, {C}) (one row per sample, one column per class) or ({n},) (each sample's "
            f"own class only), got {arr.shape}"
        )
    return arr


def check_inputs(eta, features, labels, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated eta (N, C), features (N, D) (float64, or float32 as given: the report reads them by class or chunk in
    float64), int labels (N,) in [0, C) and float64 counts (C,)."""
    counts = as_float_array("counts", counts, positive=True)
    if counts.ndim != 1 or counts.size < 2:
        raise InputError(f"counts: expected one count per class (at least 2), got shape {counts.shape}")
    C = class_count("counts", counts.size, minimum=2)
    y = class_ids("labels", labels, C, every_class=True, against="counts")
    n = len(y)
    h = as_float_array("features", features, single=True)
    if h.ndim != 2 or len(h) != n:
        raise InputError(
            f"features, labels: expected features of shape ({n}, D) (one row per label), got {h.shape}"
        )
    return _outputs("eta", eta, n, C), h, y, counts


LEVELS = ("all", "core")
REPORT_SHARE = 0.05  # the share of training's arithmetic the per-epoch report may take by default
SMALL_REPORT = 1e9  # operations under which the report runs every epoch whatever the share (about 0.1 s)
NEWTON_STEPS = 3  # Newton steps a warm-started equilibrium takes per class and report, for the estimate


def report_flops(counts, width: int) -> float:
    """Estimated arithmetic of one per-epoch report on features of ``width`` dimensions: per class the equilibrium's
    Newton steps in the cheaper of its two forms, ``min(n_c, D)^2 max(n_c, D)`` each (``equilibrium._NewtonStep``,
    D = width + 1 with the bias), plus NC1's projection ``rows d min(C - 1, d)``, its rows all N or, at scale, up to
    ``NC1_ROWS["core"]`` a class (``_nc1_sample``)."""
    n = as_float_array("counts", counts, positive=True)
    d = positive_int("width", width)
    D = d + 1.0
    k = _nc1_sample((int(n.sum()), d), n.size, "core")
    rows = n.sum() if k is None else np.minimum(n, k).sum()
    return float(
        NEWTON_STEPS * np.sum(np.minimum(n, D) ** 2 * np.maximum(n, D)) + rows * d * min(n.size - 1, d)
    )


def report_cadence(counts, width: int, parameters: int) -> int:
    """1 when one report costs little (``SMALL_REPORT`` operations); else the smallest N such that a report every N
    epochs costs at most ``REPORT_SHARE`` of training, whose arithmetic
    per epoch is taken as 6 multiply-adds per parameter and sample (forward and backward; a convolution does more, so
    the estimate errs towards reporting less often). Deterministic: the same data and network give the same N."""
    n = as_float_array("counts", counts, positive=True)
    training = 6.0 * n.sum() * positive_int("parameters", parameters)
    cost = report_flops(n, width)
    return 1 if cost <= SMALL_REPORT else max(1, int(np.ceil(cost / (REPORT_SHARE * training))))


MAX_ETA_MATRIX = (
    256  # classes up to which the report keeps E[eta | y] whole (its diagonal, the learned prior, always)
)


def pem_report(
    eta,
    features,
    labels,
    counts,
    settings: PemSettings,
    *,
    replayed: dict | None = None,
    eta_eval=None,
    linear: bool = True,
    references: str = "all",
    warm: dict | None = None,
) -> dict:
    """The prior report of a PEM. eta: (N, C) PEM outputs (the prior signal, growing with ln N_c) on the
    training samples, or (N,) each sample's output for its own class (all the learned prior needs: at thousands of
    classes the full matrix is large; E[eta | y] is then not reported), features: (N, D) the features the PEM read
    (float32 is read as it is), labels: (N,), counts: (C,) training counts.

    Every registered reference (``npe_theory.references``) is computed and matched against the learned outputs.
    ``replayed``: the heads of the optimizer replay the training loop ran (``{"weight": (K, C, D), "bias": (K, C)}``).
    ``eta_eval``: the same samples' outputs in another mode (eval-mode BatchNorm), reported beside.
    ``linear``: the PEM is one linear layer (the closed form, the equilibrium and the replay need it).
    ``references``: "all", or "core" for the per-epoch report: only the references of level "core" (without the
    spread-aware ones, whose class SVDs and fixed points cost most, and the two-statistic prediction, a prediction of
    the end of training whose cost grows with the epochs run). ``warm``: a dict kept between calls on one run; the exact
    equilibrium starts from the last one found there and leaves its own (the same answer within the solver's tolerance).
    """
    instance(
        "settings", settings, PemSettings, "a PemSettings (the PEM's weight decay, alpha, loss and schedule)"
    )
    choice("references", references, LEVELS)
    eta, h, y, counts = check_inputs(eta, features, labels, counts)
    ctx = ReportContext(
        eta,
        h,
        y,
        counts,
        settings,
        replayed,
        bool(linear),
        None if eta_eval is None else _outputs("eta_eval", eta_eval, len(y), counts.size),
        references,
        warm,
    )
    lam_s = settings.felt(len(y))
    name, note = regime(lam_s)
    out = {
        "learned": ctx.learned.tolist(),
        "log_counts": np.log(counts).tolist(),
        "mean_norm_sq": ctx.norm_sq.tolist(),
        # C x C: kept up to MAX_ETA_MATRIX classes (at 8,000 it would be 64 M numbers in results.json)
        "eta_matrix": (
            class_means(eta, y, counts.size).tolist()
            if eta.ndim == 2 and counts.size <= MAX_ETA_MATRIX
            else None
        ),
        "nc1": nc1_of(h, y, ctx.class_mean_features, _nc1_sample(h.shape, counts.size, references)),
        "closed_form_applies": bool(linear),
        "lambda_s": lam_s,
        "regime": name,
        "regime_note": note,
        "equilibrium": None,
        "equilibrium_grad_norm": None,
        "finite_time": None,
        "finite_time_model": None,
        "lagging": None,
    }
    if linear:
        out.update(spread=None, two_statistic=None)
    values = {"learned": ctx.learned, "log_counts": np.log(counts)}
    makers = {
        **{r.field: r.compute for _, r in REFERENCES.items() if r.compute is not None},
        **DERIVED_FIELDS,
    }
    refs = {}
    for key, ref in REFERENCES.items():
        if (ref.level == "all" and references == "core") or (ref.linear and not linear):
            continue
        for name_ in (ref.of, ref.field):
            if name_ not in values:
                got = makers[name_](ctx) if name_ in makers else None
                values[name_] = None if got is None else np.asarray(got, dtype=np.float64)
                if values[name_] is not None:
                    out[name_] = values[name_].tolist()
        if values[ref.of] is not None and values[ref.field] is not None:
            refs[key] = prior_match(values[ref.of], reference=values[ref.field]).as_dict()
    out.update(ctx.extra)
    if linear:
        gap = refs["vs_equilibrium"]["centered_rmse"]
        out["lagging"] = bool(name == "equilibrium" and gap > EQUILIBRIUM_GAP)
        if out["lagging"]:
            out["regime_note"] += (
                f" Measured, though, it is {gap:.2f} nats from that optimum (more than {EQUILIBRIUM_GAP:g}): "
                "it lags features that are still moving (docs/regimes.md); read vs_equilibrium, not "
                "vs_closed_form, as its reference."
            )
        eq, predicted = values["equilibrium"], values["predicted"]
        out["decomposition"] = {
            "non_stationarity": gap,
            "non_collapse": prior_match(eq, reference=predicted).centered_rmse,
        }
        g, beta = norm_statistics(ctx.norm_sq, counts) if np.all(ctx.norm_sq > 0) else (None, None)
        out["two_statistics"] = {"norm_sq_geomean": g, "norm_count_exponent": beta}
        if references == "all":
            out["two_statistics"]["spread_ratio"] = spread_statistics(ctx.spread)[1]
        if values.get("spread") is not None:
            out["decomposition"].update(
                spread=prior_match(values["spread"], reference=predicted).centered_rmse,
                rest=prior_match(eq, reference=values["spread"]).centered_rmse,
            )
    out["prior_match"] = refs
    out["settings"] = asdict(settings)
    return out


def _nc1_sample(shape, C: int, references: str = "all") -> int | None:
    """Rows per class NC1 is estimated from (``collapse.nc1_of``), or None for the exact value: exact while the
    projection of every row costs at most ``NC1_EXACT_BUDGET`` operations (every set of docs/regimes.md); beyond it,
    ``NC1_ROWS[references]``."""
    n, d = shape
    return None if n * d * min(C - 1, d) <= NC1_EXACT_BUDGET else NC1_ROWS[references]


#: rows per class of the NC1 estimate at scale: 64 at evaluations (relative error about 1 / sqrt(64 C), 0.4% at 1,000
#: classes), 16 in the per-epoch report (0.8%), whose NC1 is read as a trend; the projection was the per-epoch report's
#: largest part at 1,000 classes x 2,048 (docs/report.md, "The report at scale")
NC1_ROWS = {"all": 64, "core": 16}


def summary_lines(pem: dict, sign: str = "eta") -> list[str]:
    """The report in a few printable lines: every reference's centered RMSE, the regime and its note. ``sign``: how the
    outputs were read (``npe report --sign``), so a suspected sign error points the right way."""
    lines = []
    if any(r.of == "learned_eval" and k in pem["prior_match"] for k, r in REFERENCES.items()):
        lines.append(
            "  (lines without 'eval-mode': the PEM's training-mode outputs, what its loss saw; 'eval-mode': the "
            "outputs NPE-LA subtracts, with BatchNorm's running statistics; docs/report.md)"
        )
    lines.append(
        f"  (centered RMSE and max deviation in nats, after removing the best constant: under {CLOSE_NATS:g} is a close "
        f"match, above {FAR_NATS:g} a poor one; slope 1 means the same spread)"
    )
    for key, ref in REFERENCES.items():
        m = pem["prior_match"].get(key)
        if m is None:
            continue
        model = pem.get(f"{ref.field}_model")
        label = ref.label + (f" ({model})" if model else "")
        if ref.of != "learned" and ref.of != "learned_eval":  # another quantity than the PEM's outputs
            slope = "-" if m["slope"] is None else f"{m['slope']:.2f}"
            lines.append(
                f"  {label:<37} centered RMSE {m['centered_rmse']:.3f}, max dev {m['max_deviation']:.3f}, slope {slope}"
            )
            continue
        slope = "-" if m["slope"] is None else f"{m['slope']:.2f}"
        lines.append(
            f"  PEM vs {label:<30} centered RMSE {m['centered_rmse']:.3f}, max dev {m['max_deviation']:.3f}, slope {slope}"
        )
    if "decomposition" in pem:
        d = pem["decomposition"]
        lines.append(
            f"  gap split: non-stationarity {d['non_stationarity']:.3f} (learned vs equilibrium), "
            f"non-collapse {d['non_collapse']:.3f} (equilibrium vs Prop. 1)"
        )
        if "spread" in d:
            lines.append(
                f"  non-collapse split: spread {d['spread']:.3f} (spread-aware vs Prop. 1), "
                f"rest {d['rest']:.3f} (equilibrium vs spread-aware)"
            )
    if pem.get("nc1") is not None:
        lines.append(
            f"  NC1 {pem['nc1']:.3g}: within-class over between-class feature spread (0 is Neural Collapse; not part of the gap)"
        )
    lines.append(f"  regime: {pem['regime']} ({pem['regime_note']})")
    slope = pem["prior_match"]["vs_log_counts"]["slope"]
    if (
        slope is not None and slope < 0
    ):  # a PEM's output grows with ln N_c; falling outputs point at the other sign convention
        fix = (
            "the official code's PEM output is p = -eta; npe report --sign p reads such files"
            if sign == "eta"
            else "these were read with --sign p (negated); if the files hold eta itself, leave --sign out"
        )
        lines.append(
            f"  warning: the learned outputs fall as the counts grow (slope {slope:.2f} on ln N_c): a likely sign error ({fix})"
        )
    if not pem["closed_form_applies"]:
        lines.append("  (MLP PEM: the closed form, the equilibrium and the replay assume a linear PEM)")
    lines.append(f"  found: {finding(pem)}")
    return lines


CLOSE_NATS, FAR_NATS = 0.05, 0.2  # the summary's reading of a centered RMSE


def finding(pem: dict) -> str:
    """One sentence on what the report found: how far the PEM is from ln N_c, and whether Proposition 1 (or the
    exact equilibrium, for a PEM still moving) explains the difference."""
    m = pem["prior_match"]
    log_n = m["vs_log_counts"]
    slope = "-" if log_n["slope"] is None else f"{log_n['slope']:.2f}"
    near = f"{log_n['centered_rmse']:.2f} nats from ln N_c, slope {slope}"
    refs = [(k, m[k]["centered_rmse"]) for k in ("vs_closed_form", "vs_equilibrium") if k in m]
    if not refs:
        return f"the PEM is {near}; no closed form applies to this PEM"
    close = [kv for kv in refs if kv[1] <= CLOSE_NATS]  # Proposition 1 first when it is close enough
    key, best = close[0] if close else min(refs, key=lambda kv: kv[1])
    which = (
        "Proposition 1 at the measured norms"
        if key == "vs_closed_form"
        else "the exact equilibrium of its objective"
    )
    if log_n["centered_rmse"] <= CLOSE_NATS:
        return f"the PEM is ln N_c up to a constant ({near})"
    if best <= CLOSE_NATS:
        return f"the PEM is not ln N_c ({near}), but {which} explains it to {best:.2f} nats"
    if best <= FAR_NATS:
        return f"the PEM is {near}; {which} explains it to {best:.2f} nats, a partial match ({pem['regime']} regime)"
    return f"the PEM is {near}, and no reference explains it (best: {which}, {best:.2f} nats): read the regime note"
