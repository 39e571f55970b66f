"""Bring your own backbone (any nn.Module, torchvision-shaped) and your own data (an image folder, a NumPy pair).
Real torchvision and timm models: tests/test_vision.py."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from npe_train.data.longtail import build
from npe_train.loop.train import train
from npe_train.models.classifiers import attach_pem, from_torchvision, strip_head
from npe_train.run.config import make_config


class ResNetStyle(nn.Module):
    """The shape of torchvision's ResNet: features, then ``fc``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 1000)

    def forward(self, x):
        return self.fc(self.body(x))


class MobileNetStyle(nn.Module):
    """The shape of torchvision's MobileNet / EfficientNet: ``classifier`` a Sequential ending in a Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(6, 12), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(12, 1000)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.mark.parametrize("make, width", [(ResNetStyle, 8), (MobileNetStyle, 12)])
def test_torchvision_style_heads_are_replaced(make, width):
    model = make()
    net = from_torchvision(model, num_classes=7, input_shape=(3, 16, 16))
    assert net.feature_dim == width
    x = torch.randn(2, 3, 16, 16)
    logits, heads, h = net.eval()(x)
    assert logits.shape == (2, 7) and heads.shape == (1, 2, 7) and h.shape == (2, width)
    inner = model.body(x) if make is ResNetStyle else model.classifier[:-1](model.features(x))
    torch.testing.assert_close(h, inner)  # the features are what fed the removed layer


def test_attach_pem_to_any_feature_extractor():
    backbone = nn.Sequential(nn.Linear(7, 16), nn.ReLU())
    net = attach_pem(backbone, num_classes=5, feature_dim=16, num_pems=3)
    logits, heads, h = net(torch.randn(4, 7))
    assert logits.shape == (4, 5) and heads.shape == (3, 4, 5) and h.shape == (4, 16)
    x = torch.randn(4, 7)
    torch.testing.assert_close(net(x)[2], backbone(x))  # the features the PEM reads are the backbone's own
    torch.testing.assert_close(net(x)[1][0], net.pem.heads[0](backbone(x)))
    with pytest.raises(ValueError, match="^feature_dim"):
        attach_pem(backbone, num_classes=5)  # a Sequential has no out_features


class ViTStyle(nn.Module):
    """The shape of torchvision's ViT: ``heads`` a Sequential whose Linear is named ``head`` (not ``0``)."""

    def __init__(self):
        super().__init__()
        from collections import OrderedDict

        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10), nn.Tanh())
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(10, 1000)))

    def forward(self, x):
        return self.heads(self.body(x))


class NestedHeadStyle(nn.Module):
    """The shape of timm's ConvNeXt: ``head`` a plain Module holding norm, flatten and a Linear ``fc``."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Module()
        self.head.flatten, self.head.fc = nn.Flatten(), nn.Linear(5, 1000)

    def forward(self, x):
        return self.head.fc(self.head.flatten(self.body(x)))


@pytest.mark.parametrize("make, width", [(ViTStyle, 10), (NestedHeadStyle, 5)])
def test_a_named_or_nested_final_linear_is_replaced_and_the_width_measured(make, width):
    model = make()
    x = torch.randn(3, 3, 16, 16)
    fed = {}
    last = model.heads.head if make is ViTStyle else model.head.fc
    hook = last.register_forward_hook(lambda m, inp, out: fed.setdefault("h", inp[0].detach()))
    model.eval()(x)
    hook.remove()
    net = from_torchvision(model, num_classes=4, input_shape=(3, 16, 16))
    assert net.feature_dim == width
    torch.testing.assert_close(
        net.eval()(x)[2], fed["h"]
    )  # the features are exactly what fed the removed Linear


def test_a_model_without_a_final_linear_is_refused():
    with pytest.raises(ValueError, match="^model"):
        strip_head(nn.Sequential(nn.Conv2d(3, 3, 1)))


def _write_folder(root, counts, size=8, seed=0, ext=".png"):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, n in enumerate(counts):
        d = root / f"class_{chr(97 + c)}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(rng.normal(60 + 60 * c, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(d / f"{i}{ext}")


def test_image_folder_with_splits_uses_natural_counts(tmp_path):
    _write_folder(tmp_path / "imgs" / "train", [12, 6, 3])
    _write_folder(tmp_path / "imgs" / "test", [2, 2, 2], seed=1)
    data = build("folder", 1.0, "natural", data_dir=str(tmp_path / "imgs"))
    assert data.counts.tolist() == [12, 6, 3] and data.class_names == ["class_a", "class_b", "class_c"]
    assert data.x_train.shape == (21, 3, 8, 8) and data.x_test.shape == (6, 3, 8, 8)
    # normalized by the training set's own per-channel statistics
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    res = train(
        make_config(
            dataset="folder",
            data_dir=str(tmp_path / "imgs"),
            epochs=1,
            batch_size=8,
            out=str(tmp_path / "run"),
        ),
        progress=False,
    )
    assert (
        res["counts"] == [12, 6, 3]
        and res["class_names"] == ["class_a", "class_b", "class_c"]
        and res["config"]["profile"] == "natural"
    )


def test_flat_image_folder_gets_a_seeded_balanced_split_and_a_profile(tmp_path):
    _write_folder(tmp_path / "flat", [20, 20, 20], size=10)
    a = build("folder", 4.0, "exp", seed=3, data_dir=str(tmp_path / "flat"), test_fraction=0.25, image_size=6)
    b = build("folder", 4.0, "exp", seed=3, data_dir=str(tmp_path / "flat"), test_fraction=0.25, image_size=6)
    assert np.bincount(a.y_test).tolist() == [5, 5, 5]  # 25% of the smallest class, from every class
    assert a.counts.tolist() == [15, 7, 3] and a.x_train.shape[1:] == (3, 6, 6)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_numpy_pair(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [50, 25, 10, 5])
    np.save(tmp_path / "X.npy", rng.normal(size=(len(y), 6)) + y[:, None])
    np.save(tmp_path / "y.npy", y)
    data = build("npy", 1.0, "natural", data_dir=str(tmp_path), test_fraction=0.2)
    assert data.counts.tolist() == [49, 24, 9, 4] and np.bincount(data.y_test).tolist() == [1, 1, 1, 1]
    res = train(
        make_config(dataset="npy", data_dir=str(tmp_path), epochs=2, out=str(tmp_path / "run")),
        progress=False,
    )
    assert res["config"]["model"] == "mlp" and res["counts"] == [49, 24, 9, 4]


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda d: d.mkdir(), "no class sub-folders"),
        (lambda d: (d / "a").mkdir(parents=True), "has no images"),
        (
            lambda d: ((d / "a").mkdir(parents=True), (d / "a" / "x.png").write_bytes(b"not a png")),
            "cannot read image",
        ),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, make, word):
    make(tmp_path / "bad")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "npe",
            "train",
            "--dataset",
            "folder",
            "--data-dir",
            str(tmp_path / "bad"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "data_dir" in out.stderr and word in out.stderr


def test_bad_numpy_pairs(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.array([0, 1, 1, 3, 3]))  # class 2 missing
    with pytest.raises(ValueError, match="^data_dir: class 2"):
        build("npy", 1.0, "natural", data_dir=str(tmp_path))
    np.save(tmp_path / "y.npy", np.array([0.0, 1, 1, 0, 0]))
    with pytest.raises(ValueError, match="^data_dir: y.npy must be integer"):
        build("npy", 1.0, "natural", data_dir=str(tmp_path))


def test_digits28_is_the_digits_set_resized_and_placed():
    """digits28 against torch's own bilinear resize (an independent implementation) and the documented placement."""
    import torch.nn.functional as F

    from npe_train.data.longtail import DIGITS28_SEED, _digits, _digits28

    x, y = _digits28()
    x8, y8 = _digits()
    assert x.shape == (len(x8), 1, 28, 28) and np.array_equal(y, y8)
    ref = F.interpolate(
        torch.from_numpy(x8.reshape(-1, 1, 8, 8)), size=(20, 20), mode="bilinear", align_corners=False
    ).numpy()
    offsets = np.random.default_rng(DIGITS28_SEED).integers(0, 9, size=(len(x8), 2))
    for i in (0, 7, len(x8) - 1):
        dy, dx = offsets[i]
        np.testing.assert_allclose(x[i, 0, dy : dy + 20, dx : dx + 20], ref[i, 0], atol=1e-6)
        assert x[i].sum() == pytest.approx(ref[i].sum(), rel=1e-5)  # nothing outside the placed digit


def test_cnn2d_takes_28_to_32_pixel_images_and_refuses_others():
    from npe_train.models.classifiers import build_model

    for size in (28, 32):
        logits, heads, h = build_model("cnn2d", (1, size, size), 10)(torch.randn(3, 1, size, size))
        assert logits.shape == (3, 10) and heads.shape == (1, 3, 10) and h.shape == (3, 64)
    with pytest.raises(ValueError, match="^model: cnn2d"):
        build_model("cnn2d", (1, 40), 10)


def test_user_data_brings_its_own_validation_split(tmp_path):
    """A val/ folder beside train/ and test/, or X_val.npy / y_val.npy beside X.npy: the advice's validation set, normalized
    like the training images; classes that differ from the training ones are refused."""
    _write_folder(tmp_path / "imgs" / "train", [12, 6, 3])
    _write_folder(tmp_path / "imgs" / "test", [2, 2, 2], seed=1)
    _write_folder(tmp_path / "imgs" / "val", [3, 3, 3], seed=2)
    data = build("folder", 1.0, "natural", data_dir=str(tmp_path / "imgs"))
    assert data.val_source == "the val/ folder" and np.bincount(data.y_val).tolist() == [3, 3, 3]
    raw = np.stack(
        [
            np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
            for p in sorted((tmp_path / "imgs" / "train").rglob("*.png"))
        ]
    )
    mean, std = raw.mean(axis=(0, 2, 3), keepdims=True), raw.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    first = sorted((tmp_path / "imgs" / "val" / "class_a").glob("*.png"))[0]
    np.testing.assert_allclose(
        data.x_val[0],
        ((np.asarray(Image.open(first).convert("RGB"), np.float32).transpose(2, 0, 1) / 255 - mean) / std)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    _write_folder(tmp_path / "imgs" / "val" / "extra", [1], seed=3)
    with pytest.raises(ValueError, match="^data_dir: val/ classes"):
        build("folder", 1.0, "natural", data_dir=str(tmp_path / "imgs"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "npy"
    folder.mkdir()
    y = np.repeat(np.arange(3), [20, 10, 5])
    for name, arr in (
        ("X", rng.normal(size=(35, 4))),
        ("y", y),
        ("X_val", rng.normal(size=(9, 4))),
        ("y_val", np.repeat(np.arange(3), 3)),
    ):
        np.save(folder / f"{name}.npy", arr)
    data = build("npy", 1.0, "natural", data_dir=str(folder))
    assert data.val_source == "X_val.npy and y_val.npy" and data.x_val.shape == (9, 4)


class _SizedNet(torch.nn.Module):
    """Like torchvision's ViT: built for one image size (``image_size``) and refusing any other."""

    def __init__(self, image_size=64, says_size=True):
        super().__init__()
        self.size = image_size
        if says_size:
            self.image_size = image_size
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 16, stride=16), torch.nn.Flatten())
        self.fc = torch.nn.Linear(8 * (image_size // 16) ** 2, 5)

    def forward(self, x):
        torch._assert(x.shape[-1] == self.size, f"Wrong image height! Expected {self.size}")
        return self.fc(self.body(x))


def test_from_torchvision_probes_at_the_models_own_input_size():
    from npe_train.models.classifiers import from_torchvision

    net = from_torchvision(_SizedNet(64), 7)  # probed at 64 x 64, not 224
    logits, heads, h = net(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 7) and h.shape == (2, 8 * 16)
    net = from_torchvision(_SizedNet(32), 3, input_shape=(3, 32, 32))
    assert net(torch.zeros(1, 3, 32, 32))[0].shape == (1, 3)
    plain = _SizedNet(
        64, says_size=False
    )  # a model that does not say its size: 224 is tried, the error says what to do
    with pytest.raises(ValueError, match="^input_shape: the backbone does not take inputs \\(3, 224, 224\\)"):
        from_torchvision(plain, 7)
