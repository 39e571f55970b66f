"""Neural Collapse diagnostics of a feature matrix (NumPy, float64)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .validate import as_float_array, features_and_labels, matrix


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """mu_c = mean of the features of class c, shape (C, D)."""
    features, labels, num_classes = features_and_labels(features, labels, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    # sums over each class's rows, sorted by class (np.add.at, one scattered add per element, is ~10x slower)
    sums = np.add.reduceat(features[np.argsort(labels, kind="stable")], np.cumsum(counts) - counts, axis=0)
    return sums / counts[:, None]


def nc1(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C.

    Sigma_W = (1/n) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; Sigma_B = (1/C) sum_c (mu_c - mu_G)(...)^T
    with mu_G the mean of the class means, so every class weighs alike under imbalance.
    """
    features, labels, num_classes = features_and_labels(features, labels, num_classes)
    mu = class_means(features, labels, num_classes)
    within = features - mu[labels]
    sigma_w = within.T @ within / len(features)
    centred = mu - mu.mean(axis=0)
    sigma_b = centred.T @ centred / num_classes
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / num_classes)


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
