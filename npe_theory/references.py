"""The references a prior report compares a PEM with, each one registered object (docs/report.md, docs/metrics.md).

A reference is a per-class array the learned outputs are measured against (``prior_match``, centered RMSE in
nats): ``ln N_c``, Proposition 1 at the measured norms, the exact equilibrium of the PEM's own objective, the
optimizer's steps replayed, the two-statistic prediction, the spread-aware optimum. Each entry says where its
values are stored in the report (``field``), what they are compared with (``of``), how they are computed from
a ``ReportContext`` (``compute``), when (``level``: "core" every epoch, "all" at evaluations only), and how
tables and figures show it (``label``, ``short``, ``table``, ``marker``, ``color``). The report, the summary
lines, ``npe compare``, ``npe sweep``, the run plots and figures F7/F8 all read this registry.

A new reference: a function of the context returning the per-class values (or None where it does not
apply), registered with ``REFERENCES.register(key, Reference(...))`` here or from a plugin module.
May import: numpy, ``registry``, ``priors``, ``dynamics``, ``equilibrium``, ``spread``, ``collapse``, ``errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .collapse import class_means_of
from .dynamics import finite_time_logit
from .equilibrium import pem_equilibrium
from .errors import InputError
from .priors import norm_statistics, norms_from_statistics, predicted_priors
from .registry import Registry
from .spread import NoRoot, class_spread, spread_inverse, spread_logit


@dataclass
class ReportContext:
    """What every reference may read: validated training outputs ``eta`` (N, C), ``features`` (N, D), ``labels`` (N,),
    ``counts`` (C,), the ``settings`` (``report.PemSettings``), the replayed heads (``{"weight" (K, C, D), "bias" (K, C)}``
    or None), whether the PEM is ``linear``, the outputs in eval mode (or None), the ``level`` asked ("core" or "all")
    and a ``warm`` dict kept between reports of one run. Expensive pieces are computed once, on first use."""

    eta: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    settings: object
    replayed: dict | None = None
    linear: bool = True
    eta_eval: np.ndarray | None = None
    level: str = "all"
    warm: dict | None = None
    extra: dict = field(default_factory=dict)  # fields a reference adds to the report besides its values

    @property
    def num_classes(self) -> int:
        return self.counts.size

    @cached_property
    def class_mean_features(self) -> np.ndarray:
        return class_means_of(self.features, self.labels, self.num_classes)

    @cached_property
    def norm_sq(self) -> np.ndarray:
        mu = self.class_mean_features
        return np.sum(mu * mu, axis=1)

    @cached_property
    def learned(self) -> np.ndarray:
        return _own_class_mean(self.eta, self.labels, self.num_classes)

    @cached_property
    def learned_eval(self) -> np.ndarray | None:
        if self.eta_eval is None:
            return None
        return _own_class_mean(self.eta_eval, self.labels, self.num_classes)

    @cached_property
    def equilibrium(self):
        """The exact minimizer of the PEM's objective on these features (``equilibrium.pem_equilibrium``)."""
        s, C = self.settings, self.num_classes
        start = None if self.warm is None else self.warm.get("equilibrium")
        if start is not None and start.weight.shape != (C, self.features.shape[1]):
            start = None  # a warm start of another shape (a dict carried across runs): a cold one
        eq = pem_equilibrium(
            self.features,
            self.labels,
            C,
            s.weight_decay,
            alpha=s.alpha,
            loss=s.loss,
            reduction=s.reduction,
            bias=s.bias,
            start=start,
            checked=True,  # the report checked its features and labels once (report.check_inputs)
        )
        if self.warm is not None:
            self.warm["equilibrium"] = eq
        return eq

    @cached_property
    def spread(self):
        return class_spread(self.features, self.labels, self.num_classes, bias=self.settings.bias)

    @cached_property
    def spread_references(self):
        """(spread-aware optimum, its implied log-prior of the learned outputs), or None where the problem is
        degenerate (a weight decay at the float range's ends, a fixed point that does not exist)."""
        s = self.settings
        try:
            with np.errstate(
                all="ignore"
            ):  # a non-finite intermediate ends in NoRoot or InputError, not a warning
                spread = spread_logit(
                    self.spread,
                    self.counts,
                    s.weight_decay,
                    loss=s.loss,
                    reduction=s.reduction,
                    weight=s.alpha,
                )
                implied = spread_inverse(
                    self.spread, self.learned, s.weight_decay, loss=s.loss, weight=s.alpha
                )
        except (NoRoot, InputError):
            return None
        if not (np.all(np.isfinite(spread)) and np.all(np.isfinite(implied))):
            return None
        return spread, implied

    @cached_property
    def two_statistic_norms(self) -> np.ndarray | None:
        """The per-class norms two feature scalars imply (docs/theory.md, section 7), or None where a class mean is
        zero."""
        if not np.all(self.norm_sq > 0):
            return None
        return norms_from_statistics(*norm_statistics(self.norm_sq, self.counts), self.counts)

    @cached_property
    def _mean_fields(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(norms, mean-field outputs) at the two-statistic norms and, where no replay was given (the finite-time
        reference then falls back to the mean field), at the class means' norms: one replay of both sets side by side
        (``finite_time_logit`` with S sets), which at 100 classes costs about what one set does. Empty where that
        replay diverges, so that each set is tried on its own."""
        wanted = (self.norm_sq if self.replayed is None else None, self.two_statistic_norms)
        sets = [n for n in wanted if n is not None]
        if not sets:
            return []
        try:
            ends = self._schedule_logit(np.stack(sets)[:, None, :])[:, -1]
        except InputError:
            return []
        return list(zip(sets, ends))

    def _schedule_logit(self, feature_norm_sq) -> np.ndarray:
        s = self.settings
        return finite_time_logit(
            self.counts,
            s.weight_decay,
            s.lr,
            feature_norm_sq=feature_norm_sq,
            momentum=s.momentum,
            alpha=s.alpha,
            batch_size=s.batch_size,
            epochs=s.epochs,
            loss=s.loss,
            reduction=s.reduction,
            bias=s.bias,
            steps=s.steps,
        )

    def mean_field(self, norms) -> np.ndarray:
        """The network-free model at the end of the run's schedule: heavy-ball from zero, expected batch shares, class c's
        features a fixed vector of squared norm ``norms[c]`` (``dynamics.finite_time_logit``); the class means' and the
        two-statistic norms come from one shared replay."""
        for known, eta in self._mean_fields:
            if np.array_equal(known, norms):
                return eta
        return self._schedule_logit(norms)[-1]


def _own_class_mean(eta: np.ndarray, labels: np.ndarray, C: int) -> np.ndarray:
    """m_c = mean over class-c samples of eta_c(x): the diagonal of E[eta | y], without the C x C matrix. ``eta``: (N, C),
    or (N,) already each sample's own class."""
    own = (eta if eta.ndim == 1 else eta[np.arange(len(labels)), labels]).astype(np.float64)
    return np.bincount(labels, weights=own, minlength=C) / np.bincount(labels, minlength=C)


@dataclass(frozen=True)
class Reference:
    """One row of the prior report: ``prior_match[key]`` compares the report's ``of`` field with ``field``."""

    label: str  # the summary line's name
    short: str  # a table column's or a figure legend's name
    field: str  # the report field holding the reference values (computed by ``compute`` unless already there)
    compute: Callable[[ReportContext], np.ndarray | None] | None = None
    of: str = "learned"  # the report field compared with it
    level: str = (
        "core"  # "core": every epoch's report; "all": evaluations only (costlier, or end-of-run predictions)
    )
    linear: bool = False  # needs a linear PEM (its weights define the problem)
    table: bool = False  # a column of npe compare, npe sweep, the training curves and figure F7
    marker: str = "x"
    color: str = "tab:gray"


REFERENCES: Registry[Reference] = Registry("reference", "references")


def _predicted(ctx: ReportContext) -> np.ndarray:
    s = ctx.settings
    return predicted_priors(
        ctx.counts, s.weight_decay, ctx.norm_sq, s.reduction, s.loss, bias=s.bias, weight=s.alpha
    )


def _equilibrium(ctx: ReportContext) -> np.ndarray:
    ctx.extra["equilibrium_grad_norm"] = ctx.equilibrium.grad_norm
    return ctx.equilibrium.eta


def _finite_time(ctx: ReportContext) -> np.ndarray | None:
    """The replay the loop ran on each step's rows, read at the class means; else the mean-field model of the schedule."""
    if ctx.replayed is not None:
        ctx.extra["finite_time_model"] = "sampled replay"
        run = ctx.replayed
        return np.einsum("kcd,cd->kc", run["weight"], ctx.class_mean_features).mean(0) + run["bias"].mean(0)
    if ctx.settings.lr is None:
        return None
    ctx.extra["finite_time_model"] = "mean-field"
    return ctx.mean_field(ctx.norm_sq)


def _two_statistic(ctx: ReportContext) -> np.ndarray | None:
    """Proposition 1 at the norms two feature scalars imply (docs/theory.md, section 7), after the run's own steps when
    its schedule is known, else at equilibrium."""
    norms = ctx.two_statistic_norms
    if norms is None:
        return None
    s = ctx.settings
    if s.lr is None:
        return predicted_priors(
            ctx.counts, s.weight_decay, norms, s.reduction, s.loss, bias=s.bias, weight=s.alpha
        )
    return ctx.mean_field(norms)


def _spread(ctx: ReportContext) -> np.ndarray | None:
    got = ctx.spread_references
    return None if got is None else got[0]


def _implied(ctx: ReportContext) -> np.ndarray | None:
    got = ctx.spread_references
    return None if got is None else got[1]


def _log_counts(ctx: ReportContext) -> np.ndarray:
    return np.log(ctx.counts)


for _key, _ref in (
    ("vs_log_counts", Reference("ln N_c", "ln N_c", "log_counts", _log_counts, table=True, marker="o")),
    (
        "vs_closed_form",
        Reference(
            "closed form (Prop. 1)",
            "Prop. 1",
            "predicted",
            _predicted,
            table=True,
            marker="s",
            color="tab:blue",
        ),
    ),
    (
        "vs_equilibrium",
        Reference(
            "exact equilibrium",
            "equilibrium",
            "equilibrium",
            _equilibrium,
            linear=True,
            table=True,
            marker="D",
            color="tab:green",
        ),
    ),
    (
        "vs_spread",
        Reference(
            "spread-aware (Gaussian classes)",
            "spread-aware",
            "spread",
            _spread,
            level="all",
            linear=True,
            marker="v",
            color="tab:olive",
        ),
    ),
    (
        "implied_vs_log_counts",
        Reference(
            "implied prior (NPE inverse) vs ln N_c",
            "implied prior",
            "log_counts",
            of="implied_log_prior",
            level="all",
            linear=True,
        ),
    ),
    (
        "vs_two_statistic",
        Reference(
            "two-statistic prediction",
            "two-statistic",
            "two_statistic",
            _two_statistic,
            level="all",
            linear=True,
            marker="P",
            color="tab:brown",
        ),
    ),
    (
        "vs_finite_time",
        Reference(
            "finite time",
            "finite time",
            "finite_time",
            _finite_time,
            linear=True,
            table=True,
            marker="^",
            color="tab:purple",
        ),
    ),
    (
        "eval_vs_log_counts",
        Reference("ln N_c, eval-mode outputs", "eval ln N_c", "log_counts", of="learned_eval"),
    ),
    (
        "eval_vs_closed_form",
        Reference("closed form, eval-mode outputs", "eval Prop. 1", "predicted", of="learned_eval"),
    ),
):
    REFERENCES.register(_key, _ref)

#: the report fields whose per-class values a reference needs computed before it (``implied_log_prior`` comes with
#: the spread-aware optimum)
DERIVED_FIELDS = {"implied_log_prior": _implied, "learned_eval": lambda ctx: ctx.learned_eval}


def table_references() -> tuple[str, ...]:
    """The keys shown as columns wherever runs are tabulated (npe compare, npe sweep, training curves, F7)."""
    return REFERENCES.where(lambda r: r.table)


def register_reference(key: str, reference: Reference, replace: bool = False) -> Reference:
    """Add a row to every prior report: ``prior_match[key]`` compares ``reference.of`` with ``reference.field``."""
    return REFERENCES.register(key, reference, replace=replace)
