"""The minimizer of J_c (Proposition 1 and the logistic loss) against independent references."""

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from npe_theory import lambert_w, logistic_bracket, objective, optimal_logit, optimal_logit_of_log
from npe_theory.reference import mp_lambert_w, mp_logistic_root_of_log, relative_error

log10_x = st.floats(min_value=-300, max_value=300, allow_nan=False)
moderate = st.floats(min_value=-6, max_value=12, allow_nan=False)


@given(st.floats(-150, 150), st.floats(-150, 150), st.floats(-5, 5))
@example(300.0, 0.0, 0.0)
@example(-300.0, 0.0, 0.0)
@example(150.0, -150.0, 5.0)  # x = 1e305: saturation variable overflows only in the product
def test_exp_minimizer_is_lambert_w(pn, plam, pnorm):
    n, lam, fns = 10.0**pn, 10.0**plam, 10.0**pnorm
    with mpmath.workdps(50):
        x = mpmath.mpf(n) * mpmath.mpf(fns) / mpmath.mpf(lam)
        exact = mpmath.re(mpmath.lambertw(x))
    assert relative_error(optimal_logit(n, lam, "exp", fns), exact) <= 1e-15


TINY, HUGE = np.finfo(np.float64).tiny, np.finfo(np.float64).max


@given(st.floats(min_value=np.log(TINY), max_value=np.log(HUGE), allow_nan=False))
@example(float(np.log(TINY)))  # the ends of the normal float range, where the kernel hands over
@example(float(np.log(HUGE)))
@example(float(np.log(1e300)) + 1e-9)  # just above the switch to W(x)
@example(0.0)
@example(-37.0)  # eta ~ x / 2 where 1 + e^eta rounds to 2
def test_logistic_root_from_x_matches_mpmath(L):
    x = float(np.exp(L))
    assume(TINY <= x < np.inf)
    with mpmath.workdps(50):
        exact = mp_logistic_root_of_log(mpmath.log(mpmath.mpf(x)))
    assert relative_error(optimal_logit(x, 1.0, "logistic"), exact) <= 1e-15


@pytest.mark.parametrize("loss", ["exp", "logistic"])
def test_blocks_give_the_pointwise_values(loss):
    """The kernels run in blocks of BLOCK points; every point of a long array equals its value alone."""
    from npe_theory.blocks import BLOCK

    x = np.exp(np.random.default_rng(0).uniform(-700, 700, 2 * BLOCK + 37))
    x[[0, BLOCK - 1, BLOCK, -1]] = [TINY, HUGE, 1.0, 5e-324]
    alone = np.array([optimal_logit(v, 1.0, loss) for v in x])
    np.testing.assert_array_equal(optimal_logit(x, 1.0, loss), alone)
    np.testing.assert_array_equal(optimal_logit(x.reshape(-1, 1), 1.0, loss).ravel(), alone)


def test_subnormal_saturation_is_exact():
    """Below the normal range W(x) = x and the logistic root x / (1 + e^x) = x / 2, both exact."""
    x = np.array([5e-324, 1e-320, TINY / 2])
    np.testing.assert_array_equal(optimal_logit(x, 1.0, "exp"), x)
    np.testing.assert_array_equal(optimal_logit(x, 1.0, "logistic"), x / 2)


@given(st.floats(min_value=np.log(1e-300), max_value=1e300, allow_nan=False))
@example(0.0)  # x = 1: eta_L = 0.40106 (docs/theory.md, section 4)
@example(1e300)
@example(np.log(1e-300))
@example(-700.0)  # a root near 1e-304: iterating in ln eta lost 5.5e-14 here
@example(float(np.log(TINY)))
@example(709.8)  # e^L just beyond the float range: W(e^L) takes over
def test_logistic_root_matches_mpmath(L):
    assume(L >= np.log(TINY))  # below, the root is subnormal and has fewer digits to give
    assert relative_error(optimal_logit_of_log(L, "logistic"), mp_logistic_root_of_log(L)) <= 1e-15


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@given(p=moderate)
@example(p=0.0)
def test_minimizer_agrees_with_brute_force(loss, p):
    """scipy's bounded minimizer on J, knowing nothing of Lambert W."""
    x = 10.0**p
    eta = optimal_logit(x, 1.0, loss)
    hi = max(3.0, np.log(x) + 3.0)
    res = minimize_scalar(
        lambda t: float(objective(t, x, 1.0, loss)),
        bounds=(-5.0, hi),
        method="bounded",
        options={"xatol": 1e-11},
    )
    assert abs(res.x - eta) <= 1e-7 * max(1.0, eta)
    # and it is the global minimum: no grid point does better
    grid = np.linspace(-5.0, hi, 20001)
    assert objective(eta, x, 1.0, loss) <= objective(grid, x, 1.0, loss).min() + 1e-12 * max(1.0, x)


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@given(p=moderate, a=st.floats(-30, 60), b=st.floats(-30, 60), t=st.floats(0.01, 0.99))
def test_objective_is_strictly_convex(loss, p, a, b, t):
    assume(abs(a - b) > 1e-3)
    x = 10.0**p
    j = lambda e: float(objective(e, x, 1.0, loss))  # noqa: E731
    mid = t * a + (1 - t) * b
    # strong convexity with modulus lam_c = 1: J(mid) <= chord - t (1 - t) (a - b)^2 / 2
    chord = t * j(a) + (1 - t) * j(b)
    slack = t * (1 - t) * (a - b) ** 2 / 2
    assert j(mid) <= chord - slack * (1 - 1e-9) + 1e-12 * abs(chord)


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@given(p=log10_x)
@example(p=-300.0)
@example(p=300.0)
def test_stationarity_residual(loss, p):
    """The Newton step J'(eta*) / J''(eta*), relative to eta*, is at rounding level (50-digit arithmetic).

    J'/lam_c = eta - x e^-eta (exp) or eta - x / (1 + e^eta) (logistic); J''/lam_c = 1 + x l''(eta).
    """
    x = 10.0**p
    eta = optimal_logit(x, 1.0, loss)
    with mpmath.workdps(50):
        e, X = mpmath.mpf(eta), mpmath.mpf(x)
        if loss == "exp":
            grad, curv = e - X * mpmath.exp(-e), 1 + X * mpmath.exp(-e)
        else:
            tail = 1 / (1 + mpmath.exp(e))  # 1 - sigmoid(eta), not formed as a difference
            grad, curv = e - X * tail, 1 + X * tail * (1 - tail)
        assert float(abs(grad / curv) / e) <= 1e-15


@given(st.lists(st.floats(-3, 15), min_size=2, max_size=30, unique=True))
def test_increasing_in_count(ps):
    n = 10.0 ** np.sort(np.array(ps))
    assume(np.all(np.diff(n) > 1e-9 * n[1:]))
    for loss in ("exp", "logistic"):
        assert np.all(np.diff(optimal_logit(n, 0.5, loss)) > 0)


@given(moderate)
@example(0.0)
def test_log_count_slope(p):
    """d eta*/d ln n = W/(1+W), against a central finite difference (error ~ h^2)."""
    n, h = 10.0**p, 1e-5
    fd = (optimal_logit(n * np.exp(h), 1.0) - optimal_logit(n * np.exp(-h), 1.0)) / (2 * h)
    w = lambert_w(n)
    assert abs(fd - w / (1 + w)) <= 1e-8
    assert 0 < fd < 1


@given(st.floats(0.1, 5), st.floats(1, 1e6))
def test_log_prior_difference(log_r, log_x):
    """eta*(r x) - eta*(x) - ln r = -ln(W(rx)/W(x)) exactly (mpmath), which tends to 0 like ln r / ln x."""
    d = optimal_logit_of_log(log_x + log_r) - optimal_logit_of_log(log_x) - log_r
    with mpmath.workdps(50):
        exact = -mpmath.log(
            mpmath.lambertw(mpmath.exp(log_x + log_r)) / mpmath.lambertw(mpmath.exp(log_x))
        ).real
    assert abs(d - float(exact)) <= 4 * np.finfo(float).eps * (
        log_x + log_r
    )  # three roundings of size ln(rx)
    assert -log_r < d < 0  # compressed, never reversed
    with mpmath.workdps(
        50
    ):  # the slope of W(e^L) is below 1, so W(rx) - W(x) < ln r and |d| < ln(1 + ln r / W(x)) < ln r / W(x)
        assert abs(exact) <= log_r / mpmath.lambertw(mpmath.exp(log_x)).real


def test_distortion_shrinks_with_scale():
    """At fixed ratio 100 the distortion falls toward 0 as the scale grows (docs/theory.md, section 3, item 4)."""
    logs = np.logspace(0, 8, 50)
    d = np.abs(optimal_logit_of_log(logs + np.log(100.0)) - optimal_logit_of_log(logs) - np.log(100.0))
    assert np.all(np.diff(d) < 0) and d[-1] < 1e-7


@given(st.floats(-12, 12))
@example(-12.0)
@example(0.0)
def test_logistic_bracket(p):
    """W(x - W(x)) < eta_L < W(x), bounds against mpmath, root strictly inside (at 50 digits)."""
    x = 10.0**p
    lo, hi = logistic_bracket(x)
    with mpmath.workdps(80):
        X = mpmath.mpf(x)
        w = mpmath.lambertw(X).real
        exact_lo = mpmath.lambertw(X - w).real
        root = mp_logistic_root_of_log(mpmath.log(X))  # exact ln x, not the rounded float
        assert exact_lo < root < w
    assert relative_error(hi, mp_lambert_w(x)) <= 1e-14
    assert relative_error(lo, exact_lo) <= 1e-14


@given(st.floats(1, 40))
def test_logistic_gap_is_order_log_x_over_x(L):
    """0 < W(x) - eta_L <= ln x / x for x >= e (measured constant about 0.95, docs/theory.md, section 4: O(ln x / x))."""
    with mpmath.workdps(60):
        X = mpmath.exp(mpmath.mpf(L))
        gap = mpmath.lambertw(X).real - mp_logistic_root_of_log(L)
        assert 0 < gap <= mpmath.log(X) / X


def test_spec_worked_values():
    """docs/theory.md, section 4: x = 1 gives 0.40106 vs W(1) = 0.56714; at x = 1e4 the gap is about 6e-4."""
    assert optimal_logit(1.0, 1.0, "logistic") == pytest.approx(0.40106, abs=5e-6)
    assert optimal_logit(1.0, 1.0) == pytest.approx(0.56714, abs=5e-6)
    gap = optimal_logit(1e4, 1.0) - optimal_logit(1e4, 1.0, "logistic")
    assert 5.5e-4 < gap < 6.5e-4


def test_feature_norm_and_lambda_enter_through_x_only():
    a = optimal_logit(200.0, 0.1, "logistic", feature_norm_sq=3.0)
    b = optimal_logit(600.0, 0.1, "logistic")
    c = optimal_logit(6000.0, 1.0, "logistic")
    assert a == pytest.approx(b, rel=1e-14) and b == pytest.approx(c, rel=1e-14)


def test_objective_value_and_broadcast():
    eta = np.linspace(-2, 5, 7)[:, None]
    n = np.array([1.0, 10.0, 100.0])
    j = objective(eta, n, 0.3, "logistic", feature_norm_sq=2.0)
    assert j.shape == (7, 3)
    np.testing.assert_allclose(j, n * np.log1p(np.exp(-eta)) + 0.3 / 4.0 * eta**2, rtol=1e-14)
    assert optimal_logit(n, np.array([[0.1], [1.0]])).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n=0.0, lam=1.0), "n"),
        (dict(n=-5.0, lam=1.0), "n"),
        (dict(n=np.nan, lam=1.0), "n"),
        (dict(n=1.0, lam=0.0), "lam"),
        (dict(n=1.0, lam=np.inf), "lam"),
        (dict(n=1.0, lam=1.0, feature_norm_sq=-1.0), "feature_norm_sq"),
        (dict(n=1.0, lam=1.0, loss="hinge"), "loss"),
        (dict(n=[1.0, 2.0], lam=[1.0, 2.0, 3.0]), "n, lam"),
    ],
)
def test_bad_input_names_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        optimal_logit(**kwargs)


def test_objective_and_bracket_validate():
    with pytest.raises(ValueError, match="^eta"):
        objective(np.nan, 1.0, 1.0)
    with pytest.raises(ValueError, match="^loss"):
        objective(0.0, 1.0, 1.0, loss="square")
    with pytest.raises(ValueError, match="^x"):
        logistic_bracket(0.0)
