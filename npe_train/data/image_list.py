"""Image lists: ``relative/path label`` lines (ImageNet-LT, Places-LT, iNaturalist splits), read from disk as needed.

``load_image_lists(root, train_list, test_list, val_list, size)`` returns ``OnDisk`` image sets: an
image is read (header-bounded, resized to size x size, normalized by per-channel statistics of a
sample of the training list) only when a batch asks for it, so a set larger than memory trains
through the DataLoader pipeline with worker processes. Indexing an ``OnDisk`` with an int gives one
image; with a slice or an index array, another ``OnDisk`` (nothing is read); ``load()`` reads its
images into one float32 tensor (one batch at a time). Imports: NumPy, torch, ``files.py``.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import torch

from npe_theory._validate import MAX_CLASSES

from .files import DataError, read_image

MAX_LINES = 50_000_000  # a list of more entries than this is not a data set split
MAX_LIST_BYTES = 4 << 30
STATS_SAMPLE = 512  # images whose pixels set the per-channel mean and std


class OnDisk:
    """Images named by paths under ``root``, read on demand as float32 (3, size, size), normalized by ``mean``, ``std``."""

    def __init__(self, root: Path, paths: np.ndarray, size: int, mean=None, std=None):
        self.root, self.paths, self.size = Path(root), paths, int(size)
        self.mean = np.zeros((3, 1, 1), np.float32) if mean is None else mean
        self.std = np.ones((3, 1, 1), np.float32) if std is None else std

    dtype = np.dtype(np.float32)
    device = torch.device("cpu")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            img = read_image(self.root / self.paths[key], "RGB", self.size).transpose(2, 0, 1).astype(np.float32) / 255.0
            return (img - self.mean) / self.std
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return OnDisk(self.root, self.paths[key], self.size, self.mean, self.std)

    def load(self) -> torch.Tensor:
        """Every image of this set as one (n, 3, size, size) float32 tensor."""
        out = np.empty(self.shape, dtype=np.float32)
        for i in range(len(self)):
            out[i] = self[i]
        return torch.from_numpy(out)


def on_device(x, device) -> "torch.Tensor | OnDisk":
    """A NumPy array as a tensor on ``device``; an ``OnDisk`` set stays on disk (its batches are read as needed)."""
    return x if isinstance(x, OnDisk) else torch.as_tensor(x, device=device)


def batch(x, device) -> torch.Tensor:
    """A batch of inputs on ``device``: a tensor as it is, an ``OnDisk`` slice read from disk."""
    return x.load().to(device) if isinstance(x, OnDisk) else x


def read_list(root: Path, list_file, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(paths, labels) of a list file: one ``relative/path label`` per line (blank lines and # comments skipped);
    paths must stay under ``root``. DataError naming the file and line."""
    path = Path(list_file).expanduser()
    if not path.is_file():
        raise DataError(f"{what}: no list file {path}")
    if path.stat().st_size > MAX_LIST_BYTES:
        raise DataError(f"{what}: {path} is larger than {MAX_LIST_BYTES >> 30} GiB; not a split list")
    paths, labels = [], []
    with path.open(encoding="utf-8", errors="strict") as fh:
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
                    raise DataError(f"{what}: {path}, line {n}: expected 'relative/path label' with a path under the data folder, "
                                    f"got {line[:80]!r}")
                if not label.isdigit() or int(label) >= MAX_CLASSES:
                    raise DataError(f"{what}: {path}, line {n}: the label must be a class id in [0, {MAX_CLASSES}), got {label[:20]!r}")
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
        raise DataError(f"train_list: class {int(missing[0])} has no training image (classes are 0 .. {C - 1})")
    for name, labels in (("test_list", yt), ("val_list", yv)):
        if labels is not None and labels.max() >= C:
            raise DataError(f"{name}: label {int(labels.max())} has no training class (the training list has 0 .. {C - 1})")
    sample = OnDisk(root, p[np.random.default_rng(seed).permutation(len(p))[:STATS_SAMPLE]], size)
    pixels = sample.load().numpy()
    mean = pixels.mean(axis=(0, 2, 3)).reshape(3, 1, 1).astype(np.float32)
    std = (pixels.std(axis=(0, 2, 3)) + 1e-6).reshape(3, 1, 1).astype(np.float32)
    sets = [OnDisk(root, q, size, mean, std) for q in (p, pt)]
    val = OnDisk(root, pv, size, mean, std) if pv is not None else None
    return sets[0], y, sets[1], yt, val, yv, [str(c) for c in range(C)]
