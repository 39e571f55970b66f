"""The finite-time PEM model and the exact equilibrium, against independent references:
PyTorch's own SGD, a gradient-flow ODE solved by scipy, scipy's L-BFGS-B, and Proposition 1."""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.optimize import minimize

from npe_theory import optimal_logit
from npe_theory.dynamics import finite_time_logit, heavy_ball_pem, lambda_s, replay_steps
from npe_theory.equilibrium import pem_equilibrium
from npe_theory.priors import predicted_priors


def test_replay_equals_torch_sgd_step_for_step():
    """heavy_ball_pem against torch.optim.SGD (momentum, weight decay on weight and bias) on a Linear PEM whose
    class-c inputs are all the class mean: same batch-mean one-way loss, same steps, float64."""
    rng = np.random.default_rng(0)
    K, C, D, T = 2, 4, 5, 40
    means = rng.normal(size=(3, C, D))
    epoch_of_step = np.repeat(np.arange(3), [10, 15, 15])
    counts = rng.integers(1, 6, size=(T, C))
    lrs = rng.uniform(0.01, 0.2, size=T)
    heads = [torch.nn.Linear(D, C).double() for _ in range(K)]
    w0 = np.stack([h.weight.detach().numpy().copy() for h in heads])
    b0 = np.stack([h.bias.detach().numpy().copy() for h in heads])
    opt = torch.optim.SGD([p for h in heads for p in h.parameters()], lr=0.1, momentum=0.9, weight_decay=3e-2)
    for t in range(T):
        y = torch.as_tensor(np.repeat(np.arange(C), counts[t]))
        x = torch.as_tensor(means[epoch_of_step[t]])[y]
        for g in opt.param_groups:
            g["lr"] = float(lrs[t])
        loss = sum(torch.nn.functional.softplus(-h(x).gather(1, y[:, None])).mean() for h in heads) * 0.7
        opt.zero_grad()
        loss.backward()
        opt.step()
    fractions = counts / counts.sum(1, keepdims=True)
    run = heavy_ball_pem(
        means,
        fractions,
        lrs,
        3e-2,
        momentum=0.9,
        alpha=0.7,
        epoch_of_step=epoch_of_step,
        init_weight=w0,
        init_bias=b0,
    )
    np.testing.assert_allclose(
        run["weight"], np.stack([h.weight.detach().numpy() for h in heads]), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(
        run["bias"], np.stack([h.bias.detach().numpy() for h in heads]), rtol=1e-12, atol=1e-13
    )


@given(st.integers(2, 6), st.sampled_from(["logistic", "exp"]), st.floats(1.0, 200.0), st.booleans())
@example(2, "exp", 1.0, False)
def test_converges_to_proposition_1(C, loss, norm_sq, bias):
    """With lambda*s large the heavy-ball trajectory ends at predicted_priors (the closed form)."""
    counts = np.round(500 * 50.0 ** (-np.arange(C) / (C - 1))).astype(int)
    lam, lr, mom = 5e-3, 0.1, 0.9
    epochs = 3000  # full batch, one step an epoch: lambda*s = lam * epochs * lr / (1 - mom) = 15
    traj = finite_time_logit(
        counts,
        lam,
        lr,
        feature_norm_sq=norm_sq,
        momentum=mom,
        batch_size=int(counts.sum()),
        epochs=epochs,
        loss=loss,
        bias=bias,
    )
    assert lambda_s(lam, np.full(epochs, lr), mom) > 10
    expected = predicted_priors(counts, lam, norm_sq, "mean", loss, bias=bias)
    np.testing.assert_allclose(traj[-1], expected, rtol=1e-6, atol=1e-6)


def test_small_steps_without_momentum_follow_the_gradient_flow():
    """Momentum 0, lr -> 0: the iterates follow d(w, b)/ds = -grad, solved independently by scipy (RK45, tight tolerances)."""
    counts, lam, alpha, s_c = np.array([300.0, 60.0, 6.0]), 1e-2, 1.0, np.array([4.0, 9.0, 16.0])
    pi, norm = counts / counts.sum(), np.sqrt(s_c)

    def rhs(_, z):  # z = (w_c, b_c): gradients of alpha pi_c softplus(-(w ||mu|| + b)) + lam/2 (w^2 + b^2)
        w, b = z[:3], z[3:]
        push = -alpha * pi / (1 + np.exp(w * norm + b))
        return -np.concatenate([push * norm + lam * w, push + lam * b])

    total_s = 60.0
    ode = solve_ivp(rhs, (0, total_s), np.zeros(6), rtol=1e-10, atol=1e-12).y[:, -1]
    ode_eta = ode[:3] * norm + ode[3:]
    lr = 1e-3
    steps = int(total_s / lr)
    traj = finite_time_logit(
        counts,
        lam,
        np.full(steps, lr),
        feature_norm_sq=s_c,
        momentum=0.0,
        reduction="mean",
        batch_size=int(counts.sum()),
    )
    np.testing.assert_allclose(traj[-1], ode_eta, rtol=2e-3)
    assert (
        np.abs(traj[-1] - predicted_priors(counts, lam, s_c, "mean", "logistic", bias=True)).max() > 0.1
    )  # not yet stationary


def test_momentum_overshoot_of_head_class():
    """The transient: with momentum 0.9 and a large rate the head class goes above its limit, then decays back."""
    counts = np.array([450, 150, 50, 15, 4])
    limit = predicted_priors(counts, 5e-4, 20.0, "mean", "logistic", bias=True)
    traj = finite_time_logit(
        counts, 5e-4, 0.05, feature_norm_sq=20.0, momentum=0.9, batch_size=64, epochs=3000
    )
    head = traj[:, 0]
    assert head.max() > limit[0] + 0.3  # overshoot
    assert abs(head[-1] - limit[0]) < 1e-3  # and back
    # no overshoot without momentum at a small rate: monotone approach from below
    calm = finite_time_logit(
        counts, 5e-4, 0.005, feature_norm_sq=20.0, momentum=0.0, batch_size=64, epochs=300
    )
    assert np.all(np.diff(calm[:, 0]) >= -1e-12) and calm[:, 0].max() <= limit[0] + 1e-9


def test_lambda_s_definition():
    assert lambda_s(1e-3, [0.1, 0.1, 0.05], 0.9) == pytest.approx(1e-3 * 0.25 / 0.1)
    assert lambda_s(1e-3, [0.1, 0.1, 0.05], 0.0) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="^momentum"):
        lambda_s(1e-3, [0.1], 1.0)


@pytest.mark.parametrize("loss, bias", [("logistic", True), ("logistic", False), ("exp", True)])
def test_equilibrium_against_lbfgs(loss, bias):
    """Newton's minimizer of the PEM objective on uncollapsed features equals scipy's L-BFGS-B on the full (C x D) problem."""
    rng = np.random.default_rng(1)
    C, D = 3, 4
    y = np.repeat(np.arange(C), [40, 15, 5])
    h = rng.normal(size=(C, D))[y] * 1.5 + rng.normal(size=(len(y), D)) * 0.7
    lam, alpha = 2e-2, 0.8
    eq = pem_equilibrium(h, y, C, lam, alpha=alpha, loss=loss, bias=bias)
    X = np.hstack([h, np.ones((len(y), 1))]) if bias else h

    def f(flat):
        th = flat.reshape(C, -1)
        z = np.einsum("nd,nd->n", X, th[y])
        ell = np.logaddexp(0, -z) if loss == "logistic" else np.exp(-z)
        slope = -1 / (1 + np.exp(z)) if loss == "logistic" else -np.exp(-z)
        grad = np.zeros_like(th)
        np.add.at(grad, y, alpha / len(y) * slope[:, None] * X)
        return alpha * ell.mean() + lam / 2 * (flat @ flat), (grad + lam * th).ravel()

    ref = minimize(
        f,
        np.zeros(C * X.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
    ).x
    ref = ref.reshape(C, -1)
    got = np.hstack([eq.weight, eq.bias[:, None]]) if bias else eq.weight
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert eq.grad_norm < 1e-10


def test_equilibrium_on_collapsed_features_is_proposition_1():
    rng = np.random.default_rng(2)
    counts = np.array([200, 50, 10, 3])
    mu = np.abs(rng.normal(size=(4, 6))) * 3
    y = np.repeat(np.arange(4), counts)
    eq = pem_equilibrium(mu[y], y, 4, 1e-3, alpha=0.5)
    x = 0.5 * counts / counts.sum() * ((mu**2).sum(1) + 1) / 1e-3  # hand-built saturation variable
    np.testing.assert_allclose(eq.eta, optimal_logit(x, 1.0, "logistic"), rtol=1e-9)


def test_replay_on_rows_equals_torch_sgd_and_continues_across_calls():
    """replay_steps on each step's own rows against torch.optim.SGD on a Linear PEM fed those rows (spread features, two
    heads, momentum 0.9, alpha 0.7, mixed-label weights), run in two calls so that the momentum buffers carry over."""
    rng = np.random.default_rng(1)
    K, C, D, T, B = 2, 4, 5, 12, 9
    heads = [torch.nn.Linear(D, C).double() for _ in range(K)]
    state = {
        "weight": np.stack([h.weight.detach().numpy().copy() for h in heads]),
        "bias": np.stack([h.bias.detach().numpy().copy() for h in heads]),
    }
    opt = torch.optim.SGD([p for h in heads for p in h.parameters()], lr=0.1, momentum=0.9, weight_decay=3e-2)
    rows, labels, weights, steps, fractions, lrs = [], [], [], [], [], rng.uniform(0.01, 0.2, size=T)
    for t in range(T):
        x = rng.normal(size=(B, D)) * rng.uniform(0.5, 4.0) + 1.0
        y = rng.integers(0, C, size=B)
        w = rng.uniform(0.2, 1.0, size=B)
        for g in opt.param_groups:
            g["lr"] = float(lrs[t])
        xt, yt, wt = torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(w)
        loss = (
            sum(
                (wt * torch.nn.functional.softplus(-h(xt).gather(1, yt[:, None])[:, 0])).sum() / B
                for h in heads
            )
            * 0.7
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        rows.append(x), labels.append(y), weights.append(w), steps.append(np.full(B, t))
        fractions.append(np.bincount(y, weights=w, minlength=C) / B)
    cat = [np.concatenate(v) for v in (rows, labels, weights, steps)]
    half = np.searchsorted(cat[3], 5)
    first = replay_steps(
        state, *(v[:half] for v in cat), np.array(fractions[:5]), lrs[:5], 3e-2, momentum=0.9, alpha=0.7
    )
    second = replay_steps(
        first,
        *(v[half:] for v in cat[:3]),
        cat[3][half:] - 5,
        np.array(fractions[5:]),
        lrs[5:],
        3e-2,
        momentum=0.9,
        alpha=0.7,
    )
    np.testing.assert_allclose(
        second["weight"], np.stack([h.weight.detach().numpy() for h in heads]), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(
        second["bias"], np.stack([h.bias.detach().numpy() for h in heads]), rtol=1e-12, atol=1e-13
    )


def test_replay_on_rows_reduces_to_the_class_mean_replay_when_a_class_is_one_point():
    """When every class-c row of a step is the class mean, the row replay and heavy_ball_pem take the same steps."""
    rng = np.random.default_rng(2)
    C, D, T = 3, 4, 20
    means = rng.normal(size=(C, D)) * 3
    y = np.tile(np.arange(C), 4)
    fractions = np.full((T, C), 1.0 / C)
    lrs = np.full(T, 0.05)
    rows = np.concatenate([means[y]] * T)
    run = replay_steps(
        {"weight": np.zeros((1, C, D)), "bias": np.zeros((1, C))},
        rows,
        np.tile(y, T),
        np.ones(len(rows)),
        np.repeat(np.arange(T), len(y)),
        fractions,
        lrs,
        1e-2,
    )
    ref = heavy_ball_pem(means, fractions, lrs, 1e-2)
    np.testing.assert_allclose(run["weight"], ref["weight"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(run["bias"], ref["bias"], rtol=1e-12, atol=1e-14)


def test_equilibrium_warm_start_and_float64_stop():
    """Started from an earlier solution on moved features, Newton lands where a cold start does; and it stops once a full
    step gains less than float64 resolves, instead of running to max_iter after a gradient tolerance float64 cannot meet
    (tol = 0 here: the old stopping rule took all 100 iterations)."""
    rng = np.random.default_rng(5)
    C, D = 6, 16
    y = np.repeat(np.arange(C), [400, 150, 60, 20, 8, 3])
    mu = np.abs(rng.normal(size=(C, D))) * 6
    h = np.maximum(mu[y] + 2.0 * rng.normal(size=(len(y), D)), 0)
    lam = 0.2
    cold = pem_equilibrium(h, y, C, lam)
    moved = h * (1 + 0.02 * rng.normal(size=h.shape))
    again = pem_equilibrium(moved, y, C, lam)
    warm = pem_equilibrium(moved, y, C, lam, start=cold)
    np.testing.assert_allclose(warm.eta, again.eta, atol=1e-9)
    assert warm.iterations <= again.iterations
    strict = pem_equilibrium(h, y, C, lam, tol=0.0, max_iter=100)
    assert strict.iterations < 15
    np.testing.assert_allclose(strict.eta, cold.eta, atol=1e-9)
    with pytest.raises(ValueError, match="^start"):
        pem_equilibrium(h[:, :4], y, C, lam, start=cold)


@given(
    C=st.integers(1, 6),
    sets=st.integers(1, 3),
    per_epoch=st.booleans(),
    epochs=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
@example(C=1, sets=2, per_epoch=False, epochs=1, seed=0)
def test_several_norm_sets_in_one_replay_equal_separate_runs(C, sets, per_epoch, epochs, seed):
    """finite_time_logit with S sets of norms (S, 1, C) or (S, E, C) runs them as S x C independent classes; each set's
    trajectory must be the one its own run gives, bit for bit (the same elementwise arithmetic per class)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 50, C).astype(float)
    norms = rng.uniform(0.1, 4.0, (sets, epochs if per_epoch else 1, C))
    kw = dict(momentum=0.9, batch_size=8, epochs=epochs)
    together = finite_time_logit(
        counts, 1e-2, [0.1 * (e + 1) for e in range(epochs)], feature_norm_sq=norms, **kw
    )
    assert together.shape == (sets, epochs, C)
    for s in range(sets):
        alone = finite_time_logit(
            counts,
            1e-2,
            [0.1 * (e + 1) for e in range(epochs)],
            feature_norm_sq=norms[s] if per_epoch else norms[s, 0],
            **kw,
        )
        np.testing.assert_array_equal(together[s], alone)
    with pytest.raises(ValueError, match="feature_norm_sq"):
        finite_time_logit(counts, 1e-2, 0.1, feature_norm_sq=np.ones((2, epochs + 1, C + 1)), **kw)


@given(
    K=st.integers(1, 2),
    C=st.integers(1, 5),
    E=st.integers(1, 4),
    T=st.integers(1, 12),
    bias=st.booleans(),
    momentum=st.sampled_from([0.0, 0.9]),
    seed=st.integers(0, 2**16),
)
@example(
    K=1, C=2, E=3, T=1, bias=True, momentum=0.9, seed=0
)  # epochs without a step before and after the one
def test_the_one_feature_replay_is_the_general_one_bit_for_bit(K, C, E, T, bias, momentum, seed):
    """heavy_ball_pem takes a shortcut for one feature dimension (the mean-field model); it must give exactly what the
    general replay gives on the same problem, epochs without a step included."""
    from npe_theory.dynamics import _replay
    from npe_theory.losses.base import get_loss

    rng = np.random.default_rng(seed)
    means = rng.normal(size=(E, C, 1))
    fractions = rng.dirichlet(np.ones(C), size=T)
    lrs = rng.uniform(0.01, 0.5, T)
    epoch_of_step = np.sort(rng.integers(0, E, T))
    w0, b0 = rng.normal(size=(K, C, 1)), rng.normal(size=(K, C))
    got = heavy_ball_pem(
        means,
        fractions,
        lrs,
        0.05,
        momentum=momentum,
        alpha=0.7,
        bias=bias,
        epoch_of_step=epoch_of_step,
        init_weight=w0,
        init_bias=b0,
    )
    w, b, out = w0.copy(), b0.copy() if bias else np.zeros_like(b0), np.empty((E, C))
    _replay(w, b, means, fractions, lrs, 0.05, momentum, 0.7, get_loss("logistic"), bias, epoch_of_step, out)
    np.testing.assert_array_equal(got["weight"], w)
    np.testing.assert_array_equal(got["bias"], b)
    np.testing.assert_array_equal(got["eta_per_epoch"], out)


@given(
    C=st.integers(1, 5),
    E=st.integers(1, 4),
    per_epoch_counts=st.booleans(),
    reduction=st.sampled_from(["mean", "sum"]),
    loss=st.sampled_from(["logistic", "exp", "squared_hinge"]),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(C=2, E=3, per_epoch_counts=True, reduction="mean", loss="logistic", bias=True, seed=0)
def test_finite_time_logit_is_heavy_ball_pem_on_each_steps_expected_shares(
    C, E, per_epoch_counts, reduction, loss, bias, seed
):
    """finite_time_logit keeps one share vector per epoch and never lays it out per step (gigabytes at ImageNet-LT's
    size); it must give bit for bit what heavy_ball_pem gives with every step's share written out: n_c / N at each of
    an epoch's ceil(N / B) steps ("mean"), N_c at its one step ("sum"), the epoch's counts and rate for each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 40, (E, C) if per_epoch_counts else C).astype(float)
    norms = rng.uniform(0.1, 3.0, (E, C))
    lrs = rng.uniform(0.01, 0.3, E)
    kw = dict(momentum=0.9, alpha=0.6, loss=loss, bias=bias)
    got = finite_time_logit(
        counts, 2e-2, lrs, feature_norm_sq=norms, batch_size=16, epochs=E, reduction=reduction, **kw
    )
    per = np.broadcast_to(counts, (E, C))
    steps = (
        [-(-int(n) // 16) for n in per.sum(1)] if reduction == "mean" else [1] * E
    )  # ceil(N / B) steps an epoch
    shares = per / per.sum(1, keepdims=True) if reduction == "mean" else per
    epoch_of_step = np.repeat(np.arange(E), steps)
    want = heavy_ball_pem(
        np.sqrt(norms)[..., None],
        shares[epoch_of_step],
        lrs[epoch_of_step],
        2e-2,
        epoch_of_step=epoch_of_step,
        **kw,
    )["eta_per_epoch"]
    np.testing.assert_array_equal(got, want)
