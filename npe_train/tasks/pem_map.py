"""The segmentation PEM map: one test image, its labels, two rules' predictions, and the PEM's estimated log-prior per pixel.
Imports: torch, ``npe_theory.figures`` and ``data/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from npe_theory.figures import save_figure, subplots

from ..data.segmentation import IGNORE


def plot_pem_map(path, model, data, prepare, device, index: int | None = None) -> Path:
    """One test image beside its labels, the argmax and NPE-LA predictions, and the PEM's map: at every pixel the
    centered output for the pixel's own class (its estimated log-prior; high for frequent classes)."""
    if index is None:  # the first test image that holds the rarest class
        rare = int(np.argmin(data.counts))
        index = next((i for i in range(len(data.y_test)) if (data.y_test[i] == rare).any()), 0)
    model.eval()
    with torch.no_grad():
        logits, heads, _ = model(prepare(torch.as_tensor(data.x_test[index : index + 1], device=device)))
        eta = heads.mean(0)[0]
        eta = eta - eta.mean()  # centered over (C, H, W), as the official inference does
        z = logits[0]
    labels = data.y_test[index]
    own = np.take_along_axis(eta.cpu().numpy(), np.where(labels == IGNORE, 0, labels)[None], 0)[0]
    img = np.moveaxis(data.x_test[index], 0, -1)
    panels = [
        ("image", img, {}),
        (
            "labels (white: ignored)",
            np.where(labels == IGNORE, np.nan, labels),
            dict(cmap="tab10", vmin=0, vmax=9),
        ),
        ("argmax", z.argmax(0).cpu().numpy(), dict(cmap="tab10", vmin=0, vmax=9)),
        ("NPE-LA", (z - eta).argmax(0).cpu().numpy(), dict(cmap="tab10", vmin=0, vmax=9)),
        ("PEM eta of each pixel's class", np.where(labels == IGNORE, np.nan, own), dict(cmap="viridis")),
    ]
    fig, axes = subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, arr, kw) in zip(axes, panels):
        im = ax.imshow(arr, **kw)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        if title.startswith("PEM"):
            fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path, dpi=110)
