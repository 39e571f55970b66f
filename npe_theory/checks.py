"""Every claim of Proposition 1 (docs/theory.md, sections 3 and 4) checked over a wide grid: the table of ``npe check``.

Each row compares the float64 code with an independent reference (mpmath at 50
digits, scipy brute-force minimization, finite differences, sympy) and reports the
worst error over the range against a tolerance. Tolerances are bounds argued in
the docstrings, not values read off the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mpmath
import numpy as np
from scipy.optimize import minimize_scalar

from .lambertw import asymptotic_logit_of_log, debruijn_coefficients, lambert_w, lambert_w_of_exp
from .losses import loss_names
from .optimum import logistic_bracket, objective, optimal_logit, optimal_logit_of_log
from .reference import (
    DIGITS,
    mp_lambert_w,
    mp_lambert_w_of_exp,
    mp_logistic_root_of_log,
    mp_optimum,
    mp_push_curvature,
    mp_series,
    relative_error,
)


@dataclass(frozen=True)
class CheckRow:
    claim: str
    checked_range: str
    worst_error: float
    tolerance: float
    passed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _row(claim: str, checked_range: str, errors, tolerance: float) -> CheckRow:
    worst = float(np.max(np.asarray(errors, dtype=float)))
    return CheckRow(claim, checked_range, worst, tolerance, bool(np.isfinite(worst) and worst <= tolerance))


_FLOAT_ENDS = np.array([np.finfo(np.float64).tiny, np.finfo(np.float64).max])


def _w_accuracy() -> list[CheckRow]:
    xs = np.concatenate([np.logspace(-300, 300, 241), _FLOAT_ENDS])
    w = lambert_w(xs)
    # Below L ~ -708, e^L and W(e^L) ~ e^L leave the normal float64 range; above, no limit.
    logs = np.concatenate(
        [-np.logspace(np.log10(708), 0, 20), np.linspace(-5, 5, 21), np.logspace(0.5, 300, 120)]
    )
    wl = lambert_w_of_exp(logs)
    exact_l = [mp_lambert_w_of_exp(v) for v in logs]
    with mpmath.workdps(DIGITS):
        residual = [
            abs(mpmath.mpf(a) * mpmath.exp(mpmath.mpf(a)) / mpmath.mpf(x) - 1) / (1 + a)
            for a, x in zip(w, xs)
        ]
    return [
        _row(
            "W(x) = mpmath lambertw (relative)",
            "x in [tiny, max float]",
            [relative_error(a, mp_lambert_w(x)) for a, x in zip(w, xs)],
            1e-15,
        ),
        _row("W(x) = 0 exactly at x = 0", "x = 0", [abs(float(lambert_w(0.0)))], 0.0),
        _row(
            "W(e^L) = mpmath (relative)",
            "L in [-708, 1e300]",
            [relative_error(a, e) for a, e in zip(wl, exact_l)],
            1e-15,
        ),
        _row(
            "w e^w = x (relative residual / (1 + w))",
            "x in [tiny, max float]",
            [float(r) for r in residual],
            1e-15,
        ),
    ]


def _minimizer_rows() -> list[CheckRow]:
    """For every registered loss: stationarity (mpmath), the root of eta = x p(eta) (mpmath), global minimum (scipy
    bounded brute force) and convexity (finite differences). l' and l'' come from sympy, not from the float64 code."""
    rows = []
    for loss in loss_names():
        push, curvature = mp_push_curvature(loss)
        xs = np.logspace(-300, 300, 121)
        eta = optimal_logit(xs, 1.0, loss)
        with mpmath.workdps(DIGITS):
            stat = []
            for x, e in zip(xs, eta):
                # Newton step J'/J'' relative to eta: J'/lam_c = eta - x p(eta), J''/lam_c = 1 + x l''(eta). Where l'' jumps
                # (a loss of finite support) the step is taken on the side of its root, the curvature of the piece below.
                X, E = mpmath.mpf(x), mpmath.mpf(e)
                g = E - X * push(E)
                curv = curvature(E) if g <= 0 else curvature(E * (1 - mpmath.mpf(10) ** -40))
                stat.append(float(abs(g / (1 + X * curv)) / E))
        rows.append(_row(f"J'(eta*) = 0, {loss}: |J'/J''| / eta*", "x in [1e-300, 1e300]", stat, 1e-15))
        xs = np.logspace(-12, 12, 25)
        rows.append(
            _row(
                f"eta* = mpmath root of eta = x p(eta), {loss} (relative)",
                "x in [1e-12, 1e12]",
                [relative_error(e, mp_optimum(loss, x)) for x, e in zip(xs, optimal_logit(xs, 1.0, loss))],
                1e-15,
            )
        )
        xs = np.logspace(-6, 12, 61)
        eta = optimal_logit(xs, 1.0, loss)
        brute = []
        for x, e in zip(xs, eta):
            hi = np.log(x) + 3.0 if x > 1 else 3.0
            res = minimize_scalar(
                lambda t: float(objective(t, x, 1.0, loss)),
                bounds=(-5.0, hi),
                method="bounded",
                options={"xatol": 1e-10},
            )
            brute.append(abs(res.x - e) / max(1.0, e))
        rows.append(_row(f"eta* = brute-force argmin J, {loss}", "x in [1e-6, 1e12]", brute, 1e-6))
        # J''/lam_c = x l''(eta) + 1 >= 1 everywhere: central second differences on a wide eta grid
        t, h = np.linspace(-20, 60, 801), 1e-3
        curv = []
        for x in xs[::6]:
            d2 = (
                objective(t + h, x, 1.0, loss)
                - 2 * objective(t, x, 1.0, loss)
                + objective(t - h, x, 1.0, loss)
            ) / h**2
            scale = 1.0 + x * np.exp(-np.minimum(t, 0.0) + 2 * h)  # finite-difference rounding grows with J
            curv.append(np.max((1.0 - d2) / scale))
        rows.append(
            _row(f"J''/lam_c >= 1 (strictly convex), {loss}", "eta in [-20, 60]", np.maximum(curv, 0.0), 1e-4)
        )
    return rows


def _count_rows() -> list[CheckRow]:
    n = np.logspace(-3, 15, 400)
    eta = optimal_logit(n, 1.0)
    steps = np.diff(eta)
    w = lambert_w(n)
    h = 1e-5
    fd = (optimal_logit(n * np.exp(h), 1.0) - optimal_logit(n * np.exp(-h), 1.0)) / (2 * h)
    return [
        _row(
            "eta* strictly increasing in n (count of violations)",
            "n in [1e-3, 1e15], lam = 1",
            [np.sum(steps <= 0)],
            0.0,
        ),
        _row(
            "d eta*/d ln n = W/(1+W) (finite difference)", "n in [1e-3, 1e15]", np.abs(fd - w / (1 + w)), 1e-8
        ),
    ]


def _series_rows() -> list[CheckRow]:
    """Truncation error of the series after L1^-n, against mpmath's W at 50 digits.

    Bounded: |W - S_n| <= 2 C_n (L2/L1)^(n+1) for L1 >= 20, C_n = sum_m |c_{n+1,m}|, since the
    next term is at most C_n (L2/L1)^(n+1) when L2 >= 1 and the rest is a small fraction of
    it once L2/L1 < 0.15. Sharp: |W - S_n| L1^(n+1) / |P_{n+1}(L2)| -> 1, the error is the next term.
    """
    rows = []
    l1s = np.logspace(np.log10(20.0), 8, 30)
    for order in range(5):
        c_next = debruijn_coefficients(order + 1)[order]
        bound = 2.0 * float(sum(abs(c) for c in c_next))
        ratios, next_term = [], []
        with mpmath.workdps(DIGITS):
            for l1 in l1s:
                L1 = mpmath.mpf(l1)
                L2 = mpmath.log(L1)
                err = abs(mp_lambert_w_of_exp(L1) - mp_series(L1, order))
                ratios.append(float(err / (L2 / L1) ** (order + 1)))
                if l1 >= 1e6:
                    p_next = sum(
                        mpmath.mpf(c.numerator) / c.denominator * L2**m for m, c in enumerate(c_next, start=1)
                    )
                    next_term.append(float(abs(err * L1 ** (order + 1) / abs(p_next) - 1)))
        rows.append(
            _row(
                f"|W - series_{order}| / (L2/L1)^{order + 1} <= 2 sum|c_{order + 1},m|",
                "ln x in [20, 1e8]",
                ratios,
                bound,
            )
        )
        rows.append(
            _row(
                f"|W - series_{order}| = next term (1 + o(1)): |ratio - 1|",
                "ln x in [1e6, 1e8]",
                next_term,
                1e-3,
            )
        )
    float_err = [
        relative_error(asymptotic_logit_of_log(l1, k), mp_series(l1, k)) for l1 in l1s for k in range(5)
    ]
    rows.append(
        _row("float64 series = mpmath series (relative)", "ln x in [20, 1e8], orders 0-4", float_err, 1e-14)
    )
    return rows


def _log_prior_rows() -> list[CheckRow]:
    """For a fixed ratio r, d(x) = W(r x) - W(x) - ln r = -ln(W(rx)/W(x)) (exact, since W = ln x - ln W)
    tends to 0, and d + ln(L1(rx)/L1(x)) is within ln r * L2 / L1^2 of 0 for L1 >= 10."""
    log_r = np.log(100.0)
    logs = np.logspace(0, 6, 60)
    d = lambert_w_of_exp(logs + log_r) - lambert_w_of_exp(logs) - log_r
    with mpmath.workdps(DIGITS):
        exact = [-mpmath.log(mp_lambert_w_of_exp(L + log_r) / mp_lambert_w_of_exp(L)) for L in logs]
        err_identity = [abs(float(a - e)) / max(1.0, float(L)) * 1e-2 for a, e, L in zip(d, exact, logs)]
        big = logs >= 10
        rest = [
            float(abs(e + mpmath.log((L + log_r) / L)) / (log_r * np.log(L) / L**2))
            for e, L in zip(np.array(exact, dtype=object)[big], logs[big])
        ]
    mono = np.sum(np.diff(np.abs(np.array([float(e) for e in exact]))) >= 0)
    return [
        _row(
            "eta*(r x) - eta*(x) - ln r = -ln(W(rx)/W(x)) (abs error / ln x, x 1e2)",
            "r = 100, ln x in [1, 1e6]",
            err_identity,
            1e-14,
        ),
        _row("|distortion| decreases to 0 (count of violations)", "r = 100, ln x in [1, 1e6]", [mono], 0.0),
        _row(
            "distortion = -ln(L1_c/L1_c') + o(1): rest / (ln r L2 / L1^2) <= 1",
            "r = 100, ln x in [10, 1e6]",
            rest,
            1.0,
        ),
    ]


def _logistic_rows() -> list[CheckRow]:
    # ln x over the whole float range, with its ends, and far beyond (the root is then W(e^L))
    logs = np.concatenate(
        [np.linspace(np.log(_FLOAT_ENDS[0]), np.log(_FLOAT_ENDS[1]), 201), np.logspace(3, 300, 30)]
    )
    eta = optimal_logit_of_log(logs, "logistic")
    exact = [mp_logistic_root_of_log(L) for L in logs]
    xs = np.concatenate([np.exp(np.linspace(-700, 700, 141)), _FLOAT_ENDS])
    eta_x = optimal_logit(xs, 1.0, "logistic")
    with mpmath.workdps(DIGITS):
        exact_x = [mp_logistic_root_of_log(mpmath.log(mpmath.mpf(x))) for x in xs]
    # The bracket in exact arithmetic: W(x - W(x)) < eta_L < W(x), with 50 digits, for ln x in [-690, 40]
    # (beyond that the lower gap, W'(x) (W - eta_L) ~ ln x / x^2 relative, is below 50 digits).
    bl = np.linspace(np.log(1e-300), 40, 120)
    violations, gap_ratio = 0, []
    with mpmath.workdps(DIGITS):
        for L in bl:
            x = mpmath.exp(mpmath.mpf(L))
            upper = mpmath.re(mpmath.lambertw(x))
            lower = mpmath.re(mpmath.lambertw(-x * mpmath.expm1(-upper)))  # x - W(x), no cancellation
            root = mp_logistic_root_of_log(L)
            violations += not (lower < root < upper)
            if L >= 1:
                gap_ratio.append(float((upper - root) / (mpmath.log(x) / x)))
    xs = np.logspace(-12, 12, 49)
    lo, hi = logistic_bracket(xs)
    with mpmath.workdps(3 * DIGITS):  # x - W(x) at 150 digits: the cancellation (~x^2 / x) costs at most 24
        exact_lo = [mpmath.re(mpmath.lambertw(mpmath.mpf(x) - mpmath.lambertw(mpmath.mpf(x)))) for x in xs]
    float_bracket = [
        max(relative_error(a, e), relative_error(b, mp_lambert_w(x)))
        for a, b, e, x in zip(lo, hi, exact_lo, xs)
    ]
    return [
        _row(
            "logistic root of L = mpmath findroot (relative)",
            "ln x in [ln tiny, 1e300]",
            [relative_error(a, e) for a, e in zip(eta, exact)],
            1e-15,
        ),
        _row(
            "logistic root of x = mpmath findroot (relative)",
            "ln x in [-700, 700], tiny, max float",
            [relative_error(a, e) for a, e in zip(eta_x, exact_x)],
            1e-15,
        ),
        _row(
            "W(x - W(x)) < eta_L < W(x) (count of violations)",
            "ln x in [-690, 40], 50 digits",
            [violations],
            0.0,
        ),
        _row("(W(x) - eta_L) / (ln x / x) <= 1", "ln x in [1, 40], 50 digits", gap_ratio, 1.0),
        _row("logistic_bracket = mpmath (relative)", "x in [1e-12, 1e12]", float_bracket, 1e-14),
    ]


def _symbolic_rows() -> list[CheckRow]:
    from .symbolic import derivation_report

    return [
        CheckRow(f"sympy: {step}", detail, 0.0 if ok else 1.0, 0.0, ok)
        for step, ok, detail in derivation_report(6)
    ]


SECTIONS = (
    _w_accuracy,
    _minimizer_rows,
    _count_rows,
    _series_rows,
    _log_prior_rows,
    _logistic_rows,
    _symbolic_rows,
)


def run_checks(progress: bool = False) -> list[CheckRow]:
    """All rows, in the order of docs/theory.md, section 3."""
    from tqdm.auto import tqdm

    rows: list[CheckRow] = []
    for section in tqdm(SECTIONS, desc="npe check", disable=not progress):
        rows.extend(section())
    return rows


def format_table(rows: list[CheckRow]) -> str:
    head = ("claim", "range", "worst error", "tolerance", "result")
    body = [
        (
            r.claim,
            r.checked_range,
            f"{r.worst_error:.3g}",
            f"{r.tolerance:.3g}",
            "PASS" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*line) for line in body)]
    )
