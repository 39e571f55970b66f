"""Evaluation of a segmentation run (docs/segmentation.md): every inference rule per pixel, IoU, and the prior report
on training pixels.

Scores come from one confusion matrix per rule, accumulated batch by batch (a large validation set
never sits in memory). Rules, per pixel: argmax ``z``, post-hoc LA ``z - tau ln pi`` with the
training *pixel* frequencies, NPE-LA ``z - tau eta(x)``, and NPE inverse ``z - tau ln pi_hat`` (the
prior Proposition 1 implies from the learned PEM outputs). The prior report treats every valid
training pixel as a sample: its PEM output, its feature vector at the label's resolution, its
label; the class counts are pixel counts. Imports: torch, ``data/``, ``models/``, ``methods/`` and the rest of ``tasks/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.segmentation import IGNORE
from ..methods.trace import PemRecipe, Trace
from ..models.dense import pixel_features
from .base import Held, LossWeights, Now, train_mode_batches
from .prior import forward_mode, prior_report
from .rules import adjusted_logits, available_rules, frequency_groups

#: the prior report reads at most this many training pixels, drawn uniformly (a fixed seeded subset)
MAX_REPORT_PIXELS = 1_000_000


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """conf[t, p] = number of valid pixels of true class t predicted as p (ignored pixels skipped)."""
    keep = target != IGNORE
    return torch.bincount(target[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def segmentation_scores(conf: np.ndarray, counts: np.ndarray) -> dict:
    """IoU_c = TP / (TP + FP + FN), mIoU its mean; class accuracy_c = TP / (TP + FN), mean_class_accuracy its mean;
    pixel_accuracy = sum TP / all valid pixels; and both means per frequency group. A class with no test pixel and no
    prediction has IoU None and is left out of the means."""
    conf = np.asarray(conf, dtype=np.float64)
    tp, true, pred = np.diag(conf), conf.sum(1), conf.sum(0)
    union = true + pred - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    acc = np.where(true > 0, tp / np.maximum(true, 1), np.nan)
    groups = frequency_groups(counts)

    def mean(v, members=None):
        v = v if members is None else v[members]
        return None if np.all(np.isnan(v)) else float(np.nanmean(v))

    return {
        "miou": mean(iou),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "mean_class_accuracy": mean(acc),
        "pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)),
        "class_accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "by_frequency": {
            g: {"miou": mean(iou, m), "mean_class_accuracy": mean(acc, m)} for g, m in groups.items()
        },
    }


def accuracy_entry(scores: dict) -> dict:
    """The classification-style accuracy entry of a rule (mean per-class accuracy overall and per group, per class)."""
    return {
        "overall": scores["mean_class_accuracy"],
        **{g: v["mean_class_accuracy"] for g, v in scores["by_frequency"].items()},
        "per_class": scores["class_accuracy"],
    }


@torch.no_grad()
def _training_pixels(
    model, x_train, y_train, prepare, batch_size: int, seed: int, cap: int = MAX_REPORT_PIXELS
):
    """(eta (P, C), features (P, D), labels (P,)) of a seeded uniform subset of at most ``cap`` valid training pixels,
    read in training mode (batch statistics, shuffled batches of the training size; running statistics restored)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=gen)
    valid = int((y_train != IGNORE).sum())
    keep_p = min(1.0, cap / max(valid, 1))
    etas, feats, labels = [], [], []
    with forward_mode(model, train_mode=True):
        for i, j in train_mode_batches(len(order), batch_size):
            idx = order[i:j]
            y = y_train[idx.to(y_train.device)]
            _, heads, h = model(prepare(x_train[idx.to(x_train.device)]))
            eta = heads.mean(0).movedim(1, -1).reshape(-1, heads.shape[2])
            h = pixel_features(h, y.shape[-2:]).movedim(1, -1).reshape(-1, h.shape[1])
            y = y.reshape(-1)
            keep = (y != IGNORE) & (torch.rand(len(y), generator=gen).to(y.device) < keep_p)
            etas.append(eta[keep].double().cpu())
            feats.append(h[keep].double().cpu())
            labels.append(y[keep].cpu())
    return torch.cat(etas).numpy(), torch.cat(feats).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def evaluate_segmentation(
    model, held: Held, trace: Trace, recipe: PemRecipe, batch_size: int, seed: int, tau: float
) -> dict:
    """``accuracy`` (mean class accuracy per rule, by frequency group), ``segmentation`` (IoU and the rest per rule) on
    the test set in eval mode, and the prior report (``pem``) on training pixels (pixel counts as the class counts)."""
    data, x_train, x_test, prepare = held.data, held.x_train, held.x_test, held.prepare
    C = data.num_classes
    device = x_test.device
    y_train = torch.as_tensor(data.y_train, device=x_train.device)
    eta_tr, feats_tr, labels_tr = _training_pixels(model, x_train, y_train, prepare, batch_size, seed)
    pem, implied = prior_report(eta_tr, feats_tr, labels_tr, data.counts, recipe, trace, model.pem.is_linear)
    # the rules of classification, with the class axis last: priors broadcast over pixels
    log_prior = torch.as_tensor(np.log(data.counts / data.counts.sum()), dtype=torch.float32, device=device)
    implied_t = None if implied is None else torch.as_tensor(implied, dtype=torch.float32, device=device)
    priors = {"npe_inverse": implied_t}
    rules = available_rules(priors)
    conf = {r: torch.zeros(C, C, dtype=torch.int64, device=device) for r in rules}
    y_test = torch.as_tensor(data.y_test, device=device)
    model.eval()
    for i in range(0, len(x_test), max(batch_size, 16)):
        logits, heads, _ = model(prepare(x_test[i : i + max(batch_size, 16)]))
        z, eta = logits.movedim(1, -1), heads.mean(0).movedim(1, -1)
        y = y_test[i : i + len(logits)]
        for r in rules:
            conf[r] += confusion(adjusted_logits(r, z, eta, log_prior, tau, priors).argmax(-1), y, C)
    scores = {r: segmentation_scores(conf[r].cpu().numpy(), data.counts) for r in rules}
    return {"accuracy": {r: accuracy_entry(s) for r, s in scores.items()}, "segmentation": scores, "pem": pem}


@dataclass
class Segmentation:
    """A label per pixel (``IGNORE``: no loss, not scored); every valid pixel is a loss term of its class
    (``tasks/base.py`` says what a task supplies). No mixing method applies."""

    recipe: PemRecipe
    batch_size: int
    seed: int
    tau: float

    def loss_weights(self, labels: np.ndarray, num_classes: int, partner=None, weight=None) -> LossWeights:
        """Every valid pixel is a loss term of weight 1: one entry per (image, class present) with its pixel count."""
        if partner is not None:
            raise ValueError("segmentation: a mixing method's partners are not defined per pixel")
        n = len(labels)
        flat = labels.reshape(n, -1)
        image = np.broadcast_to(np.arange(n)[:, None], flat.shape)
        valid = flat != IGNORE
        keys, pixels = np.unique(image[valid] * num_classes + flat[valid], return_counts=True)
        pixels = pixels.astype(np.float64)
        return LossWeights(
            keys // num_classes,
            keys % num_classes,
            pixels,
            np.bincount(keys // num_classes, pixels, minlength=n),
        )

    def loss_terms(self, pairs):
        return pairs

    def feature_terms(self, h: torch.Tensor, terms):
        """The valid pixels, each with its features at the label's resolution and weight 1."""
        ((y, _),) = terms
        h = pixel_features(h, y.shape[-2:]).movedim(1, -1).reshape(-1, h.shape[1])
        y = y.reshape(-1)
        h, y = h[y != IGNORE], y[y != IGNORE]
        return h, [(y, torch.ones(len(y), device=h.device))]

    def evaluate(self, model, held: Held, trace: Trace, now: Now) -> dict:
        return evaluate_segmentation(model, held, trace, self.recipe, self.batch_size, self.seed, self.tau)

    def figures(self, out, model, held: Held) -> list:
        from .pem_map import plot_pem_map

        return [plot_pem_map(out / "pem_map.png", model, held.data, held.prepare, held.x_test.device)]

    def advise(self, model, held: Held, report: dict) -> dict:
        return {"validation": None, "why": "segmentation data carry no validation set"}
