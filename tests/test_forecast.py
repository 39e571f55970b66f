"""The forecast of the final PEM (npe_theory/forecast.py) against independent references.

- Collapsed features (every class-c row its mean): the Gaussian model is exact, and the forecast must equal
  ``dynamics.heavy_ball_pem`` (class-mean heavy-ball, written separately) from the same heads, zero buffers.
- Spread features and momentum buffers: a plain simulation in the full feature space written here, each step's
  expectations E[l'(t)], E[l''(t)] by scipy's adaptive quadrature and S w by the covariance matrix itself.
- Schedules whose rate holds for an epoch (the forecast then takes up to ``CHUNK`` steps at once): the same two
  references, stepped one step at a time, and the affine power against k plain applications.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.special import expit

from npe_theory.dynamics import heavy_ball_pem
from npe_theory.forecast import CHUNK, _power, forecast_pem


def _setup(rng, C, D, K, spread):
    counts = rng.integers(3, 12, size=C).astype(float)
    y = np.repeat(np.arange(C), counts.astype(int))
    means = rng.normal(size=(C, D)) * 2
    h = means[y] + spread * rng.normal(size=(len(y), D))
    w = 0.1 * rng.normal(size=(K, C, D))
    b = 0.1 * rng.normal(size=(K, C))
    return counts, y, h, w, b


@given(
    C=st.integers(2, 5),
    D=st.integers(1, 6),
    K=st.integers(1, 2),
    T=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
@example(C=2, D=1, K=1, T=1, seed=0)
def test_collapsed_features_give_the_class_mean_heavy_ball(C, D, K, T, seed):
    rng = np.random.default_rng(seed)
    counts, y, h, w, b = _setup(rng, C, D, K, spread=0.0)
    lrs = rng.uniform(0.01, 0.2, T)
    got = forecast_pem(h, y, counts, {"weight": w, "bias": b}, lrs, 5e-3, momentum=0.9)
    ref = heavy_ball_pem(
        np.stack([h[y == c].mean(0) for c in range(C)]),
        counts / counts.sum(),
        lrs,
        5e-3,
        momentum=0.9,
        init_weight=w,
        init_bias=b,
    )
    means = np.stack([h[y == c].mean(0) for c in range(C)])
    final = (np.einsum("kcd,cd->kc", ref["weight"], means) + ref["bias"]).mean(0)
    np.testing.assert_allclose(got.eta, final, rtol=1e-9, atol=1e-11)


def _moments(mean, s2):
    """E[l'(t)], E[l''(t)] of the logistic loss for t ~ N(mean, s2), by adaptive quadrature."""
    if s2 <= 0:
        return -expit(-mean), expit(mean) * expit(-mean)
    s = np.sqrt(s2)
    pdf = lambda t: np.exp(-0.5 * ((t - mean) / s) ** 2) / (s * np.sqrt(2 * np.pi))  # noqa: E731
    lo, hi = mean - 12 * s, mean + 12 * s
    slope = quad(lambda t: -expit(-t) * pdf(t), lo, hi, epsabs=1e-13, limit=200)[0]
    curve = quad(lambda t: expit(t) * expit(-t) * pdf(t), lo, hi, epsabs=1e-13, limit=200)[0]
    return slope, curve


def _full_space(h, y, counts, w, b, vw, vb, lrs, lam, momentum, alpha):
    """Heavy-ball on the Gaussian-expected gradient in the full augmented space, class by class and head by head."""
    C = len(counts)
    share = alpha * counts / counts.sum()
    out = np.zeros((w.shape[0], C))
    for c in range(C):
        x = np.hstack([h[y == c], np.ones((int((y == c).sum()), 1))])
        m = x.mean(0)
        S = (x - m).T @ (x - m) / len(x)
        for k in range(w.shape[0]):
            t, v = np.append(w[k, c], b[k, c]), np.append(vw[k, c], vb[k, c])
            for lr in lrs:
                slope, curve = _moments(t @ m, t @ S @ t)
                v = momentum * v + share[c] * (slope * m + curve * (S @ t)) + lam * t
                t = t - lr * v
            out[k, c] = t @ m
    return out.mean(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spread_features_with_momentum_match_a_full_space_simulation(seed):
    rng = np.random.default_rng(seed)
    counts, y, h, w, b = _setup(rng, C=3, D=4, K=2, spread=0.8)
    vw, vb = 0.05 * rng.normal(size=w.shape), 0.05 * rng.normal(size=b.shape)
    lrs = rng.uniform(0.05, 0.3, 25)
    got = forecast_pem(
        h,
        y,
        counts,
        {"weight": w, "bias": b, "velocity_weight": vw, "velocity_bias": vb},
        lrs,
        2e-3,
        momentum=0.9,
        alpha=1.5,
    )
    ref = _full_space(h, y, counts, w, b, vw, vb, lrs, 2e-3, 0.9, 1.5)
    np.testing.assert_allclose(got.eta, ref, atol=2e-6)
    assert got.steps == len(lrs)


def test_no_steps_left_is_the_output_now():
    rng = np.random.default_rng(5)
    counts, y, h, w, b = _setup(rng, C=3, D=3, K=1, spread=0.5)
    got = forecast_pem(h, y, counts, {"weight": w, "bias": b}, [], 1e-3)
    np.testing.assert_allclose(got.eta, got.now)
    means = np.stack([h[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(got.now, np.einsum("cd,cd->c", w[0], means) + b[0], atol=1e-12)


def test_the_run_forecasts_from_its_own_epoch_its_pem_state_and_the_rest_of_its_schedule(
    tmp_path, monkeypatch, pem_steps, kill_after
):
    """The forecast in metrics.jsonl against one made here from what the run held at the end of that epoch, recorded
    independently: the features its PEM head read during the epoch's steps (a forward hook), the heads and momentum
    buffers of the PEM (the checkpoint written after that epoch), and the cosine schedule's rates of the steps left
    (written from its formula). A forecast from another epoch's rows, without the momentum, or over another schedule
    lands elsewhere (checked by hand by breaking each once)."""
    import math

    import torch

    import npe_train.loop.train as train_mod
    from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
    from npe_train.run.config import make_config

    calls, shards = pem_steps
    import npe_train.tasks.forecast as forecast_mod

    # the measured variant too (off in a run by default)
    monkeypatch.setattr(forecast_mod, "EXTRAPOLATE", True)
    epochs, batch = 6, 64
    cfg = make_config(
        dataset="synthetic",
        imbalance=20,
        n_max=150,
        epochs=epochs,
        batch_size=batch,
        forecast_at=[0.5],  # after epoch 3 of 6 (0-based 2)
        seed=3,
        out=str(tmp_path / "run"),
    )
    res = train_mod.train(cfg, progress=False)
    lines = [
        __import__("json").loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    made = [x for x in lines if "forecast" in x]
    assert [x["epoch"] for x in made] == [2]
    from npe_train.loop.build import build_data

    data = build_data(cfg)
    steps = [-(-len(p.shard) // batch) for p in shards]
    first = sum(steps[:2])
    h = torch.cat([c[0] for c in calls[first : first + steps[2]]]).float().numpy()
    labels = data.y_train[shards[2].shard.numpy()]
    # the PEM's state after epoch 2: kill a second run after its third checkpoint and read it
    cut = make_config(**{**cfg.__dict__, "out": str(tmp_path / "cut")})
    with pytest.raises(kill_after(3)):
        train_mod.train(cut, progress=False)
    replay = read_checkpoint(tmp_path / "cut" / CHECKPOINT)["trace"]["replay"]
    state = {k: replay[k].numpy() for k in ("weight", "bias", "velocity_weight", "velocity_bias")}
    left = [
        cfg.lr * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(3, epochs) for _ in range(steps[e])
    ]
    pem_decay = res["config"]["pem_weight_decay"]
    ours = forecast_pem(h, labels, res["counts"], state, left, pem_decay, momentum=cfg.momentum, alpha=1.0)
    np.testing.assert_allclose(made[0]["forecast"]["eta"], ours.eta, rtol=1e-9, atol=1e-9)
    # extrapolated: each class's norm growth per unit of learning rate from epoch 1 (2 // 2) to epoch 2, fading to 0 by
    # the end (half of it carried over the rates left); each class's features scaled by the square root of its growth
    C = len(res["counts"])
    now = np.array([np.sum(h[labels == c].astype(np.float64).mean(0) ** 2) for c in range(C)])
    then = np.asarray(lines[1]["pem_norm_sq"])
    rate = (np.log(now) - np.log(then)) / (lines[2]["lr"] * steps[2])
    np.testing.assert_allclose(made[0]["forecast"]["growth_rates"], rate, rtol=1e-6)
    scale = np.exp(0.5 * rate * np.sum(left) / 2)
    assert np.ptp(scale) > 1e-3  # the classes grow differently: a uniform scale would not pass below
    assert made[0]["forecast"]["feature_scale"] == pytest.approx(np.exp(np.log(scale).mean()), rel=1e-6)
    grown = forecast_pem(
        h * scale[labels][:, None], labels, res["counts"], state, left, pem_decay, momentum=cfg.momentum
    )
    np.testing.assert_allclose(made[0]["forecast"]["eta_extrapolated"], grown.eta, rtol=1e-5, atol=1e-5)
    assert made[0]["forecast"]["steps_left"] == len(left)
    scored = res["pem"]["forecast"][0]
    assert scored["epoch"] == 2 and scored["share"] == 0.5
    learned = np.asarray(res["pem"]["learned"])
    gap = (np.asarray(ours.eta) - learned) - (np.asarray(ours.eta) - learned).mean()
    assert scored["centered_rmse"] == pytest.approx(float(np.sqrt(np.mean(gap**2))), rel=1e-9)


def _epochs_of(rng, epochs: int, steps: int) -> np.ndarray:
    """A schedule as a run has it: one rate per epoch (cosine-like, decreasing), ``steps`` steps each."""
    rates = 0.2 * 0.5 * (1 + np.cos(np.pi * np.arange(epochs) / epochs)) + rng.uniform(0.0, 0.01, epochs)
    return np.repeat(rates, steps)


@given(
    C=st.integers(2, 4),
    D=st.integers(1, 5),
    K=st.integers(1, 2),
    epochs=st.integers(1, 4),
    steps=st.integers(1, 3 * CHUNK),
    seed=st.integers(0, 2**16),
)
@example(C=2, D=1, K=1, epochs=1, steps=CHUNK + 1, seed=0)  # a full chunk and a single step after it
@example(C=3, D=2, K=2, epochs=3, steps=2 * CHUNK, seed=1)
def test_epochs_of_one_rate_give_the_class_mean_heavy_ball_step_by_step(C, D, K, epochs, steps, seed):
    """Collapsed features with the rate held for whole epochs: the forecast (chunks of up to 64 steps, the
    expectations held within one) against ``heavy_ball_pem`` run step by step, to the documented 1e-3 nats (outputs
    here reach tens of nats within a few hundred steps: harder than a run's PEM)."""
    rng = np.random.default_rng(seed)
    counts, y, h, w, b = _setup(rng, C, D, K, spread=0.0)
    lrs = _epochs_of(rng, epochs, steps)
    got = forecast_pem(h, y, counts, {"weight": w, "bias": b}, lrs, 5e-3, momentum=0.9)
    means = np.stack([h[y == c].mean(0) for c in range(C)])
    ref = heavy_ball_pem(means, counts / counts.sum(), lrs, 5e-3, momentum=0.9, init_weight=w, init_bias=b)
    final = (np.einsum("kcd,cd->kc", ref["weight"], means) + ref["bias"]).mean(0)
    np.testing.assert_allclose(got.eta, final, atol=1e-3)


def test_epochs_of_one_rate_with_spread_features_match_the_full_space_step_by_step():
    rng = np.random.default_rng(7)
    counts, y, h, w, b = _setup(rng, C=3, D=3, K=1, spread=0.8)
    vw, vb = 0.05 * rng.normal(size=w.shape), 0.05 * rng.normal(size=b.shape)
    lrs = _epochs_of(rng, 3, 90)
    state = {"weight": w, "bias": b, "velocity_weight": vw, "velocity_bias": vb}
    got = forecast_pem(h, y, counts, state, lrs, 2e-3, momentum=0.9)
    ref = _full_space(h, y, counts, w, b, vw, vb, lrs, 2e-3, 0.9, 1.0)
    np.testing.assert_allclose(got.eta, ref, atol=1e-3)
    exact = forecast_pem(h, y, counts, state, lrs, 2e-3, momentum=0.9, chunk=1)
    np.testing.assert_allclose(exact.eta, ref, atol=2e-6)  # the step-by-step path stays exact


@given(k=st.integers(1, 300), seed=st.integers(0, 2**16))
@example(k=1, seed=0)
@example(k=CHUNK, seed=0)
@example(k=CHUNK - 1, seed=3)  # every bit set
def test_the_affine_power_is_k_plain_applications(k, seed):
    rng = np.random.default_rng(seed)
    n = 5
    lr, mu = rng.uniform(0.01, 0.1), 0.9
    pull, push = rng.uniform(0.0, 0.5, n), rng.normal(size=n)
    a0, u0 = rng.normal(size=n), rng.normal(size=n)
    a, u = a0.copy(), u0.copy()
    for _ in range(k):  # the heavy-ball step itself, held expectations
        u = mu * u + push + pull * a
        a = a - lr * u
    m11, m12, m21, m22, f1, f2 = _power(
        (1 - lr * pull, -lr * mu * np.ones(n), pull, mu * np.ones(n), -lr * push, push), k
    )
    np.testing.assert_allclose(m11 * a0 + m12 * u0 + f1, a, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m21 * a0 + m22 * u0 + f2, u, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunk", [0, -1, 1.5, "64", True])
def test_a_chunk_that_is_not_a_positive_step_count_is_refused(chunk):
    rng = np.random.default_rng(0)
    counts, y, h, w, b = _setup(rng, C=2, D=2, K=1, spread=0.5)
    with pytest.raises((ValueError, TypeError), match="chunk"):
        forecast_pem(h, y, counts, {"weight": w, "bias": b}, [0.1] * 3, 1e-3, chunk=chunk)


def test_a_class_with_zero_features_and_heads_without_a_bias_keeps_its_row():
    """Without a bias a class of zero features and zero heads has no coordinate at all; its row must stay its own
    (zero) and leave the other classes' rows in place, as the class-mean heavy-ball has them."""
    rng = np.random.default_rng(2)
    h = np.vstack([np.zeros((4, 3)), rng.normal(size=(5, 3)) * 0.0 + rng.normal(size=3)])  # class 1 collapsed
    y = np.repeat([0, 1], [4, 5])
    w = np.zeros((1, 2, 3))
    w[0, 1] = 0.1 * rng.normal(size=3)
    lrs = _epochs_of(rng, 2, 70)
    got = forecast_pem(h, y, [4, 5], {"weight": w, "bias": np.zeros((1, 2))}, lrs, 5e-3, pem_bias=False)
    means = np.stack([h[y == c].mean(0) for c in range(2)])
    ref = heavy_ball_pem(
        means, np.array([4, 5]) / 9, lrs, 5e-3, bias=False, init_weight=w, init_bias=np.zeros((1, 2))
    )
    final = np.einsum("kcd,cd->kc", ref["weight"], means).mean(0)
    assert got.eta[0] == 0.0
    np.testing.assert_allclose(got.eta, final, atol=1e-3)


def test_growth_rates_are_each_classs_slope_over_the_later_half():
    """growth_rates fits ln ||mu_c||^2 against optimizer time (the sum of lr x steps) over the report lines from
    epoch // 2 on: on norms that grow exactly linearly in that time it returns each class's own slope, whatever the
    earlier lines hold; a class whose norm is not positive at some point grows by 0; one point is no rate."""
    from types import SimpleNamespace

    from npe_train.tasks.forecast import growth_rates

    rng = np.random.default_rng(0)
    lrs, steps = rng.uniform(0.01, 0.2, 9), rng.integers(3, 9, 9)
    trace = SimpleNamespace(lrs=lrs.tolist(), steps=steps.tolist())
    time = np.cumsum(lrs * steps)
    base, slope = rng.normal(size=4), rng.normal(size=4)
    norms = np.exp(base + slope * time[:, None])  # (epochs, classes), exactly linear in the log
    history = [(e, (norms[e] if e >= 4 else rng.uniform(1, 9, 4)).tolist()) for e in range(8)]
    del history[5]  # a report line missing (the cadence): the fit takes the lines there are
    np.testing.assert_allclose(growth_rates(history, trace, 8, norms[8]), slope, rtol=1e-9)
    history[4] = (4, [*norms[4][:3], 0.0])  # class 3 had no feature at epoch 4
    got = growth_rates(history, trace, 8, norms[8])
    np.testing.assert_allclose(got[:3], slope[:3], rtol=1e-9)
    assert got[3] == 0.0
    assert growth_rates([(1, norms[1].tolist())], trace, 8, norms[8]) is None  # nothing in the later half
