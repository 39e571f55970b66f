"""lambert_w and lambert_w_of_exp against mpmath at 50 digits."""

import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from npe_theory import lambert_w, lambert_w_of_exp
from npe_theory.reference import mp_lambert_w, mp_lambert_w_of_exp, relative_error

log10_x = st.floats(min_value=-300, max_value=300, allow_nan=False)


@given(log10_x)
@example(-300.0)
@example(300.0)
@example(float(np.log10(np.e)))  # x = e, where W = 1
@example(-16.0)  # near eps: the series regime of the start value
def test_w_matches_mpmath(p):
    x = 10.0**p
    assert relative_error(lambert_w(x), mp_lambert_w(x)) <= 1e-15


@given(st.floats(min_value=-700, max_value=1e300, allow_nan=False))
@example(1e300)
@example(700.0)  # the switch between the two evaluation routes
@example(700.0000001)
@example(0.0)
def test_w_of_exp_matches_mpmath(L):
    assert relative_error(lambert_w_of_exp(L), mp_lambert_w_of_exp(L)) <= 1e-15


@given(log10_x)
def test_defining_equation(p):
    x = 10.0**p
    w = lambert_w(x)
    with mpmath.workdps(50):
        residual = mpmath.mpf(w) * mpmath.exp(mpmath.mpf(w)) / mpmath.mpf(x) - 1
    assert abs(float(residual)) <= 1e-14 * (1 + w)


def test_zero_is_exact_and_nothing_warns():
    assert lambert_w(0.0) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = lambert_w(np.array([0.0, 5e-324, 1e-300, 1.0, 1e300, np.finfo(float).max]))
        big = lambert_w_of_exp(np.array([-1e300, -800.0, 709.0, 710.0, 1e300]))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(big))
    assert big[0] == 0.0 and big[1] == 0.0  # e^L below the smallest double: W = e^L underflows to 0
    assert relative_error(out[1], mp_lambert_w(5e-324)) <= 1e-14  # subnormal input


def test_broadcasting_and_scalars():
    x = np.array([[0.5], [2.0]]) * np.array([1.0, 10.0, 100.0])
    w = lambert_w(x)
    assert w.shape == (2, 3) and w.dtype == np.float64
    np.testing.assert_allclose(w * np.exp(w), x, rtol=1e-15)
    assert np.ndim(lambert_w(1.0)) == 0
    assert lambert_w_of_exp(np.zeros((0,))).shape == (0,)


@pytest.mark.parametrize("bad", [-1e-300, -1.0, np.nan, np.inf, "abc"])
def test_bad_input_names_argument(bad):
    with pytest.raises(ValueError, match="^x:"):
        lambert_w(bad)
    if bad not in (-1e-300, -1.0):
        with pytest.raises(ValueError, match="^log_x:"):
            lambert_w_of_exp(bad)
