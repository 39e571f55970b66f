"""count_profile, predicted_priors and prior_match."""

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npe_theory.priors import OFFICIAL_CODE, count_profile, predicted_priors, prior_match, saturation


def test_cifar_lt_totals():
    """The published sizes of CIFAR-10-LT and CIFAR-100-LT at imbalance 100."""
    assert count_profile("exp", 10, 5000, 100).sum() == 12406
    assert count_profile("exp", 100, 500, 100).sum() == 10847
    c = count_profile("exp", 100, 500, 100)
    assert c[0] == 500 and c[-1] == 5 and np.all(np.diff(c) <= 0)


def test_step_profile_and_balanced():
    assert count_profile("step", 10, 5000, 10).tolist() == [5000] * 5 + [500] * 5
    assert count_profile("exp", 4, 100, 1).tolist() == [100] * 4
    assert count_profile("exp", 1, 7, 50).tolist() == [7]


@pytest.mark.parametrize(
    "args, name",
    [
        (("zipf", 10, 5, 2), "kind"),
        (("exp", 0, 5, 2), "num_classes"),
        (("exp", 3, 0, 2), "n_max"),
        (("exp", 3, 5, 0.5), "imbalance"),
        (("exp", 3, 5, np.nan), "imbalance"),
        (("exp", 3, 5, 10), "imbalance"),
    ],
)
def test_count_profile_errors(args, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        count_profile(*args)


@given(
    st.lists(st.integers(1, 10**6), min_size=2, max_size=20),
    st.floats(1e-6, 1e2),
    st.one_of(st.just(0.0), st.floats(1e-3, 1e3)),
    st.sampled_from(["sum", "mean"]),
    st.booleans(),
    st.floats(0.01, 10),
)
def test_predicted_priors_is_lambert_w_of_the_saturation_variable(
    counts, lam, norm_sq, reduction, bias, weight
):
    """x_c = weight m_c (||mu||^2 + [bias]) / lam, checked against mpmath's lambertw of x built here."""
    if norm_sq == 0 and not bias:
        norm_sq = 1.0
    eta = predicted_priors(counts, lam, norm_sq, reduction, "exp", bias, weight)
    total = sum(counts)
    with mpmath.workdps(40):
        for n, e in zip(counts, eta):
            m = mpmath.mpf(n) if reduction == "sum" else mpmath.mpf(n) / total
            x = mpmath.mpf(weight) * m * (mpmath.mpf(norm_sq) + (1 if bias else 0)) / mpmath.mpf(lam)
            assert abs(e / mpmath.lambertw(x).real - 1) < 1e-13


def test_per_class_norms_and_official_defaults():
    counts = np.array([500, 50, 5])
    norms = np.array([18.0, 60.0, 139.0])
    eta = predicted_priors(counts, 5e-4, norms, **OFFICIAL_CODE)
    x = counts / counts.sum() * (norms + 1) / 5e-4
    np.testing.assert_allclose(saturation(counts, 5e-4, norms, "mean", bias=True), x, rtol=1e-15)
    # logistic root: eta (1 + e^eta) = x
    np.testing.assert_allclose(eta * (1 + np.exp(eta)), x, rtol=1e-12)
    with pytest.raises(ValueError, match="^feature_norm_sq"):
        predicted_priors(counts, 1e-3, np.ones(4))
    with pytest.raises(ValueError, match="^feature_norm_sq"):
        predicted_priors(counts, 1e-3, 0.0)  # no bias and zero norm: x = 0
    with pytest.raises(ValueError, match="^counts"):
        predicted_priors([3, 0, 1], 1e-3)
    with pytest.raises(ValueError, match="^reduction"):
        predicted_priors([3, 1], 1e-3, reduction="median")


def test_spec_worked_table():
    """docs/theory.md, section 3: CIFAR-100-LT, imbalance 100, batch-mean loss, exponential-tail prediction."""
    counts = count_profile("exp", 100, 500, 100)
    expected = [
        (1e-3, 1, 0.54, 1.24),
        (1e-3, 100, 0.82, 0.47),
        (2e-4, 100, 0.85, 0.37),
        (2e-4, 1000, 0.89, 0.28),
    ]
    for lam, s, slope, max_dev in expected:
        m = prior_match(predicted_priors(counts, lam, s, "mean"), counts)
        assert m.slope == pytest.approx(slope, abs=0.005)
        assert m.max_deviation == pytest.approx(max_dev, abs=0.005)


counts_st = arrays(np.int64, st.integers(2, 30), elements=st.integers(1, 10**5))
est_st = st.floats(-50, 50)


@given(counts_st, est_st, st.data())
@example(np.array([5, 500]), 0.0, None)
def test_exact_log_prior_is_a_perfect_match(counts, b, data):
    if len(set(counts.tolist())) < 2:
        counts = np.append(counts, counts[0] + 1)
    m = prior_match(np.log(counts) + b, counts)
    assert m.offset == pytest.approx(b, abs=1e-12)
    assert m.centered_rmse < 1e-12 and m.max_deviation < 1e-12
    assert m.slope == pytest.approx(1.0, abs=1e-9) and m.spearman == pytest.approx(1.0)
    assert m.kl < 1e-12 and m.tv < 1e-12


@given(counts_st, st.data())
def test_shift_changes_only_offset_and_permutation_changes_nothing(counts, data):
    # estimates on a 1e-3 grid: a spread finer than the rounding of e + shift is not a property of prior_match
    e = data.draw(arrays(np.int64, counts.shape, elements=st.integers(-20000, 20000))) / 1000.0
    shift = data.draw(st.integers(-30000, 30000)) / 1000.0
    a, b = prior_match(e, counts), prior_match(e + shift, counts)
    assert b.offset == pytest.approx(a.offset + shift, abs=1e-9)
    for f in ("centered_rmse", "max_deviation", "slope", "r2", "spearman", "kl", "tv"):
        va, vb = getattr(a, f), getattr(b, f)
        assert (va is None) == (vb is None)
        if va is not None:
            assert vb == pytest.approx(va, abs=1e-7, rel=1e-7), f
    perm = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).permutation(len(counts))
    c = prior_match(e[perm], counts[perm])
    for f in ("offset", "centered_rmse", "max_deviation", "slope", "intercept", "r2", "spearman", "kl", "tv"):
        va, vc = getattr(a, f), getattr(c, f)
        assert (va is None) == (vc is None)
        if va is not None:
            assert vc == pytest.approx(va, abs=1e-9, rel=1e-9), f


def test_against_independent_formulas():
    rng = np.random.default_rng(1)
    counts = np.array([400, 200, 90, 30, 8, 2])
    e = 0.7 * np.log(counts) + rng.normal(0, 0.2, 6) + 4
    m = prior_match(e, counts)
    slope, intercept = np.polyfit(np.log(counts), e, 1)
    assert m.slope == pytest.approx(slope) and m.intercept == pytest.approx(intercept)
    from scipy.stats import entropy, spearmanr

    pi = counts / counts.sum()
    q = np.exp(e) / np.exp(e).sum()
    assert m.kl == pytest.approx(entropy(pi, q))
    assert m.spearman == pytest.approx(spearmanr(e, np.log(counts)).statistic)
    assert m.r2 == pytest.approx(np.corrcoef(e, np.log(counts))[0, 1] ** 2)


def test_degenerate_inputs_never_nan():
    m = prior_match([1.0, 2.0, 3.0], [10, 10, 10])  # balanced: regression on a constant is undefined
    assert m.slope is None and m.intercept is None and m.r2 is None and m.spearman is None
    assert m.centered_rmse == pytest.approx(np.sqrt(2 / 3))
    m = prior_match([2.0, 2.0, 2.0], [100, 10, 1])  # constant estimates
    assert m.slope == 0.0 and m.r2 is None and m.spearman is None
    with pytest.raises(ValueError, match="^estimates"):
        prior_match([1.0], [10])
    with pytest.raises(ValueError, match="^estimates"):
        prior_match([1.0, np.nan], [10, 2])
    with pytest.raises(ValueError, match="^estimates"):
        prior_match([1.0, 2.0, 3.0], [10, 2])
    with pytest.raises(ValueError, match="^counts, reference"):
        prior_match([1.0, 2.0], [10, 2], reference=[1.0, 2.0])


def test_reference_mode_compares_with_a_prediction():
    pred = np.array([6.0, 5.0, 4.1])
    m = prior_match(pred + 0.3, reference=pred)
    assert m.offset == pytest.approx(0.3) and m.centered_rmse < 1e-12 and m.rmse == pytest.approx(0.3)


@settings(max_examples=60)
@given(st.lists(st.integers(-3, 3).map(float), max_size=30))
@example([])
@example([2.0, 2.0, 2.0])
def test_average_ranks_equal_scipy_rankdata(values):
    from scipy.stats import rankdata

    from npe_theory.priors import average_ranks

    np.testing.assert_array_equal(
        average_ranks(np.array(values)), rankdata(values) if values else np.zeros(0)
    )


@given(
    st.lists(st.integers(1, 10**6), min_size=2, max_size=30),
    st.floats(1e-3, 1e4),
    st.floats(-1.5, 1.5),
    st.integers(0, 2**16),
)
@example([5, 5], 1.0, 0.3, 0)  # equal counts: no exponent to fit (0)
def test_norm_statistics_are_a_log_log_least_squares_fit_and_round_trip(counts, g, beta, seed):
    """(g, beta) against numpy.polyfit of ln ||mu_c||^2 on ln N_c; norms made exactly from (g, beta) give them back."""
    from npe_theory.priors import norm_statistics, norms_from_statistics

    c = np.asarray(counts, float)
    norms = norms_from_statistics(g, beta, c)
    lc = np.log(c)
    if np.ptp(lc) > 1e-9:
        got_g, got_beta = norm_statistics(norms, c)
        assert got_beta == pytest.approx(beta, rel=1e-9, abs=1e-9) and got_g == pytest.approx(g, rel=1e-9)
        noisy = norms * np.exp(np.random.default_rng(seed).normal(0, 0.3, size=len(c)))
        slope, intercept = np.polyfit(lc - lc.mean(), np.log(noisy), 1)
        got_g, got_beta = norm_statistics(noisy, c)
        assert got_beta == pytest.approx(slope, rel=1e-8, abs=1e-10) and got_g == pytest.approx(
            np.exp(intercept), rel=1e-8
        )
    else:
        assert norm_statistics(norms, c)[1] == 0.0
        np.testing.assert_allclose(norms, g)
