"""Segmentation: the generated data, the loaders on fake STARE and ADE20K folders, IoU against a direct count, the
per-pixel rules and prior report wiring, and a run end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from npe_train.data.segmentation import IGNORE, generate_shapes, load_ade20k, load_stare, pixel_counts
from npe_train.device.distributed import Dist
from npe_train.loop.build import build_mixing, build_objective, build_task
from npe_train.loop.step import StepContext, epoch_plan, train_step
from npe_train.loop.train import train
from npe_train.models.dense import FCN, DenseNPENet
from npe_train.run.config import make_config
from npe_train.tasks.segmentation import confusion, frequency_groups, segmentation_scores


def test_shapes_are_long_tailed_deterministic_and_balanced_at_test():
    a, b = (
        generate_shapes(n_max=200, imbalance=100, seed=3),
        generate_shapes(n_max=200, imbalance=100, seed=3),
    )
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train[:5], generate_shapes(n_max=200, imbalance=100, seed=4).x_train[:5])
    counts = a.counts
    assert len(counts) == 9 and counts[0] == counts.max()  # background first
    assert counts[1:].max() / counts[1:].min() >= 100  # object classes span at least 100x in training pixels
    np.testing.assert_array_equal(counts, pixel_counts(a.y_train, 9))
    test = pixel_counts(a.y_test, 9)[1:]
    assert (
        test.max() / test.min() < 3
    )  # every object class drawn equally often at test (areas differ by shape)
    assert (a.y_train == IGNORE).any() and a.x_train.dtype == np.uint8 and a.x_train.shape[1:] == (3, 32, 32)
    # the ignored ring lies next to objects only: never a pixel surrounded by background
    y = a.y_train
    ring = y == IGNORE
    near = np.zeros_like(ring)
    obj = y > 0
    near[:, 1:] |= obj[:, :-1]
    near[:, :-1] |= obj[:, 1:]
    near[:, :, 1:] |= obj[:, :, :-1]
    near[:, :, :-1] |= obj[:, :, 1:]
    assert np.all(near[ring])


def _write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _fake_stare(root, n=4, size=(20, 24)):
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        _write_png(root / "images" / f"im{i:04d}.ppm", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        mask = np.zeros(size, dtype=np.uint8)
        mask[:, 5 + i] = 255
        _write_png(root / "labels-ah" / f"im{i:04d}.ah.ppm", np.stack([mask] * 3, -1))
    return root


def _fake_ade(root, n=3, size=(16, 20)):
    rng = np.random.default_rng(1)
    base = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for i in range(n):
            _write_png(
                base / "images" / split / f"ADE_{split}_{i:08d}.jpg",
                rng.integers(0, 255, (*size, 3), dtype=np.uint8),
            )
            ann = rng.integers(0, 151, size, dtype=np.uint8)
            ann[0, :151] = np.arange(151)[: size[1]] if size[1] < 151 else np.arange(151)
            _write_png(base / "annotations" / split / f"ADE_{split}_{i:08d}.png", ann)
    return root


def test_stare_loader(tmp_path):
    d = load_stare(_fake_stare(tmp_path / "stare"))
    assert d.num_classes == 2 and len(d.x_train) == 2 and len(d.x_test) == 2
    assert d.x_train.shape[1:] == (3, 20, 24) and set(np.unique(d.y_train)) == {0, 1}
    assert d.counts[1] == 2 * 20  # one vessel column per training image


def test_ade20k_loader_maps_zero_to_ignore(tmp_path):
    root = _fake_ade(tmp_path / "ade", size=(16, 160))
    d = load_ade20k(root, image_size=None)
    raw = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(
            root / "ADEChallengeData2016" / "annotations" / "training" / "ADE_training_00000000.png"
        )
    )
    np.testing.assert_array_equal(d.y_train[0], np.where(raw == 0, IGNORE, raw.astype(np.int64) - 1))
    assert d.num_classes == 150 and len(d.x_test) == 3


@pytest.mark.parametrize(
    "damage, word",
    [
        ("empty", "no images"),
        ("missing_mask", "no label map"),
        ("size", "must match"),
        ("garbage", "cannot read"),
    ],
)
def test_ade20k_bad_folders_name_the_problem(tmp_path, damage, word):
    root = _fake_ade(tmp_path / "ade", size=(16, 160))
    ann = root / "ADEChallengeData2016" / "annotations" / "training"
    img = root / "ADEChallengeData2016" / "images" / "training"
    if damage == "empty":
        for p in img.iterdir():
            p.unlink()
    elif damage == "missing_mask":
        next(ann.iterdir()).unlink()
    elif damage == "size":
        _write_png(ann / "ADE_training_00000000.png", np.zeros((8, 8), dtype=np.uint8))
    else:
        (img / "ADE_training_00000001.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=f"^data_dir: .*{word}"):
        load_ade20k(root)


def test_labels_out_of_range_are_refused(tmp_path):
    root = _fake_stare(tmp_path / "s")
    from npe_train.data.segmentation import _seg_data

    with pytest.raises(ValueError, match=r"^data_dir: training labels outside \[0, 2\)"):
        _seg_data(
            np.zeros((1, 3, 2, 2), np.uint8),
            np.array([[[0, 1], [2, IGNORE]]]),
            np.zeros((1, 3, 2, 2), np.uint8),
            np.zeros((1, 2, 2), np.int64),
            2,
            "x",
        )
    assert load_stare(root).num_classes == 2


def test_cli_bad_segmentation_folder_is_one_line(tmp_path, capsys):
    from npe.cli import main

    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train",
                "--dataset",
                "stare",
                "--data-dir",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_dir" in err[0] and not (tmp_path / "r").exists()
    assert main(["train", "--dataset", "shapes", "--mix", "unimix", "--out", str(tmp_path / "r")]) == 2
    assert "mix" in capsys.readouterr().err
    # a network that cannot be built (here: no usable torchvision, or a weights file that is not one) leaves no folder
    (tmp_path / "w.pt").write_text("not weights")
    assert (
        main(
            [
                "train",
                "--dataset",
                "shapes",
                "--model",
                "deeplabv3",
                "--weights",
                str(tmp_path / "w.pt"),
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("npe: error: model:") or "weights" in err[0]
    assert not (tmp_path / "d").exists()


def test_scores_against_a_direct_count():
    rng = np.random.default_rng(0)
    C = 5
    target = torch.as_tensor(rng.integers(0, C, (4, 10, 10)))
    target[0, :2] = IGNORE
    pred = torch.as_tensor(rng.integers(0, C, (4, 10, 10)))
    conf = confusion(pred, target, C).numpy()
    t, p = target.numpy().ravel(), pred.numpy().ravel()
    keep = t != IGNORE
    for c in range(C):
        inter = np.sum((t == c) & (p == c) & keep)
        union = np.sum(((t == c) | (p == c)) & keep)
        assert conf[c, c] == inter
        counts = np.array([50, 40, 30, 20, 10])
        s = segmentation_scores(conf, counts)
        assert s["iou"][c] == pytest.approx(inter / union)
        assert s["class_accuracy"][c] == pytest.approx(inter / np.sum((t == c) & keep))
    assert s["pixel_accuracy"] == pytest.approx(np.mean(t[keep] == p[keep]))
    assert s["miou"] == pytest.approx(np.mean(s["iou"]))
    groups = frequency_groups(counts)
    assert groups["many"].tolist() == [0, 1] and groups["few"].tolist() == [4]
    assert s["by_frequency"]["few"]["miou"] == pytest.approx(s["iou"][4])


def test_dense_step_losses_by_hand():
    """Per-pixel CE (ignored pixels skipped) + alpha * the per-pixel one-way loss; la_loss adds tau ln pi per pixel."""
    torch.manual_seed(0)
    model = DenseNPENet(FCN(3, 8), 4)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    y[0, 0] = IGNORE
    counts = np.array([70, 20, 8, 2])
    log_prior = torch.log(torch.tensor([0.7, 0.2, 0.08, 0.02]))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for method in ("npe", "la_loss"):
        cfg = make_config(dataset="shapes", method=method, tau=0.5)
        model.train()
        (loss, ce, pem), _ = train_step(
            model,
            opt,
            x,
            [(y, None)],
            build_objective(cfg, counts),
            build_objective(cfg, counts).at_epoch(0, counts, "cpu"),
            False,
        )
        with torch.no_grad():
            logits, heads, _ = model(x)
        z = logits + (0.5 * log_prior[None, :, None, None] if method == "la_loss" else 0)
        keep = y != IGNORE
        lp = torch.log_softmax(z, 1).movedim(1, -1)[keep]
        want_ce = -lp[torch.arange(len(lp)), y[keep]].mean()
        eta = heads[0].movedim(1, -1)[keep]
        want_pem = F.softplus(-eta[torch.arange(len(eta)), y[keep]]).mean()
        assert ce.item() == pytest.approx(want_ce.item(), rel=1e-5)
        assert pem.item() == pytest.approx(want_pem.item(), rel=1e-5)
        assert loss.item() == pytest.approx(want_ce.item() + cfg.alpha * want_pem.item(), rel=1e-5)
        assert cfg.alpha == 0.1  # the segmentation default


def test_dense_epoch_plan_counts_pixels():
    y = np.full(
        (6, 4, 4), 0
    )  # 6 images at batch 2 (5 would leave a last step of one image, which is dropped)
    y[:, 0, 0] = 1
    y[2, 1, 1] = 2
    y[3, 3, 3] = IGNORE
    cfg = make_config(dataset="shapes", batch_size=2)
    plan = epoch_plan(
        torch.Generator().manual_seed(0),
        y,
        StepContext(build_task(cfg), build_mixing(cfg), cfg.batch_size, cfg.augment, Dist(), 3),
    )
    np.testing.assert_array_equal(plan.counts, pixel_counts(y, 3))
    assert plan.fractions.shape == (3, 3)
    np.testing.assert_allclose(plan.fractions.sum(1), 1.0, rtol=1e-6)


def test_shapes_run_end_to_end(tmp_path):
    cfg = make_config(
        dataset="shapes", n_max=60, imbalance=20, epochs=2, batch_size=16, out=str(tmp_path / "run")
    )
    res = train(cfg, progress=False)
    seg = res["segmentation"]
    assert set(seg) == {"argmax", "posthoc_la", "npe_la", "npe_inverse"}
    for s in seg.values():
        assert set(s) >= {"miou", "iou", "mean_class_accuracy", "pixel_accuracy"} and len(s["iou"]) == 9
    pem = res["pem"]
    assert pem["regime"].split(", ")[0] in ("transient", "equilibrium") and len(pem["learned"]) == 9
    np.testing.assert_allclose(pem["log_counts"], np.log(res["counts"]))  # pixel counts are the N_c
    # the report's closed form, recomputed from the report's own norms and the pixel counts
    from npe_theory.priors import predicted_priors

    np.testing.assert_allclose(
        pem["predicted"],
        predicted_priors(
            np.array(res["counts"]),
            res["config"]["pem_weight_decay"],
            np.array(pem["mean_norm_sq"]),
            "mean",
            "logistic",
            bias=True,
            weight=0.1,
        ),
        rtol=1e-10,
    )
    for name in ("iou_by_frequency.png", "pem_map.png", "pem_vs_log_counts.png"):
        assert (tmp_path / "run" / name).stat().st_size > 5000
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert sum(line["effective_counts"]) == sum(res["counts"])


def test_deeplabv3_builds_or_says_what_is_missing():
    """With a torchvision that loads: DeepLab-V3 features (1/8 resolution) under a per-pixel PEM, outputs at input size.
    Without one: a one-line ValueError naming the model setting."""
    from npe_train.models.dense import build_seg_model

    try:
        model = build_seg_model("deeplabv3", (3, 32, 32), 5)
    except ValueError as exc:
        assert str(exc).startswith("model: deeplabv3 needs a torchvision")
        return
    logits, heads, h = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 5, 32, 32) and heads.shape == (1, 2, 5, 32, 32) and h.shape[1] == 256


def test_f11_runs_follow_the_segmentation_main_job(tmp_path):
    """``segmentation_runs`` (behind F11) trains configs/shapes_seg.toml with the given method and seed."""
    from pathlib import Path

    from npe_train.experiments.segmentation import SEG_CONFIG, segmentation_runs, summarize_segmentation

    small = dict(n_max=60, imbalance=20, epochs=2)
    rows = segmentation_runs(methods=("ce",), seeds=(1,), progress=False, **small)
    job = (
        Path(__file__).resolve().parents[1] / "configs" / "shapes_seg.toml"
    )  # the checkout's path to the shipped recipe
    assert SEG_CONFIG == "shapes_seg"
    direct = summarize_segmentation(
        train(make_config(str(job), **small, method="ce", seed=1, out=str(tmp_path / "d")), progress=False)
    )
    assert rows == [direct] and rows[0]["alpha"] == 0.1
