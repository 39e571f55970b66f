"""npe_theory: Proposition 1 of Neural Prior Estimation, checked and put to use.

The optimal output of a Prior Estimation Module under Neural Collapse is a
Lambert-W function of the class count (exponential tail) or the root of
``eta (1 + e^eta) = x`` (one-way logistic loss); both grow like ``ln N_c``.

``__all__`` is the public API: every name in it keeps the contract of docs/reliability.md (bad input raises a
``ValueError`` naming the argument; nothing returns a silent NaN), and tests/test_public_api.py calls each with
hostile arguments. The kernels load with the package; the rest on first use (``npe_theory.pem_report``).
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

#: name -> module of the public names loaded on first use (scipy, the report, the UFM)
_LAZY = {
    "count_profile": "priors",
    "predicted_priors": "priors",
    "saturation": "priors",
    "prior_match": "priors",
    "implied_log_prior": "priors",
    "norm_statistics": "priors",
    "norms_from_statistics": "priors",
    "lambda_s": "dynamics",
    "steps_per_epoch": "dynamics",
    "finite_time_logit": "dynamics",
    "heavy_ball_pem": "dynamics",
    "replay_steps": "dynamics",
    "loss_slope": "dynamics",
    "pem_equilibrium": "equilibrium",
    "PemSettings": "report",
    "pem_report": "report",
    "regime": "report",
    "class_means": "collapse",
    "nc1": "collapse",
    "cosine_matrix": "collapse",
    "classifier_alignment": "collapse",
    "loglog_slope": "collapse",
    "class_spread": "spread",
    "spread_logit": "spread",
    "spread_inverse": "spread",
    "spread_statistics": "spread",
    "along_mean": "spread",
    "simulate_ufm": "ufm",
    "UFMSettings": "ufm",
}

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
    *_LAZY,
]
__version__ = "0.1.0"


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'npe_theory' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
