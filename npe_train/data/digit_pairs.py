"""``digits100``: a 100-class long-tailed set of the shape of CIFAR-100-LT that needs no download (docs/data.md).

Class ``10 a + b`` is the ordered pair of digits (a, b): an image of digit a beside an image of digit b, from
scikit-learn's bundled 8x8 digits, so an input is a (1, 8, 16) image. Every digit instance belongs to one split:
70% of each digit's images make the training and validation pairs, the rest the test pairs, so no test pair shares
an instance with training. The exp profile at head 500 and imbalance 100 gives CIFAR-100-LT's counts (10,847
training images). The pairs are drawn once, with a fixed seed (``PAIRS_SEED``); the run's seed draws the
long-tailed subset from them as for every other set. Imports: NumPy, scikit-learn and ``longtail.py``.
"""

from __future__ import annotations

import numpy as np

from .catalog import DataRequest
from .longtail import Source, _digits, classification_source

PAIRS_SEED = 100  # the pairs are made once, the same for every run
TRAIN_PAIRS, VAL_PAIRS, TEST_PAIRS = (
    500,
    20,
    30,
)  # per class: the head's count, a validation and a balanced test share
TRAIN_SHARE = 0.7  # of each digit's instances: for training and validation pairs


def digit_pairs(
    x: np.ndarray, y: np.ndarray, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` distinct pairs (left instance of digit a, right of digit b) for each of the 100 classes 10 a + b:
    images (n, 1, 8, 16) and labels."""
    by_digit = [np.flatnonzero(y == d) for d in range(10)]
    images, labels = [], []
    for a in range(10):
        for b in range(10):
            n_a, n_b = len(by_digit[a]), len(by_digit[b])
            flat = rng.choice(n_a * n_b, size=per_class, replace=False)  # distinct (left, right) combinations
            left, right = by_digit[a][flat // n_b], by_digit[b][flat % n_b]
            images.append(np.concatenate([x[left].reshape(-1, 8, 8), x[right].reshape(-1, 8, 8)], axis=2))
            labels.append(np.full(per_class, 10 * a + b, dtype=np.int64))
    return np.concatenate(images)[:, None].astype(np.float32), np.concatenate(labels)


def _pairs():
    x, y = _digits()
    rng = np.random.default_rng(PAIRS_SEED)
    train_idx, test_idx = [], []
    for d in range(10):
        own = rng.permutation(np.flatnonzero(y == d))
        k = int(TRAIN_SHARE * len(own))
        train_idx.append(own[:k])
        test_idx.append(own[k:])
    tr, te = np.concatenate(train_idx), np.concatenate(test_idx)
    xp, yp = digit_pairs(x[tr], y[tr], TRAIN_PAIRS + VAL_PAIRS, rng)
    xt, yt = digit_pairs(x[te], y[te], TEST_PAIRS, rng)
    val = np.zeros(len(yp), bool)
    for c in range(100):  # the last VAL_PAIRS pairs of each class: validation
        val[np.flatnonzero(yp == c)[-VAL_PAIRS:]] = True
    return xp[~val], yp[~val], xt, yt, xp[val], yp[val]


@classification_source(
    "digits100",
    model="mlp",
    help="100 classes: ordered pairs of sklearn digits side by side, CIFAR-100-LT's counts (an MLP)",
)
def _digits100_source(request: DataRequest) -> Source:
    x, y, xt, yt, xv, yv = _pairs()
    return Source(x, y, xt, yt, request.n_max or TRAIN_PAIRS, xv, yv, "held-out pairs of training digits")
