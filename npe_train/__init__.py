"""npe_train: train networks with Prior Estimation Modules and compare learned priors with the closed form.

    from npe_train import make_config, train
    run = train(make_config(dataset="mnist1d", imbalance=100))   # results.json's content; a run folder
    print(run["accuracy"]["npe_la"]["overall"], run["pem"]["prior_match"]["vs_closed_form"])

    from npe_train import attach_pem                               # a PEM on your own backbone
    net = attach_pem(backbone, num_classes=10, feature_dim=512)    # net(x) -> (logits, PEM heads, features)

Your own loop: ``PriorEstimator``, ``one_way_logistic_loss``, ``npe_adjust`` and ``pem_param_groups``
(examples/minimal_npe.py). The command line: ``npe --help``. Docs: docs/README.md.

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
    "attach_pem",
    "from_torchvision",
    "rule_spec",
    "apply_rule",
]


def __getattr__(name):  # the loop and its config load on first use: ``from npe_train import train``
    if name == "train":
        from .loop.train import train

        return train
    if name in ("attach_pem", "from_torchvision"):
        from .models import classifiers

        return getattr(classifiers, name)
    if name in ("rule_spec", "apply_rule"):
        from .tasks import rules

        return getattr(rules, name)
    if name in ("make_config", "TrainConfig"):
        from .run import config

        return getattr(config, name)
    raise AttributeError(f"module 'npe_train' has no attribute {name!r}")
