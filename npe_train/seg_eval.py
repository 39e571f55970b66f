"""Evaluation of a segmentation run (docs/segmentation.md): every inference rule per pixel, IoU, and the prior report
on training pixels.

Scores come from one confusion matrix per rule, accumulated batch by batch (a large validation set
never sits in memory). Rules, per pixel: argmax ``z``, post-hoc LA ``z - tau ln pi`` with the
training *pixel* frequencies, NPE-LA ``z - tau eta(x)``, and NPE inverse ``z - tau ln pi_hat`` (the
prior Proposition 1 implies from the learned PEM outputs). The prior report treats every valid
training pixel as a sample: its PEM output, its feature vector at the label's resolution, its
label; the class counts are pixel counts.
"""
from __future__ import annotations

import numpy as np
import torch

from .evaluate import adjusted_logits, available_rules, forward_mode, prior_report
from .seg_data import IGNORE
from .seg_models import pixel_features

#: the prior report reads at most this many training pixels, drawn uniformly (a fixed seeded subset)
MAX_REPORT_PIXELS = 1_000_000
FREQUENCY_GROUPS = ("many", "medium", "few")  # thirds of the classes by training pixel count, most frequent first


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """conf[t, p] = number of valid pixels of true class t predicted as p (ignored pixels skipped)."""
    keep = target != IGNORE
    return torch.bincount(target[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def frequency_groups(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class ids by training pixel count: the most frequent third ("many"), the middle ("medium"), the rarest ("few")."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return dict(zip(FREQUENCY_GROUPS, np.array_split(order, 3)))


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

    return {"miou": mean(iou), "iou": [None if np.isnan(v) else float(v) for v in iou], "mean_class_accuracy": mean(acc),
            "pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)), "class_accuracy": [None if np.isnan(v) else float(v) for v in acc],
            "by_frequency": {g: {"miou": mean(iou, m), "mean_class_accuracy": mean(acc, m)} for g, m in groups.items()}}


def accuracy_entry(scores: dict) -> dict:
    """The classification-style accuracy entry of a rule (mean per-class accuracy overall and per group, per class)."""
    return {"overall": scores["mean_class_accuracy"], **{g: v["mean_class_accuracy"] for g, v in scores["by_frequency"].items()},
            "per_class": scores["class_accuracy"]}


@torch.no_grad()
def _training_pixels(model, x_train, y_train, prepare, batch_size: int, seed: int, cap: int = MAX_REPORT_PIXELS):
    """(eta (P, C), features (P, D), labels (P,)) of a seeded uniform subset of at most ``cap`` valid training pixels,
    read in training mode (batch statistics, shuffled batches of the training size; running statistics restored)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=gen)
    valid = int((y_train != IGNORE).sum())
    keep_p = min(1.0, cap / max(valid, 1))
    etas, feats, labels = [], [], []
    with forward_mode(model, train_mode=True):
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
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
def evaluate_segmentation(model, data, cfg, x_train, x_test, prepare, trace: dict) -> dict:
    """``accuracy`` (mean class accuracy per rule, by frequency group), ``segmentation`` (IoU and the rest per rule) on
    the test set in eval mode, and the prior report (``pem``) on training pixels."""
    C = data.num_classes
    device = x_test.device
    y_train = torch.as_tensor(data.y_train, device=x_train.device)
    eta_tr, feats_tr, labels_tr = _training_pixels(model, x_train, y_train, prepare, cfg.batch_size, cfg.seed)
    pem, implied = prior_report(eta_tr, feats_tr, labels_tr, data.counts, cfg, trace, model.pem.is_linear)
    # the rules of classification, with the class axis last: priors broadcast over pixels
    log_prior = torch.as_tensor(np.log(data.counts / data.counts.sum()), dtype=torch.float32, device=device)
    implied_t = None if implied is None else torch.as_tensor(implied, dtype=torch.float32, device=device)
    rules = available_rules(implied)
    conf = {r: torch.zeros(C, C, dtype=torch.int64, device=device) for r in rules}
    y_test = torch.as_tensor(data.y_test, device=device)
    model.eval()
    for i in range(0, len(x_test), max(cfg.batch_size, 16)):
        logits, heads, _ = model(prepare(x_test[i : i + max(cfg.batch_size, 16)]))
        z, eta = logits.movedim(1, -1), heads.mean(0).movedim(1, -1)
        y = y_test[i : i + len(logits)]
        for r in rules:
            conf[r] += confusion(adjusted_logits(r, z, eta, log_prior, cfg.tau, implied_t).argmax(-1), y, C)
    scores = {r: segmentation_scores(conf[r].cpu().numpy(), data.counts) for r in rules}
    return {"accuracy": {r: accuracy_entry(s) for r, s in scores.items()}, "segmentation": scores, "pem": pem}


# ---- the runs behind figure F11 ----

SEG_CONFIG = "configs/shapes_seg.toml"


def summarize_segmentation(results: dict) -> dict:
    """What F11 plots from one segmentation run: per-class IoU of every rule, the pixel counts, mIoU."""
    cfg = results["config"]
    return {"method": cfg["method"], "seed": cfg["seed"], "alpha": cfg["alpha"], "counts": results["counts"],
            "class_names": results.get("class_names"), "lambda_s": results["pem"]["lambda_s"],
            "iou": {rule: s["iou"] for rule, s in results["segmentation"].items()},
            "miou": {rule: s["miou"] for rule, s in results["segmentation"].items()},
            "miou_few": {rule: s["by_frequency"]["few"]["miou"] for rule, s in results["segmentation"].items()}}


def segmentation_runs(methods=("ce", "npe"), seeds=(0, 1, 2), progress: bool = True, **overrides) -> list[dict]:
    """The segmentation main job (``configs/shapes_seg.toml`` settings) per method and seed; about 90 s a run on 2 CPU cores."""
    from pathlib import Path

    from .regimes import train_summaries

    job = Path(__file__).resolve().parents[1] / SEG_CONFIG
    return train_summaries([({**overrides, "method": m, "seed": s}, summarize_segmentation) for m in methods for s in seeds],
                           "segmentation runs", progress, config_file=str(job))
