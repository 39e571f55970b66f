"""Real torchvision and timm models (the second lane of .ci/run installs a torch/torchvision pair that loads, and timm).

Every family takes a PEM at a small input with ``weights=None``, and its features are checked against an independent
reference: the input of the original model's final Linear, captured by a hook before the head is removed.
"""

import numpy as np
import pytest
import torch
from conftest import optional_module

from npe_train.data.files import write_fake_cifar
from npe_train.loop.train import train
from npe_train.models.classifiers import attach_pem, feature_width, from_torchvision, timm_backbone
from npe_train.run.checkpoint import CHECKPOINT, read_checkpoint
from npe_train.run.config import make_config

torchvision = optional_module("torchvision")
timm = optional_module("timm")
pytestmark = pytest.mark.vision
needs_torchvision = pytest.mark.skipif(
    torchvision is None, reason="no torchvision build that loads with this torch"
)
needs_timm = pytest.mark.skipif(timm is None, reason="timm is not installed")


def last_linear_input(model, x):
    """What the model's last nn.Linear receives for x (eval mode): the features a PEM should read."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen = {}
    hook = last.register_forward_hook(lambda m, inp, out: seen.setdefault("h", inp[0].detach().flatten(1)))
    with torch.no_grad():
        model.eval()(x)
    hook.remove()
    return seen["h"]


FAMILIES = [
    ("resnet18", {}, 32),
    ("mobilenet_v3_small", {}, 32),
    ("efficientnet_b0", {}, 32),
    ("regnet_y_400mf", {}, 32),
    ("convnext_tiny", {}, 32),
    ("vit_b_16", {"image_size": 32}, 32),
    ("swin_t", {}, 64),
]


@needs_torchvision
@pytest.mark.parametrize("name, kwargs, size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_torchvision_family_takes_a_pem(name, kwargs, size):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    x = torch.randn(2, 3, size, size)
    expected = last_linear_input(model, x)
    net = from_torchvision(model, num_classes=7, input_shape=(3, size, size))
    assert net.feature_dim == expected.shape[1]
    with torch.no_grad():
        logits, heads, h = net.eval()(x)
    assert logits.shape == (2, 7) and heads.shape == (1, 2, 7)
    torch.testing.assert_close(h, expected)


@needs_torchvision
def test_npe_train_with_a_torchvision_backbone_local_weights_and_a_last_batch_of_one(tmp_path):
    """resnet18 at 1x1 final maps: 33 training samples at batch 16 leave a last batch of one, which BatchNorm cannot
    take; it is dropped (32 samples in 2 steps), and the PEM trace counts the 2 steps taken."""
    write_fake_cifar(tmp_path / "data", 10, train_per_class=6, test_per_class=2)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    cfg = make_config(
        dataset="cifar10",
        model="torchvision:resnet18",
        weights=str(tmp_path / "r18.pt"),
        n_max=6,
        imbalance=3,
        epochs=1,
        batch_size=16,
        lr=1e-9,
        weight_decay=5e-3,
        data_dir=str(tmp_path / "data"),
        out=str(tmp_path / "run"),
    )
    res = train(cfg, progress=False)
    n = sum(res["counts"])
    assert n % 16 == 1, n  # the case under test
    assert res["config"]["model"] == "torchvision:resnet18" and len(res["pem"]["learned"]) == 10
    ckpt = read_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ckpt["trace"]["steps"] == [n // 16]
    # lr 1e-9: the trained conv1 is still the loaded one (to rounding), not a fresh random init
    torch.testing.assert_close(
        ckpt["model"]["backbone.conv1.weight"], reference.conv1.weight.detach(), atol=1e-6, rtol=0
    )
    bad = make_config(
        dataset="cifar10",
        model="torchvision:resnet18",
        weights=str(tmp_path / "missing.pt"),
        data_dir=str(tmp_path / "data"),
        n_max=6,
        imbalance=3,
        epochs=1,
        out=str(tmp_path / "run2"),
    )
    with pytest.raises(ValueError, match="^weights"):
        train(bad, progress=False)


@needs_torchvision
def test_deeplabv3_trains_on_shapes_end_to_end(tmp_path):
    res = train(
        make_config(
            dataset="shapes",
            model="deeplabv3",
            n_max=4,
            imbalance=2,
            epochs=1,
            batch_size=4,
            image_size=32,
            out=str(tmp_path / "seg"),
        ),
        progress=False,
    )
    assert res["config"]["model"] == "deeplabv3" and np.all(np.isfinite(res["pem"]["learned"]))
    assert (tmp_path / "seg" / "results.json").exists()


TIMM = [("resnet18", 32), ("mobilenetv3_large_100", 32), ("convnext_atto", 32), ("efficientnet_b0", 32)]


@needs_timm
@pytest.mark.parametrize("name, size", TIMM, ids=[t[0] for t in TIMM])
def test_timm_models_give_their_pooled_width(name, size):
    """timm's num_features is not always what the classifier reads (mobilenetv3: 960 before a 1280-wide head conv);
    the width measured by a forward pass is."""
    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False)
    x = torch.randn(2, 3, size, size)
    expected = last_linear_input(full, x)
    backbone = timm.create_model(name, pretrained=False)
    backbone.load_state_dict(full.state_dict())
    backbone.reset_classifier(0)
    assert feature_width(backbone, (3, size, size)) == expected.shape[1]
    net = attach_pem(backbone, 5, feature_width(backbone, (3, size, size)))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x)[2], expected)


@needs_timm
def test_npe_train_with_a_timm_backbone(tmp_path):
    write_fake_cifar(tmp_path / "data", 10, train_per_class=6, test_per_class=2)
    res = train(
        make_config(
            dataset="cifar10",
            model="timm:resnet18",
            n_max=6,
            imbalance=3,
            epochs=1,
            batch_size=16,
            data_dir=str(tmp_path / "data"),
            out=str(tmp_path / "run"),
        ),
        progress=False,
    )
    assert res["config"]["model"] == "timm:resnet18" and np.all(np.isfinite(res["pem"]["learned"]))
    with pytest.raises(ValueError, match="^model: timm has no model"):
        timm_backbone("no_such_net")


@needs_timm
def test_timm_optimizer_factory_exempts_the_pem_bias_unless_given_pem_param_groups():
    """timm's create_optimizer_v2, given a model, puts biases in a no-decay group (the PEM's too); given
    pem_param_groups it keeps the PEM's decay."""
    import warnings

    from timm.optim import create_optimizer_v2

    from npe_train import check_pem_decay, pem_param_groups

    net = attach_pem(timm_backbone("resnet18"), 5, 512)
    with pytest.warns(UserWarning, match="pem.heads.0.bias"):
        assert check_pem_decay(create_optimizer_v2(net, "sgd", lr=0.1, weight_decay=5e-3), net) == [
            "pem.heads.0.bias"
        ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            check_pem_decay(
                create_optimizer_v2(pem_param_groups(net, 5e-3), "sgd", lr=0.1, weight_decay=5e-3), net
            )
            == []
        )


@needs_torchvision
def test_a_vit_built_for_another_size_is_probed_at_its_own_size():
    model = torchvision.models.vit_b_16(weights=None, image_size=64)
    net = from_torchvision(model, 7)  # no input_shape: the ViT's image_size, not 224
    with torch.no_grad():
        logits, _, h = net.eval()(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and h.shape == (2, 768)
