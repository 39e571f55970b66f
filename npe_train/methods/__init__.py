"""Training methods: the PEM's one-way loss (``pem_loss.py``), the objective with CE or the logit-adjusted loss
(``objective.py``), UniMix and the mixing objects (``unimix.py``, ``mixing.py``), the PEM's trace (``trace.py``).
Imports ``models/`` and the bottom layer only."""
