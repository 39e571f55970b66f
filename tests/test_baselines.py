"""The baselines' losses against their formulas written out here (docs/baselines.md), and their wiring in a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from npe_train.loop.build import build_objective, drw_epoch
from npe_train.methods.catalog import METHODS, MethodSettings
from npe_train.methods.objective import EpochState
from npe_train.models.classifiers import CosineClassifier
from npe_train.run.config import make_config

COUNTS = np.array([1000, 300, 40, 3])


def _state(counts, class_weight=None):
    c = torch.as_tensor(counts, dtype=torch.float32)
    return EpochState(0, c, torch.log(c / c.sum()), class_weight)


def _batch(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 4, generator=g, dtype=torch.float64) * scale, torch.tensor([0, 1, 2, 3] * 3)


def _cb_weights(counts, beta):  # Cui et al.: (1 - beta) / (1 - beta^n), rescaled to sum to C
    w = np.array([(1 - beta) / (1 - beta ** float(n)) for n in counts])
    return w * len(counts) / w.sum()


def _make(name, **kw):
    return METHODS.get(name).make(MethodSettings(counts=COUNTS, **kw))


def test_cb_ce_is_the_weighted_batch_mean():
    z, y = _batch()
    w = torch.tensor(_cb_weights(COUNTS, 0.999))
    nll = -torch.log_softmax(z, 1)[range(12), y]
    want = (w[y] * nll).sum() / 12
    got = _make("cb_ce", cb_beta=0.999)(z, y, None, _state(COUNTS))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_cb_focal_is_the_weighted_focal_loss():
    z, y = _batch(1)
    p = torch.softmax(z, 1)[range(12), y]
    w = torch.tensor(_cb_weights(COUNTS, 0.99))
    want = (w[y] * (1 - p) ** 2.0 * -torch.log(p)).mean()
    got = _make("cb_focal", cb_beta=0.99, focal_gamma=2.0)(z, y, None, _state(COUNTS))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_ldam_subtracts_scaled_margins_from_the_true_logit():
    z, y = _batch(2)
    m = 0.5 * COUNTS**-0.25 / (COUNTS**-0.25).max()
    assert m[-1] == pytest.approx(0.5) and np.all(np.diff(m) > 0)  # the rarest class gets the largest margin
    adjusted = z.clone()
    adjusted[range(12), y] -= 30.0 * torch.tensor(m)[y]
    want = -torch.log_softmax(adjusted, 1)[range(12), y].mean()
    got = _make("ldam_drw")(z, y, None, _state(COUNTS))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_drw_switches_on_at_its_epoch_with_pytorchs_weighted_mean():
    cfg = make_config(dataset="synthetic", method="drw", epochs=10, drw_beta=0.999)
    assert drw_epoch(cfg) == 8 and drw_epoch(make_config(dataset="synthetic", method="ce")) is None
    assert drw_epoch(make_config(dataset="synthetic", method="ce", drw_epoch=3)) == 3  # around any loss
    objective = build_objective(cfg, COUNTS)
    assert objective.at_epoch(7, COUNTS, "cpu").class_weight is None
    state = objective.at_epoch(8, COUNTS, "cpu")
    w = torch.tensor(_cb_weights(COUNTS, 0.999))
    torch.testing.assert_close(state.class_weight.double(), w, rtol=1e-6, atol=0)
    z, y = _batch(3)
    nll = -torch.log_softmax(z, 1)[range(12), y]
    want = (w[y] * nll).sum() / w[y].sum()
    assert objective.classifier_loss(z.float(), y, None, state).item() == pytest.approx(want.item(), rel=1e-5)


def test_balanced_softmax_is_la_loss_at_tau_1(tmp_path):
    """The same run under both names: identical numbers."""
    from npe_train.loop.train import train

    kw = dict(dataset="synthetic", epochs=2, n_max=60, imbalance=10, tau=1.0)
    a = train(make_config(method="balanced_softmax", out=str(tmp_path / "a"), **kw), progress=False)
    b = train(make_config(method="la_loss", out=str(tmp_path / "b"), **kw), progress=False)
    assert a["accuracy"] == b["accuracy"] and a["pem"]["learned"] == b["pem"]["learned"]
    assert METHODS.get("balanced_softmax").same_as == "la_loss"


def test_the_cosine_classifier_gives_scaled_cosines():
    torch.manual_seed(0)
    head = CosineClassifier(5, 3, scale=30.0)
    h = torch.randn(4, 5)
    want = 30.0 * torch.nn.functional.cosine_similarity(h[:, None, :], head.weight[None], dim=2)
    torch.testing.assert_close(head(h), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cb_ce", "cb_focal", "ldam", "ldam_drw", "drw", "balanced_softmax"])
@given(scale=st.floats(1e-3, 1e4), tail=st.integers(1, 5), head=st.integers(1, 10**9))
@example(scale=1e4, tail=1, head=10**9)
@example(scale=1e-3, tail=1, head=1)
def test_no_baseline_returns_nan_or_infinity(name, scale, tail, head):
    counts = np.array([head, max(head // 7, 1), tail])
    loss_fn = METHODS.get(name).make(MethodSettings(counts=counts))
    z = (torch.tensor([[1.0, -2.0, 0.5], [-1.0, 3.0, 0.0], [2.0, 2.0, -3.0]]) * scale).requires_grad_()
    y = torch.tensor([2, 0, 1])
    weight = _cb_weights(counts, 0.9999)
    loss = loss_fn(z, y, None, _state(counts, torch.tensor(weight, dtype=torch.float32)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
