"""The real principal branch W_0 of the Lambert W function and its asymptotic series.

``W(x)`` solves ``w * exp(w) = x``. Both evaluators use two steps of the
Fritsch-Shafer-Crowley iteration (fourth order) from Winitzki's closed-form
start ``l (1 - ln(1 + l) / (2 + l))``, ``l = ln(1 + x)``, whose relative error is
below 2e-2 on the whole half-line; two steps take that below 1e-16.

Accuracy (checked against mpmath at 50 digits by ``npe check`` and the tests):
relative error below 1e-15 for x in [1e-300, 1e300] and for ``W(e^L)`` with
L up to 1e300.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import factorial

import numpy as np

from .blocks import blockwise
from .errors import InputError
from .validate import as_float_array, nonnegative_int, scalar_or_array

# Above this, exp(L) would overflow float64: W(e^L) is then computed from L alone.
_LOG_MAX = 700.0


def _winitzki(l: np.ndarray) -> np.ndarray:
    """Start value from l = ln(1 + x): relative error < 2e-2 for all x >= 0."""
    return l * (1.0 - np.log1p(l) / (2.0 + l))


def _fsc_step(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One Fritsch-Shafer-Crowley step, z = ln(x / w) - w the log-residual.

    w <- w (1 + r (q - r) / (q - 2 r)),  r = z / (1 + w),  q = 2 (1 + w + 2 z / 3) - r.
    Written with q divided by (1 + w) so nothing overflows for w near 1e300.
    """
    r = z / (1.0 + w)
    q = 2.0 * (1.0 + w + (2.0 / 3.0) * z) - r
    return w * (1.0 + r * (q - r) / (q - 2.0 * r))


def _lambert_w_positive(x: np.ndarray) -> np.ndarray:
    """W(x) for finite x > 0; ln(x / w) keeps full relative accuracy at tiny x."""
    w = _winitzki(np.log1p(x))
    for _ in range(2):
        w = _fsc_step(w, np.log(x / w) - w)
    return w


def _lambert_w_from_log(log_x: np.ndarray) -> np.ndarray:
    """W(e^L) for L > _LOG_MAX, from L alone (ln(1 + e^L) = L to double precision).

    Above 1e100 the series ``L - ln L + ln L / L`` is exact to double precision (the next term is
    below (ln L / L)^2 absolute), and the iteration's ``2 (1 + w)`` would overflow near the top of the range.
    """
    w = _winitzki(log_x)
    for _ in range(2):
        w = _fsc_step(w, log_x - np.log(w) - w)
    huge = log_x > 1e100
    if huge.any():
        l1 = np.log(log_x[huge])
        w[huge] = log_x[huge] - l1 + l1 / log_x[huge]
    return w


def _lambert_w_nonnegative(x: np.ndarray) -> np.ndarray:
    """W(x) for finite x >= 0, W(0) = 0 exactly; block by block where x > 0."""
    pos = x > 0
    with np.errstate(all="ignore"):
        if pos.all():
            return blockwise(_lambert_w_positive, x)
        out = np.zeros_like(x)
        out[pos] = blockwise(_lambert_w_positive, x[pos])
    return out


def lambert_w(x):
    """Principal branch ``W(x)`` for real ``x >= 0``: the solution of ``w e^w = x``.

    ``W(0) = 0`` exactly. Vectorized, float64, relative error below 1e-15.
    """
    return scalar_or_array(_lambert_w_nonnegative(as_float_array("x", x, nonnegative=True)))


def lambert_w_of_exp(log_x):
    """``W(e^L)`` for any finite ``L``, without forming ``e^L`` when it would overflow.

    Satisfies ``w + ln w = L``; ``W(e^L) ~ L - ln L`` as L grows.
    """
    log_x = as_float_array("log_x", log_x)
    with np.errstate(under="ignore"):  # e^L underflows to 0 below L ~ -745, where W = e^L = 0 too
        out = _lambert_w_nonnegative(np.exp(np.minimum(log_x, _LOG_MAX)))
    big = log_x > _LOG_MAX
    if big.any():
        with np.errstate(all="ignore"):
            out[big] = _lambert_w_from_log(log_x[big])
    return scalar_or_array(out)


#: Largest series order (and Stirling row) computed: bounded work. Order 6 already errs by (L2/L1)^7.
MAX_ORDER = 50


def stirling1(n: int, k: int) -> int:
    """Unsigned Stirling number of the first kind [n, k] (permutations of n with k cycles), n <= MAX_ORDER + 1."""
    n = nonnegative_int("n", n, maximum=MAX_ORDER + 1)
    k = nonnegative_int("k", k)
    return _stirling1_table(n)[k] if k <= n else 0


@lru_cache(maxsize=None)
def _stirling1_table(n: int) -> tuple[int, ...]:
    # [n+1, k] = n [n, k] + [n, k-1]
    row = [1]
    for m in range(n):
        row = [m * a + b for a, b in zip(row + [0], [0] + row)]
    return tuple(row)


def debruijn_coefficients(order: int) -> tuple[tuple[Fraction, ...], ...]:
    """Exact coefficients of de Bruijn's expansion of W(x) for large x.

    W(x) = L1 - L2 + sum_{j=1..order} L1^{-j} sum_{m=1..j} c[j-1][m-1] L2^m,
    c_{jm} = (-1)^(j-m) / m! * S1(j, j-m+1),  L1 = ln x, L2 = ln ln x.
    """
    return _debruijn(nonnegative_int("order", order, maximum=MAX_ORDER))


@lru_cache(maxsize=None)
def _debruijn(order: int) -> tuple[tuple[Fraction, ...], ...]:
    return tuple(
        tuple(Fraction((-1) ** (j - m) * stirling1(j, j - m + 1), factorial(m)) for m in range(1, j + 1))
        for j in range(1, order + 1)
    )


def asymptotic_logit_of_log(log_x, order: int):
    """The de Bruijn series of ``W(e^L)`` truncated after ``L^{-order}`` (see ``debruijn_coefficients``).

    Needs ``L > 0`` so that ``L2 = ln L`` is real. Error is O((L2/L1)^(order+1)).
    """
    coeffs = debruijn_coefficients(order)
    l1 = as_float_array("log_x", log_x)
    if not np.all(l1 > 0):
        raise InputError("log_x: the series needs ln x > 0, i.e. x > 1")
    with np.errstate(all="ignore"):
        l2 = np.log(l1)
        inv = 1.0 / l1
        tail = np.zeros_like(l1)
        for row in reversed(coeffs):  # Horner in 1/L1; each P_j(L2) by Horner in L2
            p = np.zeros_like(l1)
            for c in reversed(row):
                p = (p + float(c)) * l2
            tail = (tail + p) * inv
        out = l1 - l2 + tail
    if not np.all(np.isfinite(out)):
        raise InputError(
            "log_x: the truncated series overflows this close to ln x = 0 (it is an expansion for large x)"
        )
    return scalar_or_array(out)


def asymptotic_logit(x, order: int):
    """The asymptotic expansion of the optimal PEM logit ``W(x)`` truncated after ``ln(x)^{-order}``.

    W(x) ~ L1 - L2 + L2/L1 + L2 (L2 - 2) / (2 L1^2) + ...,  L1 = ln x, L2 = ln ln x; needs x > 1.
    """
    x = as_float_array("x", x)
    if not np.all(x > 1):
        raise InputError("x: the series needs x > 1 (ln ln x must be real)")
    return asymptotic_logit_of_log(np.log(x), order)
