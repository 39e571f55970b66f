"""Training methods: the registry of methods (``catalog.py``), the PEM's one-way loss (``pem_loss.py``), the objective
with its classifier losses (``objective.py``), UniMix and the mixing objects (``unimix.py``, ``mixing.py``), the PEM's
trace (``trace.py``). Imports ``models/`` and the bottom layer only."""

from . import catalog  # noqa: F401  (registers the built-in methods)
