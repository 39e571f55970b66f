"""The runs behind figure F11: the segmentation main job per method and seed (docs/segmentation.md).
Imports: ``runs.py``.
"""

from __future__ import annotations

from .runs import train_summaries

SEG_CONFIG = "shapes_seg"  # the shipped recipe


def summarize_segmentation(results: dict) -> dict:
    """What F11 plots from one segmentation run: per-class IoU of every rule, the pixel counts, mIoU."""
    cfg = results["config"]
    return {
        "method": cfg["method"],
        "seed": cfg["seed"],
        "alpha": cfg["alpha"],
        "counts": results["counts"],
        "class_names": results.get("class_names"),
        "lambda_s": results["pem"]["lambda_s"],
        "iou": {rule: s["iou"] for rule, s in results["segmentation"].items()},
        "miou": {rule: s["miou"] for rule, s in results["segmentation"].items()},
        "miou_few": {rule: s["by_frequency"]["few"]["miou"] for rule, s in results["segmentation"].items()},
    }


def segmentation_runs(
    methods=("ce", "npe"), seeds=(0, 1, 2), progress: bool = True, **overrides
) -> list[dict]:
    """The segmentation main job (the shipped recipe ``shapes_seg``) per method and seed; about 90 s a run on 2 CPU cores."""
    return train_summaries(
        [({**overrides, "method": m, "seed": s}, summarize_segmentation) for m in methods for s in seeds],
        "segmentation runs",
        progress,
        config_file=SEG_CONFIG,
    )
