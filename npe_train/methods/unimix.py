"""UniMix (Prior-LT): mix each sample with a tail-favouring partner from its own batch (docs/methods.md).

For sample i of a batch a partner j is drawn from the batch with probability proportional to
``n_{y_j}^tau`` (tau < 0 favours rare classes), and the pair is mixed with the factor

    xi = n_j / (n_i + n_j) + B,  B ~ Beta(a, a),  minus 1 when above 1  (xi in [0, 1)):

input ``xi x_i + (1 - xi) x_j``, loss ``xi l(y_i) + (1 - xi) l(y_j)`` for every loss of the run, the
PEM's one-way loss included. ``a = 1, tau = 0`` is plain mixup: a uniform partner, and a uniform
factor shifted and wrapped around [0, 1) stays uniform. Prior-LT's defaults are ``a = 0.8, tau = -0.1``.
Imports: NumPy, torch and ``npe_theory`` only.
"""

from __future__ import annotations

import numpy as np
import torch

from npe_theory.errors import InputError
from npe_theory.validate import as_float_scalar


def _counts_of(labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype not in (torch.int64, torch.int32)
        or labels.dim() != 1
    ):
        raise InputError(
            f"labels: expected a 1-D integer tensor of class ids, got {getattr(labels, 'dtype', type(labels))}"
        )
    if not isinstance(counts, torch.Tensor) or counts.dim() != 1 or not bool(torch.all(counts > 0)):
        raise InputError("counts: expected a 1-D tensor of positive class counts")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(counts)):
        raise InputError(f"labels: class ids must lie in [0, {len(counts)})")
    return counts.to(torch.float64)[labels]


def partner_probabilities(labels: torch.Tensor, counts: torch.Tensor, tau: float) -> torch.Tensor:
    """P(position j is drawn as a partner) = n_{y_j}^tau / sum_k n_{y_k}^tau over the batch, float64 (B,)."""
    tau = as_float_scalar("tau", tau)
    n = _counts_of(labels, counts)
    if n.numel() == 0:
        raise InputError("labels: an empty batch has no partner to draw")
    # in log space, relative to the count that weighs most: n^tau of a count of 1e7 at tau = -5 underflows, its share does
    # not, and tau (ln n - ln n_ref) is at most 0 whatever the size of tau
    log_n = torch.log(n)
    ref = log_n.max() if tau >= 0 else log_n.min()
    log_w = torch.where(log_n == ref, torch.zeros_like(log_n), tau * (log_n - ref))
    return torch.softmax(log_w, dim=0)


def draw_partners(
    labels: torch.Tensor, counts: torch.Tensor, tau: float, generator: torch.Generator
) -> torch.Tensor:
    """One partner position per sample, drawn independently (with replacement) by ``partner_probabilities``."""
    p = partner_probabilities(labels, counts, tau)
    return torch.multinomial(p, len(p), replacement=True, generator=generator)


def mixing_factor(n_i: torch.Tensor, n_j: torch.Tensor, a: float, generator: torch.Generator) -> torch.Tensor:
    """xi = (n_j / (n_i + n_j) + B) mod 1 with B ~ Beta(a, a) drawn from ``generator``; float64, shape of n_i.

    The Beta draws come from a NumPy generator seeded by one draw of ``generator``, so the factor
    is a function of the generator's state alone (torch's Beta sampler takes no generator).
    """
    a = as_float_scalar("a", a, positive=True)
    for name, v in (("n_i", n_i), ("n_j", n_j)):
        if not isinstance(v, torch.Tensor) or not bool(torch.all(v > 0)):
            raise InputError(f"{name}: expected a tensor of positive counts")
    if n_i.shape != n_j.shape:
        raise InputError(f"n_j: shape {tuple(n_j.shape)} differs from n_i {tuple(n_i.shape)}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    beta = torch.from_numpy(np.random.default_rng(seed).beta(a, a, size=tuple(n_i.shape)))
    ni, nj = n_i.to(torch.float64).cpu(), n_j.to(torch.float64).cpu()
    xi = nj / (ni + nj) + beta
    return torch.where(xi >= 1.0, xi - 1.0, xi).to(n_i.device)


def mix_batch(labels: np.ndarray, counts: torch.Tensor, tau: float, a: float, generator: torch.Generator):
    """(partner positions, factors xi) for one batch of labels (NumPy in, NumPy out)."""
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    partner = draw_partners(y, counts, tau, generator)
    n = counts.to(torch.float64)
    xi = mixing_factor(n[y], n[y[partner]], a, generator)
    return partner.numpy(), xi.numpy()
