"""npe_train: train networks with Prior Estimation Modules and compare learned priors with the closed form.

Layers, bottom to top (docs/architecture.md): ``data/``, ``models/``, ``device/``; ``methods/``;
``tasks/``; ``run/``; ``loop/``; ``experiments/``; ``cli.py``. A module imports from its own layer
and the layers below, never from above (tests/test_layering.py walks the imports).
"""

from .methods.pem_loss import heads_loss, npe_adjust, one_way_logistic_loss
from .models.pem import PriorEstimator, check_pem_decay, pem_param_groups

__all__ = [
    "PriorEstimator",
    "check_pem_decay",
    "heads_loss",
    "npe_adjust",
    "one_way_logistic_loss",
    "pem_param_groups",
    "train",
    "make_config",
    "TrainConfig",
]


def __getattr__(name):  # the loop and its config load on first use: ``from npe_train import train``
    if name == "train":
        from .loop.train import train

        return train
    if name in ("make_config", "TrainConfig"):
        from .run import config

        return getattr(config, name)
    raise AttributeError(f"module 'npe_train' has no attribute {name!r}")
