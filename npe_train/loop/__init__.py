"""The training loop (``train.py``, ``step.py``) and the builders that turn a config into its parts (``build.py``).
Imports every library layer below; only ``experiments/`` and the command line import it."""
