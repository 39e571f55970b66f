"""The unconstrained feature model: gradient, Neural Collapse, and Proposition 1 at its stationary point."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from npe_theory.collapse import cosine_matrix, nc1
from npe_theory.priors import count_profile
from npe_theory.ufm import _ClassProblem, _kept, _Problem, simulate_ufm


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_gradient_matches_finite_differences(loss, scale):
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 2, 3])
    prob = _Problem(labels, 4, 3, (0.3, 0.2, 0.1), loss, scale, True, 0.7)
    theta = rng.normal(size=sum(prob.sizes))
    f, g = prob(theta)
    h = 1e-6
    fd = np.array([(prob(theta + h * e)[0] - prob(theta - h * e)[0]) / (2 * h) for e in np.eye(len(theta))])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("bias", [True, False])
def test_class_model_gradient_and_value_are_the_per_sample_ones(loss, bias):
    """The collapsed model at u_c = sqrt(s N_c) h_c: its value is the per-sample objective with every class-c sample at
    h_c, its gradient matches finite differences in u, and its (W, b, V, c) gradient equals the per-sample one."""
    rng = np.random.default_rng(1)
    counts, d, lams, scale = np.array([3, 2, 1, 1]), 3, (0.3, 0.2, 0.1), 1 / 7
    cls = _ClassProblem(counts, d, lams, loss, scale, bias, 0.7)
    theta = rng.normal(size=sum(cls.sizes))
    f, g = cls(theta)
    h = 1e-6
    fd = np.array([(cls(theta + h * e)[0] - cls(theta - h * e)[0]) / (2 * h) for e in np.eye(len(theta))])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    labels = np.repeat(np.arange(4), counts)
    full = _Problem(labels, 4, d, lams, loss, scale, bias, 0.7)
    H = cls.features(theta)
    f_full, g_full = full(np.concatenate([H[labels].ravel(), theta[4 * d :]]))
    assert f_full == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(g_full[len(labels) * d :], g[4 * d :], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", ["exp", "logistic"])
def test_class_model_finds_the_per_sample_stationary_point(loss):
    """Figure F6's run both ways: the same learned outputs, norms and objective; and the collapsed solution, every sample
    set to its class's vector, is a stationary point of the per-sample problem (its projected gradient vanishes)."""
    counts = count_profile("exp", 10, 500, 100)
    a = simulate_ufm(counts, loss=loss)
    b = simulate_ufm(counts, loss=loss, features="classes")
    assert b.nc1 == 0.0 and b.mismatch <= 1e-6 and a.mismatch <= 1e-6
    np.testing.assert_allclose(b.eta_learned, a.eta_learned, atol=1e-5)
    np.testing.assert_allclose(b.mean_norm_sq, a.mean_norm_sq, rtol=1e-5)
    assert b.objective == pytest.approx(a.objective, rel=1e-10)
    labels = np.repeat(np.arange(10), counts)
    full = _Problem(labels, 10, 16, (5e-4,) * 3, loss, 1 / counts.sum(), True, 1.0)
    mu, W, bias = b.class_mean_vectors, b.classifier, b.classifier_bias_values
    pem_v, pem_c = b.pem_weight, b.pem_bias
    _, g = full(np.concatenate([mu[labels].ravel(), W.ravel(), bias, pem_v.ravel(), pem_c]))
    gH = g[: len(labels) * 16].reshape(-1, 16)
    gH[(mu[labels] <= 0) & (gH > 0)] = 0.0  # at the ReLU bound a gradient pointing out does not count
    assert np.linalg.norm(gH) <= 1e-8 and np.linalg.norm(g[len(labels) * 16 :]) <= 1e-8


def test_history_is_thinned_but_keeps_the_last_iteration():
    assert [i for i in range(1, 2500) if _kept(i)][97:103] == [98, 99, 100, 110, 120, 130]
    assert sum(_kept(i) for i in range(1, 10**4)) == 99 + 90 + 90
    r = simulate_ufm(count_profile("exp", 4, 50, 10), max_iter=150)
    its = [h["iteration"] for h in r.history]
    assert its == [i for i in range(1, r.iterations + 1) if _kept(i) or i == r.iterations]


@pytest.mark.parametrize("loss", ["exp", "logistic"])
def test_acceptance_prediction_matches_learned(loss):
    """Issue 3 acceptance: 10 classes, imbalance 100; learned within 1e-4 of predicted, NC1 <= 1e-3 (its time: benchmarks)."""
    r = simulate_ufm(count_profile("exp", 10, 500, 100), loss=loss, nonlinearity="relu")
    assert r.mismatch <= 1e-4
    assert r.nc1 <= 1e-3
    # docs/theory.md, section 6: orthogonal class means of count-dependent lengths (ReLU features)
    assert r.max_offdiag_cosine <= 1e-6
    assert r.mean_norm_sq[-1] > 3 * r.mean_norm_sq[0]
    assert np.all(np.diff(r.eta_learned) < 0)  # monotone in the count
    assert r.history[-1]["iteration"] == r.iterations and r.history[-1]["mismatch"] == pytest.approx(
        r.mismatch, rel=1e-6, abs=1e-12
    )
    # off-diagonal PEM outputs vanish for orthogonal means (feature conditioning, docs/theory.md, section 2), up to the bias
    off = r.eta_matrix - np.diag(np.diag(r.eta_matrix))
    assert np.max(np.abs(off - off.sum(0) / (len(off) - 1) * (1 - np.eye(len(off))))) < 1e-4


def test_linear_features_collapse_too():
    r = simulate_ufm(count_profile("exp", 10, 500, 100), loss="logistic", nonlinearity="none")
    assert r.mismatch <= 1e-4 and r.nc1 <= 1e-3


def test_loose_tolerance_is_reported_not_hidden():
    r = simulate_ufm(count_profile("exp", 4, 50, 10), tol=1e-2, max_iter=5)
    assert r.iterations <= 5 and r.grad_norm > 0 and r.nc1 > 1e-6


def test_nc_metrics_by_hand():
    mu = np.array([[1.0, 0.0], [0.0, 2.0]])
    labels = np.array([0, 0, 1, 1])
    noise = np.array([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.2], [0.0, -0.2]])
    feats = mu[labels] + noise
    # Sigma_W = diag(0.01, 0.02)... /n; Sigma_B from centred means [[.5,-1],[-.5,1]]/2
    sw = noise.T @ noise / 4
    c = mu - mu.mean(0)
    sb = c.T @ c / 2
    assert nc1(feats, labels, 2) == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)) / 2)
    assert cosine_matrix(mu)[0, 1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(dim=0), "dim"),
        (dict(loss="hinge"), "loss"),
        (dict(nonlinearity="tanh"), "nonlinearity"),
        (dict(lam_pem=0.0), "lam_pem"),
        (dict(max_iter=0), "max_iter"),
        (dict(reduction="x"), "reduction"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        simulate_ufm([5, 3, 1], **kwargs)


# ---- docs/theory.md, section 6, in the UFM: orthogonal means of count-dependent length, classifier =
# scaled-then-centered means ----


def test_classifier_alignment_recovers_constructed_structures():
    """Hand-built classifiers of both readings: the fit returns the scales put in, and cosine 1 where the structure is exact."""
    from npe_theory.collapse import classifier_alignment

    rng = np.random.default_rng(3)
    counts = np.array([50.0, 20.0, 8.0, 3.0])
    means = (
        np.diag([1.0, 2.0, 3.0, 4.0]) @ np.linalg.qr(rng.normal(size=(6, 4)))[0].T
    )  # orthogonal rows, lengths 1..4
    scales = np.array([0.9, 0.5, 0.3, 0.1])
    scaled_centered = scales[:, None] * means - (scales[:, None] * means).mean(0)
    out = classifier_alignment(scaled_centered, means, counts)
    np.testing.assert_allclose(out["scale"], scales, rtol=1e-12)
    np.testing.assert_allclose(out["cosine"], 1.0, atol=1e-12)
    assert out["scale_exponent"] == pytest.approx(np.polyfit(np.log(counts), np.log(scales), 1)[0])
    global_mean = counts @ means / counts.sum()
    nc3 = scales[:, None] * (means - global_mean)
    out = classifier_alignment(nc3, means, counts)
    np.testing.assert_allclose(out["nc3_cosine"], 1.0, atol=1e-12)
    np.testing.assert_allclose(out["nc3_scale"], scales, rtol=1e-12)
    assert (
        min(out["cosine"]) < 0.999
    )  # the two readings differ under imbalance: the fit does not accept anything


def _kkt_scales(r, lam_classifier):
    """a_c = s C n_c q_c / lam_W, q_c the softmax probability of each wrong class at mu_c: the bias-free UFM's stationarity
    condition W = -(s / lam_W) sum_c n_c (p_c - e_c) mu_c^T, rewritten for orthogonal means (equal wrong-class logits)."""
    from scipy.special import softmax

    counts = r.counts.astype(float)
    p = softmax(r.class_mean_vectors @ r.classifier.T + r.classifier_bias_values, axis=1)
    C = len(counts)
    q = (1.0 - np.diag(p)) / (C - 1)
    return (1.0 / counts.sum()) * C * counts * q / lam_classifier


@settings(max_examples=6)
@given(
    st.sampled_from(["exp", "step"]),
    st.integers(3, 8),
    st.sampled_from([1.0, 5.0, 30.0, 100.0]),
    st.integers(0, 3),
)
@example("exp", 10, 100.0, 0)
@example("exp", 3, 1.0, 0)  # balanced: NC3 proper, every reading agrees
def test_seed003_geometry_in_the_bias_free_ufm(profile, classes, imbalance, seed):
    """Wherever the seed's model applies (ReLU features, no classifier bias): within-class collapse, orthogonal class means,
    longer means for rarer classes, classifier rows exactly the scaled-then-centered means, scales growing with N_c and equal
    to the stationarity condition's closed form."""
    counts = count_profile(profile, classes, 120, imbalance)
    r = simulate_ufm(counts, dim=16, tol=1e-9, seed=seed, classifier_bias=False)
    g = r.geometry
    assert r.grad_norm < 1e-7 and r.nc1 < 1e-8
    assert r.max_offdiag_cosine < 1e-6
    np.testing.assert_allclose(g["cosine"], 1.0, atol=1e-7)
    np.testing.assert_allclose(g["scale"], _kkt_scales(r, 5e-4), rtol=1e-5)
    n, a, norm = counts.astype(float), np.array(g["scale"]), r.mean_norm_sq
    more = n[:, None] > n[None, :]
    same = n[:, None] == n[None, :]
    assert np.all((a[:, None] > a[None, :])[more]) and np.all((norm[:, None] < norm[None, :])[more])
    np.testing.assert_allclose(
        (a[:, None] - a[None, :])[same], 0.0, atol=1e-4 * a.max()
    )  # equal counts, equal scales (to the stationarity tolerance)
    if imbalance >= 30:  # the balanced-data reading w_c ~ (mu_c - mu_G) is what fails under imbalance
        assert min(g["nc3_cosine"]) < 0.99


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_seed003_with_a_classifier_bias_holds_to_a_thousandth(profile):
    """Our UFM's classifier has a decayed bias: the wrong-class logits then differ by b_k, and the structure holds to 1e-3."""
    r = simulate_ufm(count_profile(profile, 8, 120, 100), tol=1e-9)
    g = r.geometry
    assert min(g["cosine"]) > 0.999 and min(g["cosine"]) < 1 - 1e-6
    assert 0.4 < g["scale_exponent"] < 0.6 and -0.5 < g["norm_sq_exponent"] < -0.38
