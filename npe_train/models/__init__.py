"""Networks: the PEM (``pem.py``), classifiers with a PEM (``classifiers.py``), dense networks with a per-pixel PEM
(``dense.py``). The bottom layer: imports ``npe_theory``, torch and torchvision only."""
