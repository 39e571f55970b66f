"""npe: the one command of the toolkit. ``npe.cli`` dispatches to ``npe_theory`` and ``npe_train``."""
