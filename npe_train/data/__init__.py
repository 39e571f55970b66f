"""Data: the registry of data sets (``catalog.py``), long-tailed classification sets (``longtail.py``), the files users
give (``files.py``), segmentation sets (``segmentation.py``), shifting class streams' counts (``stream.py``) and training
batches (``pipeline.py``). The bottom layer: imports ``npe_theory`` and third-party packages only."""

from . import digit_pairs, longtail, segmentation  # noqa: F401  (each registers its data sets in catalog.DATASETS)
