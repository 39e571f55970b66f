"""PriorEstimator, the one-way loss and NPE-LA, against hand-derived gradients and the closed form."""

import numpy as np
import pytest
import torch

from npe_theory.priors import predicted_priors
from npe_train import PriorEstimator, npe_adjust, one_way_logistic_loss
from npe_train.methods.pem_loss import heads_loss


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_loss_value_and_gradient_by_hand():
    eta = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]], requires_grad=True)
    y = torch.tensor([2, 0])
    loss = one_way_logistic_loss(eta, y)  # mean of softplus(-eta_y)
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-14)
    loss.backward()
    # d/d eta_y softplus(-eta_y) / B = -sigmoid(-eta_y) / B; every other coordinate gets exactly 0
    grad = np.zeros((2, 3))
    grad[0, 2] = -1 / (1 + np.exp(2.0)) / 2
    grad[1, 0] = -1 / (1 + np.exp(1.5)) / 2
    np.testing.assert_allclose(eta.grad.numpy(), grad, rtol=1e-14, atol=0)
    assert (eta.grad != 0).sum() == 2


def test_exponential_tail_variant():
    eta = torch.tensor([[0.5, 3.0]], requires_grad=True)
    loss = one_way_logistic_loss(eta, torch.tensor([1]), loss="exp", reduction="sum")
    loss.backward()
    assert loss.item() == pytest.approx(np.exp(-3.0)) and eta.grad[0, 1].item() == pytest.approx(
        -np.exp(-3.0)
    )
    assert eta.grad[0, 0].item() == 0.0


def test_dense_maps_equal_flattened_pixels():
    torch.manual_seed(0)
    eta = torch.randn(2, 4, 3, 5)
    y = torch.randint(0, 4, (2, 3, 5))
    y[0, 0, 0] = -100  # ignored pixel
    dense = one_way_logistic_loss(eta, y)
    flat_eta = eta.permute(0, 2, 3, 1).reshape(-1, 4)
    flat_y = y.reshape(-1)
    keep = flat_y != -100
    assert dense.item() == pytest.approx(
        one_way_logistic_loss(flat_eta[keep], flat_y[keep]).item(), rel=1e-13
    )


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="^target"):
        one_way_logistic_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="^eta, target"):  # a shape mismatch names both
        one_way_logistic_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="^reduction"):
        one_way_logistic_loss(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="^loss"):
        one_way_logistic_loss(torch.zeros(2, 3), torch.tensor([0, 1]), loss="hinge")


def test_estimator_shapes_init_and_averaging():
    torch.manual_seed(0)
    pem = PriorEstimator(64, 10, num_pems=3)
    w = torch.cat([h.weight.flatten() for h in pem.heads])
    assert w.std().item() == pytest.approx(1e-3, rel=0.05) and all((h.bias == 0).all() for h in pem.heads)
    h = torch.randn(5, 64)
    heads = pem.heads_output(h)
    assert heads.shape == (3, 5, 10)
    torch.testing.assert_close(pem(h), heads.mean(0))
    dense = pem(torch.randn(2, 64, 4, 6))
    assert dense.shape == (2, 10, 4, 6)
    # per pixel: the same as applying the heads to that pixel's feature vector
    f = torch.randn(2, 64, 4, 6)
    torch.testing.assert_close(pem(f)[1, :, 2, 3], pem(f[1, :, 2, 3][None])[0])
    mlp = PriorEstimator(8, 4, hidden=16)
    assert not mlp.is_linear and mlp(torch.randn(3, 8)).shape == (3, 4)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in mlp.modules())


def test_detach_blocks_gradient_to_features():
    for detach, expect in ((False, True), (True, False)):
        pem = PriorEstimator(4, 3, detach=detach)
        h = torch.randn(6, 4, requires_grad=True)
        heads_loss(pem.heads_output(h), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
        assert (h.grad is not None and h.grad.abs().sum() > 0) == expect
        assert pem.heads[0].weight.grad.abs().sum() > 0


def test_estimator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="^num_pems"):
        PriorEstimator(4, 3, num_pems=0)
    with pytest.raises(ValueError, match="^hidden"):
        PriorEstimator(4, 3, hidden=0)
    with pytest.raises(ValueError, match="^features"):
        PriorEstimator(4, 3)(torch.randn(2, 5))


def test_npe_adjust_matches_official_centering():
    torch.manual_seed(1)
    z, eta = torch.randn(7, 5), torch.randn(7, 5)
    assert torch.equal(npe_adjust(z, eta, 0.0), z)
    torch.testing.assert_close(npe_adjust(z, eta, 0.5), z - 0.5 * eta)
    p = -eta  # the official code's PEM output and its centered adjustment
    official = z + (p - p.mean(1, keepdim=True))
    assert torch.equal(official.argmax(1), npe_adjust(z, eta).argmax(1))
    with pytest.raises(ValueError, match="^eta"):
        npe_adjust(z, eta[:, :3])


@pytest.mark.parametrize("loss", ["logistic", "exp"])
def test_sgd_on_collapsed_features_reaches_the_closed_form(loss):
    """A PEM trained by SGD with weight decay on exactly collapsed features (h_i = mu_{y_i}) lands on
    predicted_priors(..., reduction="mean", bias=True): the theory package predicts the training package."""
    counts = np.array([400, 120, 40, 10])
    mu = torch.tensor(np.eye(4) * np.array([1.0, 1.5, 2.0, 3.0]))  # orthogonal means of different lengths
    y = torch.tensor(np.repeat(np.arange(4), counts))
    feats = mu[y]
    pem = PriorEstimator(4, 4, num_pems=2)
    lam, alpha = 0.05, 0.7
    opt = torch.optim.SGD(pem.parameters(), lr=0.5, momentum=0.9, weight_decay=lam)
    for _ in range(3000):
        opt.zero_grad()
        (alpha * heads_loss(pem.heads_output(feats), y, loss)).backward()
        opt.step()
    learned = np.array([pem(mu)[c, c].item() for c in range(4)])
    predicted = predicted_priors(counts, lam, (mu**2).sum(1).numpy(), "mean", loss, bias=True, weight=alpha)
    np.testing.assert_allclose(learned, predicted, atol=1e-6)


@pytest.mark.parametrize("hidden", [None, 5])
def test_dense_heads_equal_the_heads_applied_pixel_by_pixel(hidden):
    """The per-pixel PEM (one 1x1 convolution for all linear heads) gives, at every pixel, what the (B, D) path gives."""
    torch.manual_seed(0)
    pem = PriorEstimator(6, 4, num_pems=3, hidden=hidden, init_std=0.3)
    h = torch.randn(2, 6, 5, 7)
    dense = pem.heads_output(h)
    flat = pem.heads_output(h.permute(0, 2, 3, 1).reshape(-1, 6))  # (K, B*H*W, C)
    torch.testing.assert_close(
        dense, flat.reshape(3, 2, 5, 7, 4).permute(0, 1, 4, 2, 3), rtol=1e-5, atol=1e-6
    )


def test_pem_param_groups_decay_the_pem_whatever_the_rest_does():
    """A Hugging Face Trainer-style grouping (no decay on biases) leaves the PEM bias undecayed: check_pem_decay names it.
    pem_param_groups decays the PEM's weight and bias at its own rate; one SGD step confirms it parameter by parameter."""
    import warnings

    from npe_train import check_pem_decay, pem_param_groups
    from npe_train.models.classifiers import attach_pem

    torch.manual_seed(0)
    net = attach_pem(
        torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU()), num_classes=3, feature_dim=6, num_pems=2
    )
    hf_style = [
        {"params": [p for n, p in net.named_parameters() if not n.endswith("bias")], "weight_decay": 0.01},
        {"params": [p for n, p in net.named_parameters() if n.endswith("bias")], "weight_decay": 0.0},
    ]
    with pytest.warns(UserWarning, match="^optimizer: no weight decay on PEM parameter"):
        missing = check_pem_decay(torch.optim.SGD(hf_style, lr=0.1), net)
    assert missing == ["pem.heads.0.bias", "pem.heads.1.bias"]
    groups = pem_param_groups(net, 5e-3, other_weight_decay=0.0)
    opt = torch.optim.SGD(groups, lr=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_pem_decay(opt, net) == []
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero loss gradients: only weight decay moves a parameter, p <- p (1 - lr wd)
    for n, p in net.named_parameters():
        factor = 1 - 0.5 * 5e-3 if n.startswith("pem.") else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-6, atol=0)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="^model"):
        pem_param_groups(torch.nn.Linear(2, 2), 1e-3)
