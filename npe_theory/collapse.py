"""Neural Collapse diagnostics of a feature matrix (NumPy, float64)."""
from __future__ import annotations

import numpy as np


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """mu_c = mean of the features of class c, shape (C, D)."""
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, features)
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts == 0):
        raise ValueError(f"labels: class {int(np.argmin(counts))} has no sample")
    return sums / counts[:, None]


def nc1(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """NC1 = tr(Sigma_W Sigma_B^+) / C.

    Sigma_W = (1/n) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; Sigma_B = (1/C) sum_c (mu_c - mu_G)(...)^T
    with mu_G the mean of the class means, so every class weighs alike under imbalance.
    """
    features = np.asarray(features, dtype=np.float64)
    mu = class_means(features, labels, num_classes)
    within = features - mu[labels]
    sigma_w = within.T @ within / len(features)
    centred = mu - mu.mean(axis=0)
    sigma_b = centred.T @ centred / num_classes
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / num_classes)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """cos(mu_c, mu_c') for every pair of rows."""
    v = np.asarray(vectors, dtype=np.float64)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    return unit @ unit.T
