"""Experiments above the library: the runs behind figures F7/F8 (``regimes.py``), F10 (``adaptation.py``), F11
(``segmentation.py``), and ``npe sweep`` (``sweep.py``). Imports the loop and everything below."""
