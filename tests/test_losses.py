"""Every registered one-way loss, against references computed another way: autograd, a brute-force minimizer,
QUADPACK, mpmath, and the exact PEM equilibrium on collapsed features. A new loss is tested by registering it."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import integrate, optimize

from npe_theory.equilibrium import pem_equilibrium
from npe_theory.errors import InputError
from npe_theory.losses import LOSSES, OneWayLoss, get_loss
from npe_theory.priors import implied_log_prior, predicted_priors

NAMES = sorted(LOSSES)
GRID = np.concatenate([np.linspace(-6, 6, 49), [-30.0, 25.0]])


def _off_kinks(loss, eta):
    """Points at least 1e-3 from a kink of l' (the squared hinge's at eta = 1), where l'' is defined."""
    return eta[np.abs(eta - 1.0) > 1e-3] if loss.tail == "finite support" else eta


@pytest.mark.parametrize("name", NAMES)
def test_torch_value_is_the_same_function(name):
    loss = get_loss(name)
    eta = torch.tensor(GRID, dtype=torch.float64)
    np.testing.assert_allclose(loss.torch_value(eta, F).numpy(), loss.value(GRID), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_slope_and_curvature_are_the_derivatives(name):
    loss = get_loss(name)
    eta = torch.tensor(_off_kinks(loss, GRID), dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(loss.torch_value(eta, F).sum(), eta, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), eta)
    np.testing.assert_allclose(loss.slope(eta.detach().numpy()), d1.detach().numpy(), rtol=1e-10, atol=1e-300)
    # atol: torch's softplus is exactly linear beyond 20, so its l'' there is 0 where ours is e^-30 ~ 1e-13
    np.testing.assert_allclose(loss.curvature(eta.detach().numpy()), d2.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(loss.slope(GRID) <= 0) and np.all(loss.curvature(GRID) >= 0)  # one-way and convex


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("x", [1e-3, 0.3, 1.0, 7.0, 150.0, 1e4])
def test_optimum_against_a_brute_force_minimizer(name, x):
    loss = get_loss(name)
    res = optimize.minimize_scalar(
        lambda e: x * float(loss.value(np.array([e]))[0]) + 0.5 * e * e,
        bounds=(-1.0, 40.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert float(loss.optimum(np.array([x]))[0]) == pytest.approx(res.x, abs=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_the_generic_newton_agrees_with_each_loss_own_optimum(name):
    """OneWayLoss.optimum (bracketed Newton on eta = x p(eta)) against the loss's own (closed form or special method)."""
    loss, x = get_loss(name), np.logspace(-8, 12, 81)
    np.testing.assert_allclose(OneWayLoss.optimum(loss, x), loss.optimum(x), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@given(log_x=st.floats(-30, 60))
@example(log_x=-30.0)
@example(log_x=0.0)
def test_log_saturation_inverts_the_optimum(name, log_x):
    loss = get_loss(name)
    eta = loss.optimum_of_log(np.array([log_x]))
    if loss.tail == "finite support" and log_x > 12:
        return  # the optimum lies within 1e-5 of its bound, where 1 - eta keeps few digits: ill-conditioned, not wrong
    assert float(loss.log_saturation(eta)[0]) == pytest.approx(log_x, abs=1e-8 * max(1.0, abs(log_x)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mu, s2", [(0.0, 1.0), (2.5, 0.3), (-1.0, 4.0), (5.0, 0.01)])
def test_gaussian_moments_against_quadpack(name, mu, s2):
    loss = get_loss(name)
    sd = math.sqrt(s2)

    def mean(f):
        dens = lambda t: math.exp(-0.5 * (t - mu) ** 2 / s2) / math.sqrt(2 * math.pi * s2)
        pts = [1.0] if loss.tail == "finite support" and mu - 12 * sd < 1 < mu + 12 * sd else None
        return integrate.quad(
            lambda t: f(np.array([t]))[0] * dens(t),
            mu - 12 * sd,
            mu + 12 * sd,
            points=pts,
            epsabs=0,
            epsrel=1e-11,
            limit=400,
        )[0]

    log_push, log_curv = loss.gaussian_log_moments(mu, s2)
    for got, f in ((log_push, loss.push), (log_curv, loss.curvature)):
        ref = mean(f)
        if (
            ref < 1e-280
        ):  # all the mass beyond a finite support: QUADPACK sees 0, the log-space moment stays finite
            assert got < math.log(1e-280)
        else:
            assert got == pytest.approx(math.log(ref), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_optimum_against_mpmath(name):
    """The stationarity condition eta = x p(eta) solved at 50 digits from the sympy-free definition l = value."""
    loss = get_loss(name)
    mp.mp.dps = 50
    pushes = {
        "exp": lambda e: mp.exp(-e),
        "logistic": lambda e: 1 / (1 + mp.exp(e)),
        "squared_hinge": lambda e: 2 * max(1 - e, 0),
    }
    if name not in pushes:
        pytest.skip(f"no independent mpmath push for the plugin loss {name}")
    for x in (1e-4, 0.5, 3.0, 1e3, 1e8):
        lo, hi = mp.mpf(0), mp.mpf(60)  # g(eta) = eta - x p(eta) rises through 0 on [0, 60]: bisect to 2^-200
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mid - x * pushes[name](mid) < 0 else (lo, mid)
        ref = (lo + hi) / 2
        assert float(loss.optimum(np.array([x]))[0]) == pytest.approx(float(ref), rel=1e-13)


def test_squared_hinge_closed_form_and_saturation():
    """2x / (2x + 1) solved by hand: stationarity on eta < 1 is eta = 2 x (1 - eta); the optimum never reaches 1, so its
    growth with ln N_c stops (docs/theory.md, section 8)."""
    loss = get_loss("squared_hinge")
    x = np.logspace(-6, 9, 31)
    np.testing.assert_allclose(loss.optimum(x), 2 * x / (2 * x + 1), rtol=1e-14)
    assert np.all(loss.optimum(x) < 1)
    counts = np.array([5000.0, 500.0, 50.0])
    eta = predicted_priors(counts, 1e-2, reduction="sum", loss="squared_hinge")
    assert np.ptp(eta) < 1e-3  # the head and a 100x rarer class get nearly the same output: no log-prior


@pytest.mark.parametrize("name", NAMES)
def test_equilibrium_on_collapsed_features_is_the_closed_form(name):
    """Each class's features exactly its mean: the exact PEM optimum (a Newton solve over W) equals predicted_priors."""
    rng = np.random.default_rng(0)
    counts, D, lam = np.array([60, 20, 6]), 5, 0.3
    mu = rng.normal(size=(3, D))
    labels = np.repeat(np.arange(3), counts)
    eq = pem_equilibrium(mu[labels], labels, 3, lam, loss=name, reduction="sum", bias=False)
    want = predicted_priors(counts, lam, feature_norm_sq=np.sum(mu * mu, 1), reduction="sum", loss=name)
    np.testing.assert_allclose(eq.eta, want, rtol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_implied_prior_inverts_the_prediction(name):
    counts = np.array([400.0, 90.0, 20.0, 4.0])
    eta = predicted_priors(counts, 0.5, reduction="sum", loss=name)
    implied = implied_log_prior(eta, 0.5, loss=name, bias=False)
    centred = np.log(counts) - np.log(counts).mean()
    np.testing.assert_allclose(implied - implied.mean(), centred, atol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_loss("hinge"),
        lambda: predicted_priors([10, 2], 0.1, loss="hinge"),
        lambda: pem_equilibrium(np.ones((2, 1)), np.array([0, 1]), 2, 0.1, loss="hinge"),
    ],
)
def test_an_unknown_loss_is_an_error_everywhere(call):
    with pytest.raises(InputError, match="hinge"):
        call()
