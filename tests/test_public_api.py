"""The API contract of docs/reliability.md for every public name (``npe_theory.__all__`` and ``npe_train.__all__``).

Each public function is called with valid arguments, then with one argument at a time replaced by a hostile value
(NaN, infinities, booleans, strings, None, ragged and empty lists, huge integers, wrong types) or by another form
of its valid value (a list, a tuple, a tensor that requires grad, another dtype, another shape). Every call must
return a value without NaN (or infinity, where the function documents it as the true overflowed value) or raise
a ValueError / TypeError whose message starts with the argument's name; never another exception, a NaN or a hang.
A public name without a base call here fails ``test_every_public_name_is_called``: a new function cannot skip it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fuzzing import HOSTILE_SCALARS, check_contract

import npe_theory
import npe_train

C, D, N = 4, 3, 40


def _data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(C), [16, 12, 8, 4])
    return rng, labels, rng.normal(size=(N, D)) + labels[:, None]


def _means():
    rng, labels, feats = _data()
    return np.stack([feats[labels == c].mean(0) for c in range(C)])


COUNTS = np.array([16.0, 12.0, 8.0, 4.0])
TARGET = torch.tensor([0, 1, 2, 3, 0])


def _backbone():
    return torch.nn.Sequential(torch.nn.Linear(5, D), torch.nn.ReLU())


# name -> a function returning valid keyword arguments (fresh each time: some calls keep what they are given)
CALLS = {
    "lambert_w": lambda: dict(x=np.array([0.5, 2.0])),
    "lambert_w_of_exp": lambda: dict(L=np.array([0.5, 2.0])),
    "asymptotic_logit": lambda: dict(x=np.array([5.0, 20.0]), order=3),
    "asymptotic_logit_of_log": lambda: dict(log_x=np.array([2.0, 30.0]), order=3),
    "debruijn_coefficients": lambda: dict(order=3),
    "stirling1": lambda: dict(n=4, k=2),
    "optimal_logit": lambda: dict(n=COUNTS, lam=1e-3, loss="logistic", feature_norm_sq=2.0),
    "optimal_logit_of_log": lambda: dict(log_x=np.array([0.5, 20.0]), loss="logistic"),
    "objective": lambda: dict(eta=np.array([0.1, 1.0]), n=np.array([3.0, 4.0]), lam=0.1, loss="exp"),
    "pem_loss": lambda: dict(eta=np.array([0.1, 1.0]), loss="logistic"),
    "logistic_bracket": lambda: dict(x=np.array([0.5, 3.0])),
    "count_profile": lambda: dict(kind="exp", num_classes=10, n_max=100, imbalance=10.0),
    "predicted_priors": lambda: dict(
        counts=COUNTS, lam=1e-3, feature_norm_sq=2.0, reduction="mean", loss="logistic", bias=True, weight=1.0
    ),
    "saturation": lambda: dict(counts=COUNTS, lam=1e-3, feature_norm_sq=2.0, reduction="mean", bias=True),
    "prior_match": lambda: dict(estimates=np.log(COUNTS) + 0.1, counts=COUNTS),
    "implied_log_prior": lambda: dict(eta=np.array([1.0, 0.5, 0.2, 0.1]), lam=1e-3, feature_norm_sq=2.0),
    "norm_statistics": lambda: dict(norm_sq=np.array([1.0, 2, 3, 4]), counts=COUNTS),
    "norms_from_statistics": lambda: dict(geomean=2.0, exponent=-0.1, counts=COUNTS),
    "lambda_s": lambda: dict(weight_decay=1e-3, lrs=[0.1, 0.1], momentum=0.9),
    "steps_per_epoch": lambda: dict(num_samples=100, batch_size=10),
    "finite_time_logit": lambda: dict(counts=COUNTS, lam=1e-3, lr=0.1, batch_size=8, epochs=3),
    "heavy_ball_pem": lambda: dict(
        means=_means()[None].repeat(2, 0), fractions=np.full((2, C), 0.25), lrs=[0.1, 0.1], lam=1e-3
    ),
    "replay_steps": lambda: dict(
        state={
            "weight": np.zeros((1, C, D)),
            "bias": np.zeros((1, C)),
            "velocity_weight": None,
            "velocity_bias": None,
        },
        rows=_data()[2][:8],
        labels=_data()[1][:8],
        weight=np.ones(8),
        step_of_row=np.zeros(8, dtype=np.int64),
        fractions=np.full((1, C), 0.25),
        lrs=[0.1],
        lam=1e-3,
    ),
    "loss_slope": lambda: dict(eta=np.array([0.1, 1.0]), loss="logistic"),
    "pem_equilibrium": lambda: dict(features=_data()[2], labels=_data()[1], num_classes=C, lam=1e-2),
    "PemSettings": lambda: dict(weight_decay=1e-3, lambda_s=1.0),
    "pem_report": lambda: dict(
        eta=_data()[0].normal(size=(N, C)),
        features=_data()[2],
        labels=_data()[1],
        counts=COUNTS,
        settings=npe_theory.PemSettings(weight_decay=1e-3, lambda_s=1.0),
        references="core",
    ),
    "regime": lambda: dict(lam_s=1.0),
    "class_means": lambda: dict(features=_data()[2], labels=_data()[1], num_classes=C),
    "nc1": lambda: dict(features=_data()[2], labels=_data()[1], num_classes=C),
    "cosine_matrix": lambda: dict(vectors=_means()),
    "classifier_alignment": lambda: dict(
        weights=_data()[0].normal(size=(C, D)), means=_means(), counts=COUNTS
    ),
    "loglog_slope": lambda: dict(values=np.array([1.0, 2, 3, 4]), counts=COUNTS),
    "class_spread": lambda: dict(features=_data()[2], labels=_data()[1], num_classes=C),
    "spread_logit": lambda: dict(
        spread=npe_theory.class_spread(_data()[2], _data()[1], C), counts=COUNTS, lam=1e-2
    ),
    "spread_inverse": lambda: dict(
        spread=npe_theory.class_spread(_data()[2], _data()[1], C),
        eta=np.array([1.0, 0.5, 0.2, 0.1]),
        lam=1e-2,
    ),
    "spread_statistics": lambda: dict(spread=npe_theory.class_spread(_data()[2], _data()[1], C)),
    "along_mean": lambda: dict(norm_sq=np.array([1.0, 2, 3, 4]), spread_ratio=0.1, num_classes=C),
    "simulate_ufm": lambda: dict(counts=np.array([12, 6, 3])),
    "PriorEstimator": lambda: dict(in_features=D, num_classes=C, num_pems=2, hidden=None),
    "one_way_logistic_loss": lambda: dict(eta=torch.randn(5, C), target=TARGET),
    "npe_adjust": lambda: dict(logits=torch.randn(5, C), eta=torch.randn(5, C), tau=1.0),
    "heads_loss": lambda: dict(heads=torch.randn(2, 5, C), target=TARGET),
    "check_pem_decay": lambda: _with_optimizer(),
    "pem_param_groups": lambda: dict(
        model=npe_train.attach_pem(_backbone(), C, feature_dim=D), weight_decay=1e-3
    ),
    "attach_pem": lambda: dict(backbone=_backbone(), num_classes=C, feature_dim=D),
    "rule_spec": lambda: dict(rule="posthoc_la", tau=1.0, priors={"counts": COUNTS}),
    "apply_rule": lambda: dict(
        spec=npe_train.rule_spec("posthoc_la", 1.0, {"counts": COUNTS}), logits=_data()[0].normal(size=(5, C))
    ),
}


def _with_optimizer():
    net = npe_train.attach_pem(_backbone(), C, feature_dim=D)
    return dict(optimizer=torch.optim.SGD(npe_train.pem_param_groups(net, 1e-3), lr=0.1), model=net)


# public names that are not functions of values, each with where its inputs are checked instead
NOT_CALLED = {
    "train": "trains a network: tests/test_fuzz_cli.py, test_trust.py and test_faults.py drive it",
    "make_config": "the config keys are fuzzed in tests/test_fuzz_api.py (test_make_config)",
    "TrainConfig": "a dataclass; make_config and TrainConfig.validate check it",
    "from_torchvision": "needs torchvision (tests/test_vision.py, the second CI lane)",
    "UFMSettings": "a dataclass of simulate_ufm's settings, checked by simulate_ufm",
}

#: where +inf is the documented, true (overflowed) value
ALLOW_INF = {"objective", "pem_loss", "lambert_w_of_exp", "asymptotic_logit", "saturation", "loss_slope"}

EXTRA = [
    [1.0, 2.0],
    (1.0, 2.0),
    torch.tensor([1.0, 2.0], requires_grad=True),
    torch.tensor(1.0, requires_grad=True),
    10**9,
    2**40,
    object(),
    "1.5",
    np.float16(1),
    np.array(1.0),
    torch.tensor([0, 1]),
    np.array([[[1.0]]]),
]


def _forms(value):
    """Other forms of a valid argument: what a user might pass for the same thing."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return [
            value.tolist(),
            torch.tensor(value, dtype=torch.float64, requires_grad=value.dtype.kind == "f"),
            value.astype(np.float32),
            value.astype(np.int8) if value.dtype.kind in "iu" else value.astype(np.float16),
            value.T.copy() if value.ndim == 2 else value[None],
            value[:1],
        ]
    if isinstance(value, torch.Tensor):
        return [value.numpy(), value.tolist(), value.double(), value[:1]]
    return []


def _resolve(name):
    return getattr(npe_theory if name in npe_theory.__all__ else npe_train, name)


def test_every_public_name_is_called():
    public = set(npe_theory.__all__) | set(npe_train.__all__)
    missing = sorted(public - set(CALLS) - set(NOT_CALLED))
    assert not missing, f"public names without a base call in this test: {missing}"
    assert not (set(CALLS) | set(NOT_CALLED)) - public, "names here that are no longer public"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_contract_with_each_argument_made_hostile(name):
    fn, base = _resolve(name), CALLS[name]()
    check_contract(lambda: fn(**CALLS[name]()), (next(iter(base)),), allow_inf=name in ALLOW_INF)
    failures = []
    for param, valid in base.items():
        for value in [*HOSTILE_SCALARS, *EXTRA, *_forms(valid)]:
            try:
                check_contract(
                    lambda: fn(**{**CALLS[name](), param: value}), (param,), allow_inf=name in ALLOW_INF
                )
            except AssertionError as exc:
                failures.append(f"{name}({param}={value!r:.50}): {str(exc)[:200]}")
    assert not failures, f"{len(failures)} contract breaks:\n" + "\n".join(failures[:15])
