"""The de Bruijn series: coefficients, float evaluation and the truncation order, against mpmath."""

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sympy.functions.combinatorial.numbers import stirling

from npe_theory import asymptotic_logit, asymptotic_logit_of_log, debruijn_coefficients, stirling1
from npe_theory.reference import mp_lambert_w_of_exp, mp_series, relative_error


@pytest.mark.parametrize("n", range(0, 12))
def test_stirling_numbers_match_sympy(n):
    assert [stirling1(n, k) for k in range(n + 1)] == [
        int(stirling(n, k, kind=1, signed=False)) for k in range(n + 1)
    ]


def test_first_coefficients_as_spec_writes_them():
    """docs/theory.md, section 3, item 3: L2/L1 + L2 (L2 - 2) / (2 L1^2) + L2 (2 L2^2 - 9 L2 + 6) / (6 L1^3)."""
    c = debruijn_coefficients(3)
    assert c[0] == (1,)
    assert c[1] == (-1, pytest.approx(0.5))
    assert [float(v) for v in c[2]] == [1.0, -1.5, 1 / 3]


@given(st.floats(1.0, 1e8), st.integers(0, 6))
@example(1.0, 0)
@example(1e8, 6)
def test_float_series_matches_mpmath_series(L1, order):
    assert relative_error(asymptotic_logit_of_log(L1, order), mp_series(L1, order)) <= 1e-14


@given(st.floats(20.0, 1e8), st.integers(0, 4))
@example(20.0, 0)
def test_truncation_error_order(L1, order):
    """|W - S_n| <= 2 C_n (L2/L1)^(n+1) with C_n the next term's absolute coefficient sum."""
    with mpmath.workdps(50):
        err = abs(mp_lambert_w_of_exp(L1) - mp_series(L1, order))
        L2 = mpmath.log(L1)
        bound = (
            2 * sum(abs(float(c)) for c in debruijn_coefficients(order + 1)[order]) * (L2 / L1) ** (order + 1)
        )
        assert err <= bound


def test_each_order_improves_at_large_x():
    L1 = 1e4
    errs = [abs(float(mp_lambert_w_of_exp(L1) - mp_series(L1, k))) for k in range(6)]
    assert all(b < a * 0.01 for a, b in zip(errs, errs[1:]))


def test_x_and_log_forms_agree():
    x = np.array([3.0, 1e5, 1e300])
    np.testing.assert_allclose(asymptotic_logit(x, 3), asymptotic_logit_of_log(np.log(x), 3), rtol=1e-15)


def test_bad_input():
    with pytest.raises(ValueError, match="^x"):
        asymptotic_logit(1.0, 2)
    with pytest.raises(ValueError, match="^order"):
        asymptotic_logit(10.0, -1)
    with pytest.raises(ValueError, match="^order"):
        asymptotic_logit(10.0, 1.5)
    with pytest.raises(ValueError, match="^log_x"):
        asymptotic_logit_of_log(0.0, 2)
