"""Inputs read as needed: image lists (``relative/path label`` lines: ImageNet-LT, Places-LT, iNaturalist splits) and
a user's own torch Datasets.

``load_image_lists(root, train_list, test_list, val_list, size)`` returns ``OnDisk`` image sets: an
image is read (header-bounded, resized to size x size, normalized by per-channel statistics of a
sample of the training list) only when a batch asks for it, so a set larger than memory trains
through the DataLoader pipeline with worker processes. Indexing an ``OnDisk`` with an int gives one
image; with a slice or an index array, another ``OnDisk`` (nothing is read); ``load()`` reads its
images into one float32 tensor (one batch at a time). ``InDataset`` does the same for the samples of a
user's ``torch.utils.data.Dataset`` (``from_datasets``). Imports: NumPy, torch, ``files.py``.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from npe_theory.io import open_regular
from npe_theory.validate import MAX_CLASSES

from .files import DataError, read_image

MAX_LINES = 50_000_000  # a list of more entries than this is not a data set split
MAX_LIST_BYTES = 4 << 30
STATS_SAMPLE = 512  # images whose pixels set the per-channel mean and std


class Lazy:
    """Inputs read on demand: ``x[int]`` one sample (float32 NumPy), ``x[slice or index array]`` another ``Lazy`` (nothing
    read), ``load()`` all of its samples as one tensor."""

    dtype = np.dtype(np.float32)
    device = torch.device("cpu")

    def load(self) -> torch.Tensor:
        """Every sample of this set as one float32 tensor."""
        out = np.empty(self.shape, dtype=np.float32)
        for i in range(len(self)):
            out[i] = self[i]
        return torch.from_numpy(out)


class OnDisk(Lazy):
    """Images named by paths under ``root``, read on demand as float32 (3, size, size), normalized by ``mean``, ``std``."""

    def __init__(self, root: Path, paths: np.ndarray, size: int, mean=None, std=None):
        self.root, self.paths, self.size = Path(root), paths, int(size)
        self.mean = np.zeros((3, 1, 1), np.float32) if mean is None else mean
        self.std = np.ones((3, 1, 1), np.float32) if std is None else std

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            img = (
                read_image(self.root / self.paths[key], "RGB", self.size)
                .transpose(2, 0, 1)
                .astype(np.float32)
                / 255.0
            )
            return (img - self.mean) / self.std
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return OnDisk(self.root, self.paths[key], self.size, self.mean, self.std)


class InDataset(Lazy):
    """Samples ``index`` of a user's ``torch.utils.data.Dataset`` whose items are ``(input, label)``; inputs as float32."""

    def __init__(self, dataset, index: np.ndarray, sample_shape: tuple[int, ...]):
        self.dataset, self.index, self.sample_shape = dataset, index, sample_shape

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.sample_shape)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            x = np.asarray(self.dataset[int(self.index[key])][0], dtype=np.float32)
            if x.shape != self.sample_shape:
                raise DataError(
                    f"datasets: sample {int(self.index[key])} has shape {x.shape}, the first had {self.sample_shape}"
                )
            return x
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return InDataset(self.dataset, self.index[key], self.sample_shape)


MAX_SAMPLES = 100_000_000


def _labels(dataset, what: str) -> np.ndarray:
    """Every sample's label: the Dataset's ``targets`` when it has them (torchvision's sets do), else read item by item."""
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(
            f"{what}: expected a map-style torch Dataset (with __len__ and __getitem__)"
        ) from None
    if not 0 < n <= MAX_SAMPLES:
        raise DataError(f"{what}: expected 1 to {MAX_SAMPLES} samples, got {n}")
    raw = getattr(dataset, "targets", None)
    labels = (
        [raw[i] for i in range(n)] if raw is not None and len(raw) == n else [dataset[i][1] for i in range(n)]
    )
    out = np.asarray(
        [
            int(v)
            if isinstance(v, (int, np.integer))
            or (isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point())
            else -1
            for v in labels
        ],
        dtype=np.int64,
    )
    if out.min() < 0 or out.max() >= MAX_CLASSES:
        raise DataError(f"{what}: every label must be an integer class id in [0, {MAX_CLASSES})")
    return out


def from_datasets(train_set, test_set, val_set=None):
    """(x_train, y_train, x_test, y_test, x_val, y_val, class names) from a user's torch Datasets of ``(input, label)``
    items; inputs are read (as float32) only when a batch needs them."""
    sets, labels = [], []
    for what, ds in (
        ("datasets[0] (training)", train_set),
        ("datasets[1] (test)", test_set),
        ("datasets[2] (validation)", val_set),
    ):
        if ds is None:
            sets.append(None), labels.append(None)
            continue
        y = _labels(ds, what)
        first = np.asarray(ds[0][0], dtype=np.float32)
        sets.append(InDataset(ds, np.arange(len(y)), first.shape))
        labels.append(y)
    C = int(labels[0].max()) + 1
    if np.any(np.bincount(labels[0], minlength=C) == 0):
        raise DataError(f"datasets: every class 0 .. {C - 1} needs a training sample")
    for y, what in ((labels[1], "test"), (labels[2], "validation")):
        if y is not None and y.max() >= C:
            raise DataError(
                f"datasets: the {what} set has label {int(y.max())}, beyond the training classes 0 .. {C - 1}"
            )
    if any(s is not None and s.sample_shape != sets[0].sample_shape for s in sets[1:]):
        raise DataError("datasets: the test (or validation) samples do not have the training samples' shape")
    return sets[0], labels[0], sets[1], labels[1], sets[2], labels[2], [str(c) for c in range(C)]


def on_device(x, device) -> "torch.Tensor | Lazy":
    """A NumPy array as a tensor on ``device``; inputs read as needed stay where they are (batches are read later)."""
    return x if isinstance(x, Lazy) else torch.as_tensor(x, device=device)


def batch(x, device) -> torch.Tensor:
    """A batch of inputs on ``device``: a tensor as it is, a ``Lazy`` slice read now."""
    return x.load().to(device) if isinstance(x, Lazy) else x


def read_list(root: Path, list_file, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of a list file: one ``relative/path label`` per line (blank lines and # comments skipped);
    paths must stay under ``root``. DataError naming the file and line."""
    path = Path(list_file).expanduser()
    paths, labels = [], []
    with io.TextIOWrapper(
        open_regular(path, what, MAX_LIST_BYTES, DataError), encoding="utf-8", errors="strict"
    ) as fh:
        try:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if len(paths) >= MAX_LINES:
                    raise DataError(f"{what}: {path} has more than {MAX_LINES} entries")
                name, _, label = line.rpartition(" ")
                rel = PurePosixPath(name.strip())
                if not name.strip() or rel.is_absolute() or ".." in rel.parts:
                    raise DataError(
                        f"{what}: {path}, line {n}: expected 'relative/path label' with a path under the data folder, "
                        f"got {line[:80]!r}"
                    )
                # ASCII digits only: str.isdigit also accepts superscripts and other digits that int() refuses
                if not (label.isascii() and label.isdigit()) or int(label) >= MAX_CLASSES:
                    raise DataError(
                        f"{what}: {path}, line {n}: the label must be a class id in [0, {MAX_CLASSES}), got {label[:20]!r}"
                    )
                paths.append(str(rel))
                labels.append(int(label))
        except UnicodeDecodeError:
            raise DataError(f"{what}: {path} is not UTF-8 text") from None
    if not paths:
        raise DataError(f"{what}: {path} lists no image")
    for rel in paths:  # a missing image is said now, not by a DataLoader worker mid-epoch
        if not (root / rel).is_file():
            raise DataError(f"{what}: {path} lists {rel}, which is not a file under {root}")
    return np.asarray(paths, dtype=object), np.asarray(labels, dtype=np.int64)


def load_image_lists(root, train_list, test_list, val_list=None, size: int = 32, seed: int = 0):
    """(x_train, y_train, x_test, y_test, x_val, y_val, class names) with ``OnDisk`` images; x_val and y_val are None
    without a validation list. Classes are 0 .. max label; each must have a training image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data_dir: no folder {root}")
    p, y = read_list(root, train_list, "train_list")
    pt, yt = read_list(root, test_list, "test_list")
    pv, yv = read_list(root, val_list, "val_list") if val_list is not None else (None, None)
    C = int(y.max()) + 1
    missing = np.flatnonzero(np.bincount(y, minlength=C) == 0)
    if missing.size:
        raise DataError(
            f"train_list: class {int(missing[0])} has no training image (classes are 0 .. {C - 1})"
        )
    for name, labels in (("test_list", yt), ("val_list", yv)):
        if labels is not None and labels.max() >= C:
            raise DataError(
                f"{name}: label {int(labels.max())} has no training class (the training list has 0 .. {C - 1})"
            )
    sample = OnDisk(root, p[np.random.default_rng(seed).permutation(len(p))[:STATS_SAMPLE]], size)
    pixels = sample.load().numpy()
    mean = pixels.mean(axis=(0, 2, 3)).reshape(3, 1, 1).astype(np.float32)
    std = (pixels.std(axis=(0, 2, 3)) + 1e-6).reshape(3, 1, 1).astype(np.float32)
    sets = [OnDisk(root, q, size, mean, std) for q in (p, pt)]
    val = OnDisk(root, pv, size, mean, std) if pv is not None else None
    return sets[0], y, sets[1], yt, val, yv, [str(c) for c in range(C)]
