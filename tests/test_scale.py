"""The report's solvers at scale agree with independent references (docs/report.md, "The report at scale").

- the exact equilibrium (Woodbury steps for classes with fewer samples than dimensions, dense ones otherwise)
  against scipy's L-BFGS on each class's own convex objective, written out here;
- NC1 by projection on the between-class directions against tr(Sigma_W pinv(Sigma_B)) / C formed directly;
- the replay that updates only a step's present classes against a plain heavy-ball loop written from
  torch.optim.SGD's update rule, step by step, every class every step.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.optimize import minimize

import npe_theory.dynamics as dynamics
from npe_theory.collapse import nc1
from npe_theory.equilibrium import pem_equilibrium


def _softplus(z):
    return np.logaddexp(0.0, z)


def _brute_force(h, y, C, lam, alpha, bias):
    """argmin of alpha / N sum_i softplus(-(w_y . h_i + b_y)) + lam / 2 (||w||^2 + b^2), class by class, by L-BFGS."""
    out = []
    n = len(h)
    for c in range(C):
        x = h[y == c]
        x = np.hstack([x, np.ones((len(x), 1))]) if bias else x

        def f(t):
            z = x @ t
            grad = -(alpha / n) * (x.T @ (1.0 / (1.0 + np.exp(z)))) + lam * t
            return (alpha / n) * np.sum(_softplus(-z)) + 0.5 * lam * t @ t, grad

        res = minimize(
            f,
            np.zeros(x.shape[1]),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-13, "ftol": 1e-15, "maxiter": 5000},
        )
        out.append(float(np.mean(x @ res.x)))
    return np.array(out)


@given(
    C=st.integers(2, 5),
    D=st.integers(1, 12),
    head=st.integers(2, 30),
    lam=st.floats(1e-3, 1.0),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(C=3, D=12, head=2, lam=1e-3, bias=True, seed=0)  # every class has fewer samples than dimensions
@example(C=2, D=1, head=30, lam=0.5, bias=False, seed=1)  # every class has more
def test_equilibrium_matches_a_brute_force_minimizer(C, D, head, lam, bias, seed):
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, (head * 0.5 ** np.arange(C)).astype(int))
    y = np.repeat(np.arange(C), counts)
    h = rng.normal(size=(len(y), D)) + rng.normal(size=(C, D))[y]
    eq = pem_equilibrium(h, y, C, lam, bias=bias)
    np.testing.assert_allclose(eq.eta, _brute_force(h, y, C, lam, 1.0, bias), atol=2e-6)


def test_both_newton_forms_give_the_same_equilibrium_to_1e_10(monkeypatch):
    """Classes with fewer samples than dimensions take Woodbury steps; forcing the dense form on all of them changes
    nothing beyond rounding (float32 features, as training gives them, included)."""
    import npe_theory.equilibrium as equilibrium

    rng = np.random.default_rng(3)
    counts = np.array([80, 40, 20, 9, 4])
    y = np.repeat(np.arange(5), counts)
    h = np.maximum(rng.normal(size=(len(y), 30)) + 2 * rng.normal(size=(5, 30))[y], 0).astype(np.float32)
    fast = pem_equilibrium(h, y, 5, 5e-3)
    real = equilibrium._NewtonStep.__init__

    def dense(self, *args):
        real(self, *args)
        self.gram = None

    monkeypatch.setattr(equilibrium._NewtonStep, "__init__", dense)
    slow = pem_equilibrium(h, y, 5, 5e-3)
    np.testing.assert_allclose(fast.eta, slow.eta, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.weight, slow.weight, rtol=1e-8, atol=1e-12)


@given(
    counts=st.lists(st.integers(1, 90), min_size=2, max_size=12),
    D=st.integers(1, 70),
    lam=st.floats(1e-4, 1.0),
    bias=st.booleans(),
    single=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(
    counts=[60, 58, 57, 3, 2, 2, 90], D=50, lam=1e-3, bias=True, single=True, seed=0
)  # groups of both forms
def test_classes_solved_side_by_side_equal_each_alone(counts, D, lam, bias, single, seed):
    """Classes of similar sizes are solved side by side, their rows zero-padded; each class's answer must be what it
    gets alone (a padded row that counted, or one class's rows or start given to another, breaks this), from a cold
    start and from another solution."""
    rng = np.random.default_rng(seed)
    C = len(counts)
    y = np.repeat(np.arange(C), counts)
    h = np.maximum(rng.normal(size=(len(y), D)) + 2 * rng.normal(size=(C, D))[y], 0)
    h = h.astype(np.float32 if single else np.float64)
    kappa = 1.0 / len(
        y
    )  # each class alone sees its own rows only: the batch-mean weight given as alpha, summed
    together = pem_equilibrium(h, y, C, lam, bias=bias)
    moved = pem_equilibrium(h * 1.05, y, C, lam, bias=bias, start=together)
    for c in range(C):
        alone = pem_equilibrium(
            h[y == c], np.zeros(counts[c], int), 1, lam, alpha=kappa, reduction="sum", bias=bias
        )
        np.testing.assert_allclose(together.eta[c], alone.eta[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(together.weight[c], alone.weight[0], rtol=1e-7, atol=1e-10)
        start = type(alone)(together.weight[c : c + 1], together.bias[c : c + 1], alone.eta, 0.0, 0)
        warm = pem_equilibrium(
            h[y == c] * 1.05,
            np.zeros(counts[c], int),
            1,
            lam,
            alpha=kappa,
            reduction="sum",
            bias=bias,
            start=start,
        )
        np.testing.assert_allclose(moved.eta[c], warm.eta[0], rtol=1e-9, atol=1e-12)


def test_a_singular_system_in_a_stack_stops_only_its_own_class():
    """NumPy's batched solve fails for the whole stack when one system is singular; the others must still be solved,
    and the singular one reported as such."""
    from npe_theory.equilibrium import _solve_each

    rng = np.random.default_rng(0)
    for n in (5, 60):  # the LU and the Cholesky paths
        a = rng.normal(size=(3, n, n))
        a = a @ a.transpose(0, 2, 1) + n * np.eye(n)
        a[1] = 0.0
        b = rng.normal(size=(3, n))
        out, ok = _solve_each(a, b)
        assert ok.tolist() == [True, False, True]
        for i in (0, 2):
            np.testing.assert_allclose(a[i] @ out[i], b[i], atol=1e-10)


@given(C=st.integers(2, 6), D=st.integers(1, 9), seed=st.integers(0, 2**16))
@example(C=6, D=2, seed=0)  # between-class spread of lower rank than C - 1
def test_nc1_by_projection_matches_the_direct_formula(C, D, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), rng.integers(2, 9, size=C))
    h = rng.normal(size=(len(y), D)) + 3 * rng.normal(size=(C, D))[y]
    mu = np.stack([h[y == c].mean(0) for c in range(C)])
    within = h - mu[y]
    sigma_w = within.T @ within / len(h)
    centred = mu - mu.mean(0)
    sigma_b = centred.T @ centred / C
    direct = np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / C
    assert nc1(h, y, C) == pytest.approx(direct, rel=1e-9, abs=1e-12)


def _plain_replay(state, rows, labels, weight, step, fractions, lrs, lam, momentum, bias):
    """torch.optim.SGD with momentum and weight decay, every class every step: buf = g + lam p (the first step), then
    buf = mu buf + g + lam p; p -= lr buf. g of class c: sum over its rows of f_c omega_i l'(w_c . h_i + b_c) [h_i, 1]
    over the sum of its rows' omega."""
    w, b = state["weight"].copy(), state["bias"].copy()
    vw = None if state.get("velocity_weight") is None else state["velocity_weight"].copy()
    vb = None if state.get("velocity_bias") is None else state["velocity_bias"].copy()
    K, C, D = w.shape
    for t in range(len(lrs)):
        keep = step == t
        x, y, om = rows[keep], labels[keep], weight[keep]
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for c in range(C):
            sel = y == c
            if not sel.any() or om[sel].sum() == 0:
                continue
            for k in range(K):
                slope = -1.0 / (1.0 + np.exp(x[sel] @ w[k, c] + b[k, c]))
                share = fractions[t, c] * om[sel] / om[sel].sum()
                gw[k, c] = (share * slope) @ x[sel]
                gb[k, c] = (share * slope).sum() if bias else 0.0
        gw, gb = gw + lam * w, (gb + lam * b) if bias else np.zeros_like(b)
        if vw is None or momentum == 0:
            vw, vb = gw, gb
        else:
            vw, vb = momentum * vw + gw, momentum * vb + gb
        w = w - lrs[t] * vw
        if bias:
            b = b - lrs[t] * vb
    return w, b, vw, vb


@given(
    K=st.integers(1, 2),
    C=st.integers(1, 12),
    D=st.integers(1, 5),
    T=st.integers(1, 12),
    rows=st.integers(0, 60),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    bias=st.booleans(),
    warm=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(
    K=1, C=12, D=3, T=12, rows=3, momentum=0.9, bias=True, warm=True, seed=0
)  # most classes skip most steps
@example(
    K=2, C=4, D=2, T=5, rows=0, momentum=0.9, bias=False, warm=True, seed=1
)  # no rows at all: decay only
def test_the_lazy_replay_equals_a_plain_heavy_ball_loop(K, C, D, T, rows, momentum, bias, warm, seed):
    rng = np.random.default_rng(seed)
    step = np.sort(rng.integers(0, T, rows))
    labels = rng.integers(0, C, rows)
    weight = rng.uniform(0.0, 1.0, rows)
    x = rng.normal(size=(rows, D))
    fractions = rng.dirichlet(np.ones(C), size=T)
    lrs = rng.uniform(0.01, 0.3, T)
    state = {"weight": 0.1 * rng.normal(size=(K, C, D)), "bias": 0.1 * rng.normal(size=(K, C)) * bias}
    if warm:
        state.update(
            velocity_weight=0.01 * rng.normal(size=(K, C, D)),
            velocity_bias=0.01 * rng.normal(size=(K, C)) * bias,
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamics, "_LAZY_FROM", 0)  # the present-classes path on these small problems too
        got = dynamics.replay_steps(
            state, x, labels, weight, step, fractions, lrs, 3e-3, momentum=momentum, bias=bias
        )
    w, b, vw, vb = _plain_replay(state, x, labels, weight, step, fractions, lrs, 3e-3, momentum, bias)
    np.testing.assert_allclose(got["weight"], w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got["bias"], b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got["velocity_weight"], vw, rtol=1e-10, atol=1e-14)


def test_the_nc1_estimate_at_scale_is_exact_on_whole_classes_and_close_on_samples():
    """NC1 from at most k rows a class, weighted by n_c: the exact value when no class has more than k rows, and
    within a few percent of it from 20 rows of each of 200 classes of 60 (the error falls as 1 / sqrt(k C))."""
    from npe_theory.collapse import class_means_of, nc1_of

    rng = np.random.default_rng(4)
    C, D = 200, 16
    y = np.repeat(np.arange(C), 60)
    h = rng.normal(size=(len(y), D)) * rng.uniform(0.5, 2.0, size=C)[y, None] + 2 * rng.normal(size=(C, D))[y]
    means = class_means_of(h, y, C)
    exact = nc1_of(h, y, means)
    assert nc1_of(h, y, means, rows_per_class=60) == pytest.approx(exact, rel=1e-12)
    assert nc1_of(h, y, means, rows_per_class=20) == pytest.approx(exact, rel=0.03)


def test_a_warm_start_is_used_only_where_it_is_better():
    """The per-epoch report starts each class from the last report's answer or from Proposition 1's, whichever has the
    lower objective on the new features: a stale start far from the optimum must cost no Newton step over a cold
    start, class by class, and must not change the answer; a start at the optimum must take no more steps than a cold
    start either."""
    rng = np.random.default_rng(3)
    counts = [40, 35, 12, 6, 3]
    C, D, lam = len(counts), 24, 1e-3
    y = np.repeat(np.arange(C), counts)
    h = np.maximum(rng.normal(size=(len(y), D)) + 2 * rng.normal(size=(C, D))[y], 0)
    cold = pem_equilibrium(h, y, C, lam)
    stale = type(cold)(-30 * cold.weight, 30 * cold.bias + 5, cold.eta, 0.0, 0)
    for start in (stale, cold):
        warm = pem_equilibrium(h, y, C, lam, start=start)
        np.testing.assert_allclose(warm.eta, cold.eta, rtol=1e-9, atol=1e-12)
        assert warm.iterations <= cold.iterations
