"""Long-tailed semantic segmentation data (docs/segmentation.md): generated shapes, and a user's STARE or ADE20K copy.

Every source returns uint8 images (N, 3, H, W) and int64 label maps (N, H, W) whose pixels are
class ids in [0, C) or ``IGNORE`` (not scored, no loss). Nothing is downloaded.

- ``shapes``: generated from a seed. Background plus 8 object classes, each a shape (disk, square,
  triangle, ring) with a texture (diagonal stripes of period 2 or 4), on a noisy background. The
  number of training objects per class falls exponentially (600 to 6 at the default imbalance 100),
  so their training pixel counts span more than 100x (137x at seed 0; the background's 850x). In
  the test images every object class appears equally often.
  A one-pixel ring around every object is ``IGNORE``: the boundary is ambiguous.
- ``stare``: retinal images and hand-labelled vessel masks (binary: background, vessel).
- ``ade20k``: the challenge layout ``ADEChallengeData2016/images|annotations/training|validation``,
  150 classes; annotation 0 ("other") is ``IGNORE``.
Imports: NumPy, PIL (through ``files.py``), ``npe_theory`` and the rest of ``data/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npe_theory.validate import positive_int

from .catalog import DataRequest, register_dataset
from .files import DataError, read_image
from .longtail import LongTailData, _needs_folder

IGNORE = -100  # torch's default ignore_index of cross_entropy, and of one_way_logistic_loss
SHAPE_NAMES = ("disk", "square", "triangle", "ring")
SHAPES_CLASSES = 9  # background + 4 shapes x 2 textures
NOISE = 0.08  # pixel noise (images in [0, 1]): the textures stay visible, the shapes blur at their edges


# ---- generated shapes ----


def _shape_mask(kind: str, yy, xx, cy, cx, r) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "disk":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
    if kind == "triangle":
        return (dy <= 0.7 * r) & (dy >= -r + 1.7 * np.abs(dx))
    return (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (0.55 * r) ** 2)  # ring


def _texture(period: int, yy, xx, phase: int) -> np.ndarray:
    return (
        (xx + yy + phase) // (period // 2)
    ) % 2  # diagonal stripes: 1-pixel (period 2) or 2-pixel (period 4) bands


def _shapes_image(rng, size: int, object_classes: np.ndarray):
    """One image: noisy background, the given object classes drawn in order (later ones on top), boundary rings ignored."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.uniform(0.25, 0.6, 3)
    img = base[:, None, None] + NOISE * rng.normal(size=(3, size, size))
    labels = np.zeros((size, size), dtype=np.int64)
    for c in object_classes:
        kind, period = SHAPE_NAMES[(c - 1) // 2], (2, 4)[(c - 1) % 2]
        r = rng.uniform(0.12, 0.22) * size
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _shape_mask(kind, yy, xx, cy, cx, r)
        if not mask.any():
            continue
        tex = _texture(period, yy, xx, int(rng.integers(4)))
        color = rng.uniform(0.3, 0.9, 3)  # object colour carries no class information
        img[:, mask] = color[:, None] * (0.6 + 0.6 * tex[mask]) + NOISE * rng.normal(size=(3, mask.sum()))
        labels[mask] = c
    # a one-pixel ring just outside every object: its label is ambiguous, so it is ignored
    obj = labels > 0
    grown = obj.copy()
    grown[1:] |= obj[:-1]
    grown[:-1] |= obj[1:]
    grown[:, 1:] |= obj[:, :-1]
    grown[:, :-1] |= obj[:, 1:]
    labels[grown & ~obj] = IGNORE
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels


def generate_shapes(
    n_max: int = 600,
    imbalance: float = 150.0,
    size: int = 32,
    seed: int = 0,
    objects_per_image: int = 3,
    test_per_class: int = 40,
) -> LongTailData:
    """The shapes data set. Training objects per class follow ``count_profile("exp", 8, n_max, imbalance)`` (class 1
    the most frequent), dealt at random into images of ``objects_per_image`` objects; the test images hold
    ``test_per_class`` objects of every class. ``counts``: training pixels per class, ignored ones excluded."""
    from npe_theory.priors import count_profile

    rng = np.random.default_rng(20_000 + seed)

    def draw(objects):
        objects = rng.permutation(objects)
        per = [objects[i : i + objects_per_image] for i in range(0, len(objects), objects_per_image)]
        pairs = [_shapes_image(rng, size, o) for o in per]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    train_objects = np.repeat(
        np.arange(1, SHAPES_CLASSES), count_profile("exp", SHAPES_CLASSES - 1, n_max, imbalance)
    )
    x, y = draw(train_objects)
    xt, yt = draw(np.repeat(np.arange(1, SHAPES_CLASSES), test_per_class))
    names = ["background"] + [
        f"{SHAPE_NAMES[(c - 1) // 2]}/{(2, 4)[(c - 1) % 2]}" for c in range(1, SHAPES_CLASSES)
    ]
    return _seg_data(x, y, xt, yt, SHAPES_CLASSES, "shapes", names)


def pixel_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Training pixels per class, ignored pixels excluded."""
    valid = labels[labels != IGNORE]
    return np.bincount(valid.ravel(), minlength=num_classes).astype(np.int64)


def _seg_data(x, y, xt, yt, num_classes: int, name: str, names=None) -> LongTailData:
    for what, labels in (("training", y), ("test", yt)):
        bad = (labels != IGNORE) & ((labels < 0) | (labels >= num_classes))
        if bad.any():
            raise DataError(
                f"data_dir: {what} labels outside [0, {num_classes}) (other than ignored pixels): "
                f"{sorted(set(labels[bad].tolist()))[:5]}"
            )
    counts = pixel_counts(y, num_classes)
    if not counts.all():
        raise DataError(f"data_dir: class {int(np.argmin(counts))} has no training pixel")
    return LongTailData(x, y, xt, yt, counts, name, names)


# ---- a user's STARE or ADE20K copy ----


def _open_image(path: Path, size: int | None, labels: bool) -> np.ndarray:
    return read_image(path, "L" if labels else "RGB", size, labels)


def _pairs(images: list[Path], label_of, size: int | None, where: str):
    if not images:
        raise DataError(f"data_dir: no images in {where}")
    xs, ys = [], []
    for path in images:
        lab_path = label_of(path)
        if not lab_path.is_file():
            raise DataError(f"data_dir: no label map {lab_path.name} for {path.name} in {lab_path.parent}")
        img, lab = _open_image(path, size, False), _open_image(lab_path, size, True)
        if img.shape[:2] != lab.shape:
            raise DataError(
                f"data_dir: label map {lab_path.name} is {lab.shape[1]}x{lab.shape[0]}, its image "
                f"{img.shape[1]}x{img.shape[0]}; they must match (or give --image-size)"
            )
        xs.append(img.transpose(2, 0, 1))
        ys.append(lab)
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DataError(
            f"data_dir: images of several sizes in {where}; give --image-size to resize them to one"
        )
    return np.stack(xs), np.stack(ys).astype(np.int64)


def _folder(root, image_size) -> tuple[Path, int | None]:
    """A checked folder path and image size (None: keep the images' own)."""
    if not isinstance(root, (str, os.PathLike)):
        raise DataError(f"data_dir: expected a folder path, got {root!r}")
    return Path(root).expanduser(), None if image_size is None else positive_int(
        "image_size", image_size, maximum=4096
    )


def load_stare(root, image_size: int | None = None, test_fraction: float = 0.5) -> LongTailData:
    """STARE: images ``imNNNN.ppm`` and hand-labelled vessel masks ``imNNNN.ah.ppm`` anywhere under ``root``.

    Vessel pixels (mask value > 127) are class 1, the rest class 0. The images sorted by name are
    split in order: the first ``1 - test_fraction`` train, the rest test.
    """
    root, image_size = _folder(root, image_size)
    if not root.is_dir():
        raise DataError(f"data_dir: no folder {root}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise DataError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    masks = {p.name.split(".")[0]: p for p in root.rglob("*.ah.ppm")}
    images = sorted(
        (p for p in root.rglob("*.ppm") if not p.name.endswith(".ah.ppm") and p.name.split(".")[0] in masks),
        key=lambda p: p.name,
    )
    if len(images) < 2:
        raise DataError(
            f"data_dir: {root} holds {len(images)} STARE image(s) with a vessel mask (imNNNN.ppm + imNNNN.ah.ppm); "
            f"at least 2 are needed"
        )
    x, y = _pairs(images, lambda p: masks[p.name.split(".")[0]], image_size, str(root))
    y = (y > 127).astype(np.int64)
    k = max(1, min(len(x) - 1, int(round(test_fraction * len(x)))))
    return _seg_data(x[:-k], y[:-k], x[-k:], y[-k:], 2, "stare", ["background", "vessel"])


def load_ade20k(root, image_size: int | None = None) -> LongTailData:
    """ADE20K (SceneParsing challenge): ``root/ADEChallengeData2016`` (or ``root`` itself) with "
    "``images/{training,validation}/*.jpg``
    and ``annotations/{training,validation}/*.png``. Annotation a in 1..150 is class a - 1; 0 is ignored."""
    root, image_size = _folder(root, image_size)
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    parts = []
    for split in ("training", "validation"):
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise DataError(
                    f"data_dir: no folder {d} (expected ADEChallengeData2016/images|annotations/training|validation)"
                )
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        x, y = _pairs(images, lambda p: ann_dir / (p.stem + ".png"), image_size, str(img_dir))
        y = np.where(y == 0, IGNORE, y - 1)
        parts.append((x, y))
    return _seg_data(*parts[0], *parts[1], 150, "ade20k")


def build_segmentation(
    dataset: str,
    seed: int = 0,
    data_dir: str | None = None,
    image_size: int | None = None,
    imbalance: float = 150.0,
    n_max: int | None = None,
) -> LongTailData:
    """The training and test sets of a registered segmentation source (shapes: ``n_max`` objects of the most frequent class)."""
    from .catalog import dataset as entry

    return entry(dataset).build(
        DataRequest(
            imbalance=imbalance,
            profile="natural",
            n_max=n_max,
            seed=seed,
            data_dir=data_dir,
            image_size=image_size,
        )
    )


_SEG = {"task": "segmentation", "model": "fcn", "natural": True, "images": True, "reads": ("image_size",)}


@register_dataset(
    "shapes", **_SEG, help="segmentation: generated shapes with long-tailed object counts (an FCN)"
)
def _shapes(request: DataRequest) -> LongTailData:
    return generate_shapes(
        n_max=request.n_max or 600,
        imbalance=request.imbalance,
        seed=request.seed,
        size=request.image_size or 32,
    )


@register_dataset(
    "stare",
    **{**_SEG, "reads": ("data_dir", "image_size")},
    help="segmentation: STARE retinal vessels from --data-dir",
)
def _stare(request: DataRequest) -> LongTailData:
    return load_stare(_needs_folder(request, "stare"), request.image_size, 0.5)


@register_dataset(
    "ade20k",
    **{**_SEG, "reads": ("data_dir", "image_size")},
    help="segmentation: ADE20K (ADEChallengeData2016) from --data-dir",
)
def _ade20k(request: DataRequest) -> LongTailData:
    return load_ade20k(_needs_folder(request, "ade20k"), request.image_size)
