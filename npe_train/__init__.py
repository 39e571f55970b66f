"""npe_train: train networks with Prior Estimation Modules and compare learned priors with the closed form."""
from .pem import PriorEstimator, npe_adjust, one_way_logistic_loss

__all__ = ["PriorEstimator", "npe_adjust", "one_way_logistic_loss"]
