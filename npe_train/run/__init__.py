"""A run's settings and files: the config (``config.py``), run folder (``runfolder.py``), checkpoint
(``checkpoint.py``), metrics.jsonl (``metrics.py``), results.json (``results.py``), figures (``plots.py``).
Imports ``tasks/`` and the layers below."""
