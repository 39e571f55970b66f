"""npe_theory: Proposition 1 of Neural Prior Estimation, checked and put to use.

The optimal output of a Prior Estimation Module under Neural Collapse is a
Lambert-W function of the class count (exponential tail) or the root of
``eta (1 + e^eta) = x`` (one-way logistic loss); both grow like ``ln N_c``.
"""

from .lambertw import (
    asymptotic_logit,
    asymptotic_logit_of_log,
    debruijn_coefficients,
    lambert_w,
    lambert_w_of_exp,
    stirling1,
)
from .optimum import logistic_bracket, objective, optimal_logit, optimal_logit_of_log, pem_loss

__all__ = [
    "asymptotic_logit",
    "asymptotic_logit_of_log",
    "debruijn_coefficients",
    "lambert_w",
    "lambert_w_of_exp",
    "logistic_bracket",
    "objective",
    "optimal_logit",
    "optimal_logit_of_log",
    "pem_loss",
    "stirling1",
]
__version__ = "0.1.0"
