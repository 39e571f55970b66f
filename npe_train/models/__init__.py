"""Models: the registry of networks (``catalog.py``), the PEM (``pem.py``), classifiers with a PEM (``classifiers.py``)
and dense networks with a per-pixel PEM (``dense.py``). The bottom layer: imports ``npe_theory`` and torch."""

from . import classifiers, dense  # noqa: F401  (each registers its networks in catalog.MODELS)
