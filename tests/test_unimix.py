"""UniMix: both distributions against their definitions, the mixed losses against a hand computation, the epoch plan's
bookkeeping, and a run end to end."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import stats

from npe_train.device.distributed import Dist
from npe_train.loop.build import build_mixing, build_objective, build_task
from npe_train.loop.step import StepContext, epoch_plan, train_step
from npe_train.loop.train import train
from npe_train.methods.unimix import draw_partners, mixing_factor, partner_probabilities
from npe_train.run.config import make_config


@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.lists(st.integers(1, 10**7), min_size=5, max_size=5),
    st.floats(-5.0, 5.0),
)
@example([0, 4], [10**7, 1, 1, 1, 1], -5.0)  # a share of 1e-35 next to one of 1: no underflow to 0/0
@example([1, 1, 1], [3, 3, 3, 3, 3], -0.1)  # one class: uniform
def test_partner_probabilities_are_the_normalized_powers(labels, counts, tau):
    p = partner_probabilities(torch.tensor(labels), torch.tensor(counts), tau).numpy()
    # the definition, in exact rational arithmetic on the logs: n^tau / sum n^tau, with the largest factored out
    logs = [tau * math.log(counts[y]) for y in labels]
    top = max(logs)
    expected = np.array([math.exp(v - top) for v in logs])
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-12, atol=0)
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0, abs=1e-12)


def test_partner_probabilities_favour_the_tail_for_negative_tau():
    p = partner_probabilities(torch.tensor([0, 1]), torch.tensor([1000, 10]), -0.1).numpy()
    assert p[1] > p[0] and p[1] / p[0] == pytest.approx(100**0.1, rel=1e-12)


def test_drawn_partners_follow_the_probabilities():
    """Chi-square goodness of fit of 200,000 draws against partner_probabilities (seeded: the test is deterministic)."""
    labels, counts = torch.tensor([0, 0, 1, 2, 3, 3, 3]), torch.tensor([500, 50, 5, 1])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([draw_partners(labels, counts, -0.5, gen) for _ in range(200_000 // len(labels))])
    observed = np.bincount(draws.numpy(), minlength=len(labels))
    expected = partner_probabilities(labels, counts, -0.5).numpy() * len(draws)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # and it would notice the uniform (mixup) sampler
    assert stats.chisquare(observed, np.full(len(labels), len(draws) / len(labels))).pvalue < 1e-12


def _wrapped_cdf(t, r, a):
    """P((r + B) mod 1 <= t), B ~ Beta(a, a): the mass of r + B in [r, t] plus the wrapped part in [1, 1 + t]."""
    F_B = lambda u: stats.beta.cdf(np.clip(u, 0.0, 1.0), a, a)  # noqa: E731
    return F_B(t - r) + F_B(1.0 + t - r) - F_B(1.0 - r)


@pytest.mark.parametrize(
    "n_i, n_j, a", [(1000.0, 10.0, 0.8), (10.0, 1000.0, 0.8), (50.0, 50.0, 2.0), (3.0, 7.0, 0.3)]
)
def test_mixing_factor_follows_the_wrapped_beta(n_i, n_j, a):
    """Kolmogorov-Smirnov against the exact CDF of n_j / (n_i + n_j) + Beta(a, a), wrapped into [0, 1)."""
    gen = torch.Generator().manual_seed(1)
    xi = mixing_factor(torch.full((20_000,), n_i), torch.full((20_000,), n_j), a, gen).numpy()
    assert xi.min() >= 0.0 and xi.max() < 1.0
    r = n_j / (n_i + n_j)
    assert stats.kstest(xi, lambda t: _wrapped_cdf(t, r, a)).pvalue > 1e-3
    # clipping at 1 instead of wrapping would put mass at 1 and none below r: the test tells them apart
    clipped = np.minimum(r + np.random.default_rng(0).beta(a, a, 20_000), 1.0 - 1e-12)
    assert stats.kstest(clipped, lambda t: _wrapped_cdf(t, r, a)).pvalue < 1e-6


def test_a_of_one_is_plain_mixup():
    """Beta(1, 1) is uniform, and a uniform shifted by any n_j / (n_i + n_j) and wrapped stays uniform."""
    xi = mixing_factor(
        torch.full((20_000,), 900.0), torch.full((20_000,), 3.0), 1.0, torch.Generator().manual_seed(4)
    ).numpy()
    assert stats.kstest(xi, "uniform").pvalue > 1e-3


def test_mixing_factor_is_reproducible_from_the_generator():
    n = torch.tensor([5.0, 50.0, 500.0])
    a = mixing_factor(n, n.flip(0), 0.8, torch.Generator().manual_seed(7))
    b = mixing_factor(n, n.flip(0), 0.8, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: partner_probabilities(torch.tensor([0, 5]), torch.tensor([1, 2]), -0.1), "labels"),
        (lambda: partner_probabilities(torch.tensor([0, 1]), torch.tensor([1, 0]), -0.1), "counts"),
        (lambda: partner_probabilities(torch.tensor([0, 1]), torch.tensor([1, 2]), float("nan")), "tau"),
        (lambda: mixing_factor(torch.tensor([1.0]), torch.tensor([1.0]), 0.0, torch.Generator()), "a"),
        (lambda: mixing_factor(torch.tensor([1.0]), torch.tensor([1.0, 2.0]), 0.8, torch.Generator()), "n_j"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        call()


def test_mixed_step_losses_by_hand():
    """The step's CE and PEM loss are xi l(y) + (1 - xi) l(y2), batch-averaged; xi = 1 is the unmixed step."""
    torch.manual_seed(0)
    cfg = make_config(dataset="synthetic", alpha=0.7)
    from npe_train.models.classifiers import build_model

    model = build_model("mlp", (32,), 10, 2, None, False, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y, y2 = torch.randn(6, 32), torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([9, 8, 7, 6, 5, 4])
    xi = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.0, 0.99])
    counts = np.ones(10)
    objective = build_objective(cfg, counts)
    state = objective.at_epoch(0, counts, "cpu")
    (loss, ce, pem), _ = train_step(model, opt, x, [(y, xi), (y2, 1 - xi)], objective, state, False)
    with torch.no_grad():
        logits, heads, _ = model(x)
        lp = torch.log_softmax(logits, 1)
        want_ce = (-(xi * lp[range(6), y] + (1 - xi) * lp[range(6), y2])).mean()
        want_pem = sum(
            (xi * F.softplus(-h[range(6), y]) + (1 - xi) * F.softplus(-h[range(6), y2])).mean() for h in heads
        )
    assert ce.item() == pytest.approx(want_ce.item(), rel=1e-6)
    assert pem.item() == pytest.approx(want_pem.item(), rel=1e-6)
    assert loss.item() == pytest.approx(want_ce.item() + 0.7 * want_pem.item(), rel=1e-6)
    plain, _ = train_step(model, opt, x, [(y, None)], objective, state, False)
    ones, _ = train_step(model, opt, x, [(y, torch.ones(6)), (y2, torch.zeros(6))], objective, state, False)
    torch.testing.assert_close(ones, plain)


@pytest.mark.parametrize("world", [1, 2])
def test_epoch_plan_bookkeeping(world):
    """Partners come from the same rank's batch; step shares and effective counts are the mixing weights summed."""
    cfg = make_config(dataset="synthetic", mix="unimix", batch_size=16)
    y = np.repeat(np.arange(4), [40, 20, 8, 3])
    counts = np.bincount(y)
    plans = [
        epoch_plan(
            torch.Generator().manual_seed(3),
            y,
            StepContext(
                build_task(cfg), build_mixing(cfg), cfg.batch_size, cfg.augment, Dist(rank=r, world=world), 4
            ),
            0,
            counts,
        )
        for r in range(world)
    ]
    local = 16 // world
    soft = np.zeros(4)
    for plan in plans:
        assert plan.xi.min() >= 0 and plan.xi.max() < 1
        for i in range(0, len(plan.shard), local):
            assert set(plan.partner[i : i + local].tolist()) <= set(plan.shard[i : i + local].tolist())
        np.add.at(soft, y[plan.shard.numpy()], plan.xi.double().numpy())
        np.add.at(soft, y[plan.partner.numpy()], 1 - plan.xi.double().numpy())
    np.testing.assert_allclose(plans[0].fractions.sum(1), 1.0, rtol=1e-6)
    if world == 1:  # (with 2 ranks the padding position counts in the steps, not in the effective counts)
        np.testing.assert_allclose(plans[0].counts, soft, rtol=1e-9)
        sizes = np.diff(np.r_[np.arange(0, len(y), 16), len(y)])
        np.testing.assert_allclose((plans[0].fractions * sizes[:, None]).sum(0), soft, rtol=1e-5)
    assert plans[0].counts.sum() == pytest.approx(len(y))
    assert plans[0].counts[-1] > counts[-1]  # mass moves to the tail


def test_unimix_run_end_to_end(tmp_path):
    cfg = make_config(
        dataset="synthetic", imbalance=20, epochs=3, mix="unimix", mix_until=2, out=str(tmp_path / "run")
    )
    res = train(cfg, progress=False)
    import json

    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = np.array(res["counts"])
    assert not np.allclose(lines[0]["effective_counts"], counts)  # mixing on
    np.testing.assert_allclose(lines[2]["effective_counts"], counts)  # off from mix_until
    assert (
        res["config"]["mix"] == "unimix"
        and res["config"]["mix_a"] == 0.8
        and res["config"]["mix_tau"] == -0.1
    )
    assert all(np.isfinite(res["pem"]["learned"]))
