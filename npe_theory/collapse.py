"""Neural Collapse diagnostics of a feature matrix (NumPy, float64)."""

from __future__ import annotations

import numpy as np

from .blocks import class_slices
from .errors import InputError
from .validate import as_float_array, features_and_labels, matrix


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """mu_c = mean of the features of class c, shape (C, D)."""
    features, labels, num_classes = features_and_labels(features, labels, num_classes)
    return class_means_of(features, labels, num_classes)


def class_means_of(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``class_means`` of checked features (float64 or float32) and labels with every class present, summed in float64.

    Class by class over one sort of the labels: each class's rows gathered and summed (reduceat over the sorted matrix
    converts float32 to float64 value by value, 70x slower at 10^5 x 2,048; np.add.at is slower still)."""
    order, edges = class_slices(labels, num_classes)
    out = np.empty((num_classes, features.shape[1]))
    for c in range(num_classes):
        rows = features[order[edges[c] : edges[c + 1]]]
        out[c] = rows.sum(0, dtype=np.float64) / len(rows)
    return out


def nc1(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C.

    Sigma_W = (1/n) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; Sigma_B = (1/C) sum_c (mu_c - mu_G)(...)^T
    with mu_G the mean of the class means, so every class weighs alike under imbalance.
    """
    features, labels, num_classes = features_and_labels(features, labels, num_classes)
    return nc1_of(features, labels, class_means(features, labels, num_classes))


def nc1_of(
    features: np.ndarray, labels: np.ndarray, means: np.ndarray, rows_per_class: int | None = None
) -> float:
    """``nc1`` from checked features (float64, or float32), int labels and their class means (the report has them).

    Sigma_B has rank r <= C - 1: with the thin SVD of the centred means ``M = U S V'``, Sigma_B^+ = C V S^-2 V' and
    NC1 = tr(Sigma_W Sigma_B^+) / C = ||(H - M_y) V S^-1||_F^2 / n, accumulated in float64. One pass over the features
    projected on the r between-class directions costs n D r instead of the n D^2 of forming Sigma_W (r = 99 against
    D = 2,048 at 100 classes), in float32 when the features are (NC1 to about 1e-6 relative: a diagnostic read to three
    digits); the directions are those ``pinv`` keeps (singular values above 1e-10 of the largest, squared).

    ``rows_per_class``: estimate instead from at most that many rows of each class, evenly spaced in their order (the
    epoch's shuffled order: no random draw), each class's mean squared projection weighted by its n_c. Sigma_W is then
    estimated without bias, and with 64 rows a class the relative error of NC1 is about 1/sqrt(64 C) (0.4% at 1,000
    classes); the report uses it where the exact projection would cost more than ``NC1_EXACT_BUDGET``."""
    centred = means - means.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s**2 > 1e-10 * (s[0] ** 2 if s.size else 0.0)
    if (
        not keep.any()
    ):  # no between-class spread: pinv(Sigma_B) = 0, so NC1 is 0 by the definition's convention
        return 0.0
    directions = vt[keep].T / s[keep]  # (D, r): V S^-1
    if (
        features.dtype == np.float32
    ):  # float32 features: the projection in float32 too (NC1 to ~1e-6 relative)
        directions = directions.astype(np.float32)
    centres = means @ directions
    rows, weights = np.arange(len(features)), None
    if rows_per_class is not None:
        rows, weights = _evenly_spaced(labels, len(means), rows_per_class)
    total = 0.0
    for lo in range(0, len(rows), _CHUNK):  # by chunk of rows: never an (n, r) float64 array of the whole set
        part = rows[lo : lo + _CHUNK]
        projected = features[part] @ directions - centres[labels[part]]
        squares = np.einsum("ij,ij->i", projected, projected)
        total += float(squares.sum() if weights is None else squares @ weights[lo : lo + _CHUNK])
    return total / len(features)


NC1_EXACT_BUDGET = (
    2e9  # operations of the exact projection (n D r) above which the report estimates NC1 from a sample
)


def _evenly_spaced(labels: np.ndarray, C: int, k: int):
    """(row indices, weights): up to k rows of each class, evenly spaced in their order, each weighing n_c / k_c."""
    order, edges = class_slices(labels, C)
    picked, weights = [], []
    for c in range(C):
        n = edges[c + 1] - edges[c]
        take = np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))
        picked.append(order[edges[c] + take])
        weights.append(np.full(len(take), n / len(take)))
    return np.concatenate(picked), np.concatenate(weights)


_CHUNK = 8192  # rows per chunk: 8,192 x 1,000 directions x 8 bytes = 65 MB at 1,000 classes


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """cos(mu_c, mu_c') for every pair of rows."""
    v = matrix("vectors", vectors)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    return unit @ unit.T


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


def loglog_slope(values, counts) -> float:
    """Least-squares slope of ln(values) on ln(counts): the exponent p of values ~ counts^p."""
    x, y = _logs("counts", counts), _logs("values", values)
    if x.shape != y.shape or x.size < 2:
        raise InputError(
            f"values, counts: expected two 1-D arrays of one size (at least 2), got {y.shape} and {x.shape}"
        )
    if np.ptp(x) == 0:
        raise InputError("counts: all equal, so no slope on them is defined")
    return float(np.polyfit(x, y, 1)[0])


def _logs(name: str, value) -> np.ndarray:
    arr = as_float_array(name, value, positive=True)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return np.log(arr)


def classifier_alignment(weights, means, counts) -> dict:
    """How the classifier rows w_c sit against the class means mu_c (docs/theory.md, section 6).

    Fits the "scaled, then centered" structure w_c ~ a_c mu_c - (1/C) sum_j a_j mu_j by least squares
    over the scales a (linear in a), and reports per class the cosine of w_c with that fit, the scales
    and their exponent on N_c; beside it the balanced-data reading (NC3) w_c ~ s_c (mu_c - mu_G), mu_G
    the count-weighted global mean, by its cosines and least-squares scales s_c.
    """
    M, W = matrix("means", means), matrix("weights", weights)
    C = len(M)
    if W.shape != M.shape:
        raise InputError(f"weights, means: one classifier row per class mean, got {W.shape} and {M.shape}")
    counts = as_float_array("counts", counts, positive=True)
    if counts.shape != (C,) or C < 2:
        raise InputError(
            f"counts: expected one count per class mean ({C}, at least 2), got shape {counts.shape}"
        )
    # The fit a -> P diag(a) M, P = I - 11^T / C, is linear in a; its normal equations are C x C:
    # (P o M M^T) a = r, r_k = (w_k - mean_j w_j) . mu_k (o: elementwise), since column k of the
    # (C d) x C design holds P e_k mu_k^T and those columns' dot products are P_kl (mu_k . mu_l).
    # Solved in that form, the design (1 GB at C = 1000, d = 128) is never built.
    gram = (np.eye(C) - 1.0 / C) * (M @ M.T)
    rhs = np.sum((W - W.mean(0)) * M, axis=1)
    scale = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    fit = scale[:, None] * M - (scale @ M) / C
    centred = M - counts @ M / counts.sum()
    nc3_scale = np.sum(W * centred, axis=1) / np.maximum(np.sum(centred * centred, axis=1), 1e-300)
    out = {
        "scale": scale.tolist(),
        "cosine": _cosines(W, fit).tolist(),
        "nc3_scale": nc3_scale.tolist(),
        "nc3_cosine": _cosines(W, centred).tolist(),
        "scale_exponent": None,
    }
    if np.all(scale > 0) and np.ptp(counts) > 0:
        out["scale_exponent"] = loglog_slope(scale, counts)
    return out
