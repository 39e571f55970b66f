"""Readers of files a user gives: CIFAR batches (through a restricted unpickler), image folders, ``X.npy``/``y.npy``.

Everything read from disk is untrusted: sizes are checked before anything is allocated, and no code
named in a file ever runs (docs/reliability.md). Every failure is a ``DataError`` naming the file.
Imports: NumPy, PIL (lazily) and ``npe_theory``'s readers and errors only.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from npe_theory.errors import InputError
from npe_theory.io import check_memory, open_regular, read_array
from npe_theory.validate import MAX_CLASSES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class DataError(InputError):
    """A data set that cannot be built as asked (missing folder, too few samples)."""


MAX_BATCH_BYTES = 1 << 30  # a CIFAR batch file is at most 160 MB; anything far larger is not one


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays, dicts, lists, bytes, strings and numbers, and refuses every other class, so no
    code named in the file runs (a plain ``pickle.load`` calls whatever the file names)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }  # how protocol 2 spells bytes: text to bytes, nothing else

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name} (only NumPy arrays and plain values are read)"
        )


def _unpickle(path: Path) -> dict:
    """One CIFAR batch file (a pickled dict) through ``_ArraysOnly``; anything else is a DataError naming the file."""
    try:
        with open_regular(path, "data_dir", MAX_BATCH_BYTES, DataError) as fh:  # no FIFO, no oversized file
            content = _ArraysOnly(fh, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
        RecursionError,
        MemoryError,
        OverflowError,
    ) as exc:
        raise DataError(f"data_dir: {path} is not a CIFAR batch file ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict):
        raise DataError(
            f"data_dir: {path} is not a CIFAR batch file (holds a {type(content).__name__}, not a dict)"
        )
    return content


def load_cifar(root, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10/100 from the python-pickle layout torchvision writes (uint8 NCHW, int64 labels).

    ``root`` holds ``cifar-10-batches-py/`` (data_batch_1..5, test_batch) or ``cifar-100-python/`` (train, test).
    """
    root = Path(root).expanduser()
    if num_classes == 10:
        folder, train_files, test_files, key = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            b"labels",
        )
    else:
        folder, train_files, test_files, key = root / "cifar-100-python", ["train"], ["test"], b"fine_labels"
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"data_dir: no CIFAR-{num_classes} at {folder} (missing {', '.join(missing)}); "
            f"point --data-dir at the folder that holds {folder.name}/ (it is never downloaded)"
        )

    def field(part: dict, name: bytes, f: str) -> np.ndarray:
        value = part.get(name)
        arr = np.asarray(value) if isinstance(value, (np.ndarray, list)) else None
        if arr is None or arr.dtype.kind not in "iu":
            raise DataError(f"data_dir: {folder / f}: {name.decode()} is missing or not integers")
        return arr

    def read(files):
        xs, ys = [], []
        for f in files:
            part = _unpickle(folder / f)
            x, y = field(part, b"data", f), field(part, key, f)
            if (
                x.ndim != 2
                or x.shape[1] != 3 * 32 * 32
                or y.shape != (len(x),)
                or x.min(initial=0) < 0
                or x.max(initial=0) > 255
            ):
                raise DataError(
                    f"data_dir: {folder / f}: expected data of shape (N, 3072) in 0..255 and N labels, "
                    f"got {x.shape} and {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= num_classes):
                raise DataError(f"data_dir: {folder / f}: labels outside [0, {num_classes})")
            xs.append(x.astype(np.uint8))
            ys.append(y.astype(np.int64))
        return np.concatenate(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"data_dir: {root} has no class sub-folders (expected one folder of images per class)"
        )
    return folders


MAX_IMAGE_PIXELS = 1 << 26  # 67 M pixels (8192 x 8192): checked from the header, before any pixel is decoded


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # PIL's 16-bit, 32-bit integer and float images


def _to_8bit(im, path: Path, labels: bool):
    """A 16-bit or floating-point image as 8-bit without saturating (PIL's own conversion clips at 255): 16-bit
    integers scaled by 255 / 65535, floats in [0, 1] by 255; label maps keep their values, which must fit 0..255."""
    from PIL import Image

    if im.mode not in WIDE_MODES:
        return im
    arr = np.asarray(im)
    if not np.all(np.isfinite(arr)) or arr.min() < 0:
        raise DataError(f"data_dir: {path} holds negative or non-finite pixel values ({im.mode} image)")
    if labels:
        if arr.max() > 255 or (arr.dtype.kind == "f" and np.any(arr != np.round(arr))):
            raise DataError(
                f"data_dir: label map {path} holds values beyond the class ids 0..255 ({im.mode} image)"
            )
        return Image.fromarray(arr.astype(np.uint8))
    if arr.dtype.kind == "f":
        if arr.max() > 1.0:
            raise DataError(
                f"data_dir: {path} is a floating-point image with values up to {float(arr.max()):g}; "
                "save it as 8-bit or with values in [0, 1]"
            )
        scaled = arr * 255.0
    elif arr.max() > 65535:
        raise DataError(
            f"data_dir: {path} is a 32-bit image with values beyond 16 bits; save it as 8- or 16-bit"
        )
    else:
        scaled = arr.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.round(scaled).astype(np.uint8))


def read_image(path: Path, mode: str, size: int | None, labels: bool = False) -> np.ndarray:
    """One image as an array in PIL ``mode`` ("RGB" or "L"), resized to size x size when given (nearest for
    label maps). Its size is read from the header and bounded before decoding; DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular(path, "data_dir", error=DataError) as fh, Image.open(fh) as im:
            if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"data_dir: {path} claims {im.size[0]}x{im.size[1]} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS} an image may have"
                )
            im = _to_8bit(im, path, labels).convert(mode)
            if size is not None:
                im = im.resize((size, size), Image.NEAREST if labels else Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"data_dir: cannot read image {path} ({exc.__class__.__name__})") from None


HELD_BYTES_PER_VALUE = 5  # a decoded uint8 value and its float32 copy, normalized, held together for a moment


def _read_images(folders: list[Path], image_size: int | None, where: str):
    images, labels, shape = [], [], None
    listed = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"data_dir: class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        listed.append(files)
    total = sum(len(files) for files in listed)
    for c, files in enumerate(listed):
        for f in files:
            arr = read_image(f, "RGB", image_size or None).transpose(2, 0, 1)
            if shape is None:  # every image has this shape (checked below): the set's memory is known now
                shape = arr.shape
                check_memory(
                    "image_size" if image_size else "data_dir",
                    total * int(np.prod(shape)) * HELD_BYTES_PER_VALUE,
                    f"{total} {where} images of {shape[2]}x{shape[1]} pixels",
                )
            elif arr.shape != shape:
                raise DataError(
                    f"data_dir: {f} is {arr.shape[2]}x{arr.shape[1]}, others are {shape[2]}x{shape[1]}; "
                    f"pass --image-size to resize them all ({where})"
                )
            images.append(arr)
            labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_image_folder(root, image_size: int | None = None):
    """An image folder: ``root/train/<class>/*`` and ``root/test/<class>/*`` (and ``root/val/<class>/*``, a validation
    split, when present), or ``root/<class>/*`` (no test split).

    Returns float32 (N, 3, H, W) images normalized by the training set's per-channel mean and std,
    int64 labels (classes in sorted folder order), the test pair and the validation pair (each (None, None) when
    absent), and the class names.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_dir: no folder {root}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    folders = _class_folders(train_dir)
    names = [f.name for f in folders]
    x, y = _read_images(folders, image_size, "train")
    xt = yt = None
    if train_dir != root:
        if not (root / "test").is_dir():
            raise DataError(f"data_dir: {root} has train/ but no test/ folder")
        test_names = [f.name for f in _class_folders(root / "test")]
        if test_names != names:
            raise DataError(f"data_dir: test/ classes {test_names} differ from train/ classes {names}")
        xt, yt = _read_images(_class_folders(root / "test"), image_size or x.shape[-1], "test")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"data_dir: test images are {xt.shape[1:]}, training images {x.shape[1:]}; pass --image-size"
            )
    xv = yv = None
    if train_dir != root and (root / "val").is_dir():
        if [f.name for f in _class_folders(root / "val")] != names:
            raise DataError(f"data_dir: val/ classes differ from train/ classes {names}")
        xv, yv = _read_images(_class_folders(root / "val"), image_size or x.shape[-1], "val")
        if xv.shape[1:] != x.shape[1:]:
            raise DataError(
                f"data_dir: val images are {xv.shape[1:]}, training images {x.shape[1:]}; pass --image-size"
            )
    x = x.astype(np.float32) / 255.0
    mean, std = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    x = (x - mean) / std
    scale = lambda a: None if a is None else (a.astype(np.float32) / 255.0 - mean) / std  # noqa: E731
    return x, y, scale(xt), yt, scale(xv), yv, names


def load_npy(root):
    """``root/X.npy`` and ``root/y.npy`` (integer labels 0..C-1), and ``X_test.npy`` / ``y_test.npy`` and the
    validation pair ``X_val.npy`` / ``y_val.npy`` when present: (x, y, x_test, y_test, x_val, y_val, class names)."""
    root = Path(root).expanduser()

    def read(name, required=True):
        try:
            return read_array(root / name, "data_dir", required)
        except InputError as exc:
            raise DataError(
                f"{exc} (expected X.npy and y.npy, optionally X_test.npy and y_test.npy)"
            ) from None

    x, y, xt, yt = read("X.npy"), read("y.npy"), read("X_test.npy", False), read("y_test.npy", False)
    xv, yv = read("X_val.npy", False), read("y_val.npy", False)
    for a, b, name in ((xt, yt, "test"), (xv, yv, "val")):
        if (a is None) != (b is None):
            raise DataError(f"data_dir: give both X_{name}.npy and y_{name}.npy, or neither ({root})")
    pairs = (
        [("X.npy", "y.npy", x, y)]
        + ([("X_test.npy", "y_test.npy", xt, yt)] if xt is not None else [])
        + ([("X_val.npy", "y_val.npy", xv, yv)] if xv is not None else [])
    )
    for xn, yn, xa, ya in pairs:
        if (
            not (np.issubdtype(xa.dtype, np.number) and not np.issubdtype(xa.dtype, np.complexfloating))
            or xa.ndim < 2
        ):
            raise DataError(
                f"data_dir: {xn} must hold real numbers, shape (N, features...), got {xa.dtype} {xa.shape}"
            )
        if not np.all(np.isfinite(xa)):
            raise DataError(f"data_dir: {xn} holds NaN or infinite values")
        if (
            ya.ndim != 1
            or len(ya) != len(xa)
            or not np.issubdtype(ya.dtype, np.integer)
            or ya.dtype == np.bool_
        ):
            raise DataError(
                f"data_dir: {yn} must be integer labels, one per row of {xn} ({len(xa)}), got {ya.dtype} {ya.shape}"
            )
        if len(ya) and ya.min() < 0:
            raise DataError(f"data_dir: {yn} has negative labels")
    if len(y) == 0:
        raise DataError("data_dir: y.npy holds no samples")
    C = int(max(y.max(), -1 if yt is None else yt.max())) + 1
    if C > MAX_CLASSES:
        raise DataError(
            f"data_dir: labels go up to {C - 1}; at most {MAX_CLASSES} classes are supported (labels must be 0..C-1)"
        )
    if int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"data_dir: X.npy rows hold no features (shape {x.shape})")
    missing = np.flatnonzero(np.bincount(y, minlength=C) == 0)
    if missing.size:
        raise DataError(
            f"data_dir: class {int(missing[0])} has no sample in y.npy (labels must be 0..C-1, every class present)"
        )
    for name, a, b in (("X_test.npy", xt, yt), ("X_val.npy", xv, yv)):
        if a is not None and a.shape[1:] != x.shape[1:]:
            raise DataError(f"data_dir: {name} rows are {a.shape[1:]}, X.npy rows {x.shape[1:]}")
        if b is not None and len(b) and b.max() >= C:
            raise DataError(
                f"data_dir: {name.replace('X', 'y')} has label {int(b.max())}, beyond the classes of y.npy (0..{C - 1})"
            )
    to = lambda a: None if a is None else np.asarray(a, dtype=np.float32)  # noqa: E731
    labels = lambda a: None if a is None else a.astype(np.int64)  # noqa: E731
    return to(x), y.astype(np.int64), to(xt), labels(yt), to(xv), labels(yv), [str(c) for c in range(C)]


def write_fake_cifar(
    root, num_classes: int = 10, train_per_class: int = 20, test_per_class: int = 5, seed: int = 0
) -> Path:
    """A tiny CIFAR-format folder (random images) for tests and speed runs: same layout, same dtypes."""
    rng = np.random.default_rng(seed)
    root = Path(root)

    def batch(n_per_class, key):
        y = np.repeat(np.arange(num_classes), n_per_class)
        rng.shuffle(y)
        return {b"data": rng.integers(0, 256, (len(y), 3072), dtype=np.uint8), key: y.tolist()}

    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        per = np.full(5, train_per_class // 5)
        per[: train_per_class % 5] += 1
        files = {f"data_batch_{i + 1}": batch(int(n), b"labels") for i, n in enumerate(per)}
        files["test_batch"] = batch(test_per_class, b"labels")
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "train": batch(train_per_class, b"fine_labels"),
            "test": batch(test_per_class, b"fine_labels"),
        }
    for name, content in files.items():
        with (folder / name).open("wb") as fh:
            pickle.dump(content, fh)
    return root
