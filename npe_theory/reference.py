"""High-precision references (mpmath) that the checks and tests compare against.

Nothing here is used by the fast float64 code; it is the independent yardstick.
"""

from __future__ import annotations

import mpmath

DIGITS = 50


def _mp(v) -> mpmath.mpf:
    return mpmath.mpf(float(v)) if not isinstance(v, mpmath.mpf) else v


def mp_lambert_w_of_exp(log_x) -> mpmath.mpf:
    """W(e^L) at DIGITS digits; mpmath's exponent range makes e^(1e300) representable."""
    with mpmath.workdps(DIGITS):
        return mpmath.re(mpmath.lambertw(mpmath.exp(_mp(log_x))))


def mp_lambert_w(x) -> mpmath.mpf:
    with mpmath.workdps(DIGITS):
        return mpmath.re(mpmath.lambertw(_mp(x)))


def mp_logistic_root_of_log(log_x) -> mpmath.mpf:
    """Root of eta (1 + e^eta) = e^L at DIGITS digits: Newton's method in t = ln eta,

    g(t) = t + ln(1 + e^(e^t)) - L, stopped on a relative step (an absolute
    tolerance cannot be met when L is near 1e300).
    """
    with mpmath.workdps(DIGITS + 10):
        L = _mp(log_x)
        t = mpmath.log(mpmath.re(mpmath.lambertw(mpmath.exp(L))))
        for _ in range(200):
            eta = mpmath.exp(t)
            g = t + mpmath.log1p(mpmath.exp(eta)) - L
            step = g / (1 + eta / (1 + mpmath.exp(-eta)))
            t -= step
            if abs(step) <= mpmath.mpf(10) ** (-DIGITS - 2) * max(1, abs(t)):
                return +mpmath.exp(t)
        raise ArithmeticError(f"mp_logistic_root_of_log: Newton did not converge at L = {log_x}")


def mp_series(log_x, order: int) -> mpmath.mpf:
    """The truncated de Bruijn series evaluated at DIGITS digits, from the exact coefficients."""
    from .lambertw import debruijn_coefficients

    with mpmath.workdps(DIGITS):
        l1 = _mp(log_x)
        l2 = mpmath.log(l1)
        total = l1 - l2
        for j, row in enumerate(debruijn_coefficients(order), start=1):
            total += (
                sum(mpmath.mpf(c.numerator) / c.denominator * l2**m for m, c in enumerate(row, start=1))
                / l1**j
            )
        return total


def relative_error(approx, exact) -> float:
    """|approx / exact - 1| (|approx| when exact is 0), as a float."""
    with mpmath.workdps(DIGITS):
        a = mpmath.mpf(float(approx))
        return float(abs(a) if exact == 0 else abs(a / exact - 1))


def mp_push_curvature(loss):
    """(p, l'') of a registered loss as mpmath functions, differentiated by sympy from its symbolic form: a reference
    independent of the float64 code's own formulas."""
    import sympy as sp

    from .losses import get_loss

    eta = sp.Symbol("eta", real=True)
    l = get_loss(loss).symbolic(eta)
    return sp.lambdify(eta, -sp.diff(l, eta), "mpmath"), sp.lambdify(eta, sp.diff(l, eta, 2), "mpmath")


def mp_optimum(loss, x) -> mpmath.mpf:
    """The root of eta = x p(eta) at DIGITS digits, by bisection of [0, x p(0)] (g = eta - x p(eta) increases from
    g(0) < 0), p from sympy: slow and independent of every formula the float64 code uses."""
    push, _ = mp_push_curvature(loss)
    with mpmath.workdps(DIGITS + 10):
        X = _mp(x)
        lo, hi = mpmath.mpf(0), X * push(mpmath.mpf(0))
        while hi - lo > mpmath.mpf(10) ** (-DIGITS - 5) * hi:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mid - X * push(mid) < 0 else (lo, mid)
        return +(lo + hi) / 2
