"""Two-stage methods: a hook the training loop calls at the start of every epoch and after every step
(docs/methods.md, "Weight Balancing").

``WeightBalancing`` is the second stage of Alshammari et al. (CVPR 2022): after the features were
learned with CE and the run's weight decay, the last ``stage_epochs`` epochs retrain the linear
classifier alone, with a class-balanced loss (the objective's deferred re-weighting, which starts
at the same epoch), a strong weight decay, a cosine learning rate and a per-class MaxNorm
constraint kept by projection after each step. The PEM keeps training on its own schedule; its
features no longer move. Imports: torch only.
"""

from __future__ import annotations

import math

import torch

RADIUS_KEY = (
    "max_norm_radius"  # kept in the optimizer's first group, so a resumed run projects onto the same ball
)


def stage_epochs(epochs: int) -> int:
    """Stage 2's default length: 10 epochs (the authors' demo), a fifth of a run shorter than 50, at least 1."""
    return max(1, min(10, epochs // 5))


class WeightBalancing:
    """Stage 2 from epoch ``epochs - stage_epochs`` on: every parameter but the classifier's frozen (the backbone
    in eval mode, so BatchNorm statistics hold too); the classifier trained by SGD at lr_k = lr (1 + cos(pi k / K)) / 2
    in stage epoch k of K, weight decay ``weight_decay``, its momentum restarted; after each step each classifier row
    w_c is projected onto the ball ||w_c|| <= r, r = min_c ||w_c|| + share * (max_c ||w_c|| - min_c ||w_c||) measured
    at the start of the stage (the bias is left free)."""

    def __init__(self, epochs: int, stage_epochs: int, lr: float, weight_decay: float, share: float):
        self.first, self.stage_epochs = epochs - stage_epochs, stage_epochs
        self.lr, self.weight_decay, self.share = lr, weight_decay, share
        self.radius: float | None = None

    def start_epoch(self, epoch: int, model, optimizer: torch.optim.Optimizer) -> None:
        if epoch < self.first:
            return
        group = optimizer.param_groups[0]  # the backbone's and the classifier's (models/pem.pem_param_groups)
        keep = {id(p) for p in model.classifier.parameters()} | (
            {id(p) for p in model.pem.parameters()} if model.pem is not None else set()
        )
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        model.backbone.eval()
        if (
            epoch == self.first
        ):  # the stage begins: a fresh momentum, and the radius from the stage-1 classifier
            for p in model.classifier.parameters():
                optimizer.state.pop(p, None)
            group[RADIUS_KEY] = max_norm_radius(model.classifier.weight, self.share)
        self.radius = float(group[RADIUS_KEY])
        group["lr"] = self.lr * (1 + math.cos(math.pi * (epoch - self.first) / self.stage_epochs)) / 2
        group["weight_decay"] = self.weight_decay

    def after_step(self, model) -> None:
        if self.radius is not None:
            project_rows(model.classifier.weight, self.radius)


def max_norm_radius(weight: torch.Tensor, share: float) -> float:
    """r = min_c ||w_c|| + share * (max_c ||w_c|| - min_c ||w_c||) over the rows w_c of ``weight``."""
    norms = torch.linalg.vector_norm(weight.detach().double(), dim=1)
    return float(norms.min() + share * (norms.max() - norms.min()))


@torch.no_grad()
def project_rows(weight: torch.Tensor, radius: float) -> None:
    """In place: w_c <- w_c * min(1, r / ||w_c||), the Euclidean projection of each row onto the ball of radius r."""
    norms = torch.linalg.vector_norm(weight, dim=1, keepdim=True)
    weight.mul_(torch.clamp(radius / norms.clamp_min(torch.finfo(weight.dtype).tiny), max=1.0))
