"""Training many runs for a figure: each in a temporary folder, keeping one summary of it (F7/F8, F10, F11).
Imports: the training loop and ``run/config.py``; nothing below imports this layer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..run.config import make_config


def train_summaries(runs, desc: str, progress: bool = True, config_file: str | None = None) -> list[dict]:
    """For each (settings, summarize) of ``runs``: train ``make_config(config_file, **settings)`` in a temporary
    folder and keep only ``summarize(results)`` (the runs behind the figures F7/F8, F10 and F11)."""
    from tqdm.auto import tqdm

    from ..loop.train import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (settings, summarize) in enumerate(tqdm(runs, desc=desc, disable=not progress)):
            cfg = make_config(config_file, **{**settings, "out": str(Path(tmp) / str(i))})
            rows.append(summarize(train(cfg, progress=False)))
    return rows
