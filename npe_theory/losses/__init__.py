"""One-way PEM losses, each one object in one file, and their registry (docs/theory.md, section 8).

``get_loss(name)`` returns the loss every module asks for its value, slope, curvature, optimum,
inverse, Gaussian expectations and torch form; ``loss_names()`` lists them. Built in: ``exp`` (the
exponential tail of Proposition 1), ``logistic`` (the NPE paper's), ``squared_hinge`` (finite support).
A new loss is one file here, subclassing ``OneWayLoss`` under ``@register_loss(name)``, and one import below;
from outside the package, importing a module that registers it is enough.
"""

from . import exponential, logistic, squared_hinge  # noqa: F401  (each registers its loss)
from .base import LOSSES, OneWayLoss, check_loss, get_loss, loss_names, register_loss

__all__ = ["LOSSES", "OneWayLoss", "check_loss", "get_loss", "loss_names", "register_loss"]
