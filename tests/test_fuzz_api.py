"""Fuzz the public API of both packages with generated valid and hostile arguments (hypothesis, CI profile).

Each test draws arguments (valid most of the time, hostile otherwise) and asserts the contract of
``fuzzing.check_contract``. 25 entry points x 25 examples, and 60 config keys: about 690 inputs per run.
"""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import npe_theory as nt
from npe_theory import priors

try:  # modules a checkout before the regime work lacks (benchmarks/hostile_inputs.py --repo OLD skips their tests)
    from npe_theory import dynamics, equilibrium, report
except ImportError:
    dynamics = equilibrium = report = None
new = pytest.mark.skipif(report is None, reason="not in this checkout")
from fuzzing import check_contract, floats, hostile, maybe  # noqa: E402  (after the optional imports above)

from npe_train import PriorEstimator, npe_adjust, one_way_logistic_loss  # noqa: E402
from npe_train.run.config import make_config  # noqa: E402

N = settings(max_examples=25)
pos = floats(1e-300, 1e300).filter(lambda v: v > 0)
counts_st = st.lists(st.integers(1, 10**6), min_size=2, max_size=8)
loss_st = maybe(st.sampled_from(["exp", "logistic"]))


@N
@given(maybe(floats(0, 1e308)))
@example(np.finfo(float).max)
@example(10**400)
@example(1 + 1j)
def test_lambert_w(x):
    check_contract(lambda: nt.lambert_w(x), ("x",))


@N
@given(maybe(floats(-1e308, np.finfo(float).max)))
@example(np.finfo(float).max)
@example(-np.finfo(float).max)
def test_lambert_w_of_exp(L):
    check_contract(lambda: nt.lambert_w_of_exp(L), ("log_x", "L"))


@N
@given(maybe(floats(1.0001, 1e300)), maybe(st.integers(0, 12)))
@example(1e10, 10**9)
@example(1e10, -1)
@example(1e10, 2.5)
def test_asymptotic_logit(x, order):
    check_contract(lambda: nt.asymptotic_logit(x, order), ("x", "order"))


@N
@given(maybe(floats(1e-6, 1e300)), maybe(st.integers(0, 12)))
@example(np.finfo(float).max, 3)
def test_asymptotic_logit_of_log(L, order):
    check_contract(lambda: nt.asymptotic_logit_of_log(L, order), ("log_x", "order"))


@N
@given(maybe(st.integers(0, 30)))
@example(10**9)
def test_debruijn_coefficients(order):
    check_contract(lambda: nt.debruijn_coefficients(order), ("order",))


@N
@given(maybe(st.integers(0, 40)), maybe(st.integers(0, 40)))
@example(10**9, 3)
def test_stirling1(n, k):
    check_contract(lambda: nt.stirling1(n, k), ("n", "k"))


@N
@given(maybe(pos), maybe(pos), loss_st, maybe(pos))
@example(1e-300, 1e300, "logistic", 1.0)
@example(10**400, 1.0, "exp", 1.0)
@example(1.0, 1e-3, "logistic", 1 + 1j)
def test_optimal_logit(n, lam, loss, fns):
    check_contract(lambda: nt.optimal_logit(n, lam, loss, fns), ("n", "lam", "loss", "feature_norm_sq"))


@N
@given(maybe(floats(-1e308, 1e308)), loss_st)
@example(-800.0, "logistic")
@example(np.finfo(float).max, "logistic")
@example(-np.finfo(float).max, "logistic")
def test_optimal_logit_of_log(L, loss):
    check_contract(lambda: nt.optimal_logit_of_log(L, loss), ("log_x", "loss"))


@N
@given(maybe(floats(-1e3, 1e300)), maybe(pos), maybe(pos), loss_st)
def test_objective(eta, n, lam, loss):
    check_contract(
        lambda: nt.objective(eta, n, lam, loss),
        ("eta", "n", "lam", "loss", "feature_norm_sq"),
        allow_inf=True,
    )


@N
@given(maybe(floats(-1e4, 1e300)), loss_st)
def test_pem_loss(eta, loss):
    check_contract(lambda: nt.pem_loss(eta, loss), ("eta", "loss"), allow_inf=True)


@N
@given(maybe(pos))
@example(5e-324)
def test_logistic_bracket(x):
    check_contract(lambda: nt.logistic_bracket(x), ("x",))


@N
@given(
    maybe(st.sampled_from(["exp", "step"])),
    maybe(st.integers(1, 200)),
    maybe(st.integers(1, 10**6)),
    maybe(floats(1, 1e6)),
)
@example("exp", 10**12, 10, 2.0)
def test_count_profile(kind, C, n_max, imb):
    check_contract(
        lambda: priors.count_profile(kind, C, n_max, imb),
        ("kind", "num_classes", "n_max", "imbalance"),
        seconds=5,
    )


@N
@given(
    maybe(counts_st),
    maybe(pos),
    maybe(pos),
    maybe(st.sampled_from(["sum", "mean"])),
    loss_st,
    maybe(st.booleans()),
)
@example([3, 2], 1e-3, 1.0, "mean", "exp", "yes")
@example([3.5, 2], 1e-3, 1.0, "mean", "exp", True)
@example(
    [1, 1], 1.0, 1.0, "sum", "exp", np.array([])
)  # an empty array as bias: its truth value raised inside (random run)
def test_predicted_priors(counts, lam, fns, reduction, loss, bias):
    check_contract(
        lambda: priors.predicted_priors(counts, lam, fns, reduction, loss, bias),
        ("counts", "lam", "feature_norm_sq", "reduction", "loss", "bias"),
    )


@N
@given(maybe(st.lists(floats(-1e300, 1e300), min_size=2, max_size=6)), maybe(counts_st))
@example([1e300, -1e300, 0.0], [1, 2, 3])
@example([1.0, 1.0 + 1e-15, 1.0], [1, 2, 3])
def test_prior_match(estimates, counts):
    check_contract(lambda: priors.prior_match(estimates, counts), ("estimates", "counts", "reference"))


@new
@N
@given(maybe(st.lists(floats(-50, 1e300), min_size=2, max_size=6)), maybe(pos), maybe(pos), loss_st)
@example([0.0, 0.0], 1e-300, 179769313.0, "exp")  # norm / lam overflowed before the log (random run)
def test_implied_log_prior(eta, lam, fns, loss):
    check_contract(
        lambda: priors.implied_log_prior(eta, lam, fns, loss),
        ("eta", "lam", "feature_norm_sq", "loss", "weight"),
    )


@new
@N
@given(
    maybe(floats(0, 1e308)), maybe(st.lists(floats(0, 1e308), min_size=1, max_size=5)), maybe(floats(0, 0.99))
)
@example(1e-3, [0.1], 1.0)
@example(
    1e308, [1e308], 0.0
)  # the product overflows: an error naming the arguments, not inf (a random run found it)
def test_lambda_s(wd, lrs, momentum):
    check_contract(lambda: dynamics.lambda_s(wd, lrs, momentum), ("weight_decay", "lrs", "momentum"))


@new
@N
@given(
    maybe(counts_st.map(lambda c: [min(v, 1000) for v in c])),
    maybe(floats(1e-4, 1e-1)),
    maybe(floats(1e-4, 0.5)),
    maybe(st.integers(1, 30)),
    maybe(st.integers(1, 256)),
)
@example([5, 3], 1e-3, 0.1, 10**9, 1)
@example(
    [1, 1], 0.0625, 0.5, 10**400, 1
)  # an epoch count beyond any array: NumPy's own error escaped (random run)
def test_finite_time_logit(counts, lam, lr, epochs, batch):
    check_contract(
        lambda: dynamics.finite_time_logit(counts, lam, lr, epochs=epochs, batch_size=batch),
        ("counts", "lam", "lr", "epochs", "batch_size", "feature_norm_sq", "reduction"),
        allow_inf=False,
    )


@new
@N
@given(
    maybe(st.just(np.ones((3, 2)))),
    maybe(st.just(np.full(3, 1 / 3))),
    maybe(st.just(np.full(20, 0.05))),
    maybe(floats(1e-4, 1.0)),
    maybe(st.sampled_from(["logistic", "exp"])),
    maybe(floats(0, 0.99)),
)
@example(np.ones((3, 2)), np.full(3, 1 / 3), np.full(20, 1e200), 1e-3, "exp", 0.9)
def test_heavy_ball_pem(means, fractions, lrs, lam, loss, momentum):
    check_contract(
        lambda: dynamics.heavy_ball_pem(means, fractions, lrs, lam, loss=loss, momentum=momentum),
        ("means", "fractions", "lrs", "lam", "loss", "momentum", "epoch_of_step"),
    )


@new
@N
@given(maybe(st.integers(2, 4)), maybe(floats(1e-5, 1.0)), maybe(floats(1e-3, 10)))
@example(3, 1e-3, float("nan"))
def test_pem_equilibrium(C, lam, alpha):
    def call():
        rng = np.random.default_rng(0)
        y = np.repeat(np.arange(3), 5)
        return equilibrium.pem_equilibrium(rng.normal(size=(len(y), 3)), y, C, lam, alpha=alpha)

    check_contract(call, ("features", "labels", "num_classes", "lam", "alpha"))


@new
@N
@given(
    maybe(pos.filter(lambda v: v < 1e6)),
    maybe(floats(0, 1e6)),
    maybe(st.sampled_from(["mean", "sum"])),
    maybe(st.booleans()),
)
@example(1e-3, float("nan"), "mean", True)
@example(1e308, 0.0, "mean", True)  # predictions near 1e-309: an infinite slope was reported (random run)
@example(5e-324, 0.0, "mean", False)  # the spread-aware fixed point overflowed with a warning (random run)
def test_pem_report(wd, lam_s, reduction, bias):
    def call():
        rng = np.random.default_rng(1)
        y = np.repeat(np.arange(3), [6, 4, 2])
        s = report.PemSettings(weight_decay=wd, lambda_s=lam_s, reduction=reduction, bias=bias)
        return report.pem_report(rng.normal(size=(12, 3)), rng.normal(size=(12, 4)), y, [6, 4, 2], s)

    check_contract(
        call, ("weight_decay", "lambda_s", "reduction", "bias", "eta", "features", "labels", "counts", "lr")
    )


@N
@given(
    maybe(st.integers(1, 64)),
    maybe(st.integers(1, 20)),
    maybe(st.integers(1, 3)),
    maybe(st.one_of(st.none(), st.integers(1, 8))),
)
@example(True, 3, 1, None)
def test_prior_estimator(d, C, K, hidden):
    check_contract(
        lambda: PriorEstimator(d, C, K, hidden)(
            torch.randn(2, d if isinstance(d, int) and 0 < d < 10**6 else 1)
        ),
        ("in_features", "num_classes", "num_pems", "hidden", "features"),
    )


@N
@given(maybe(st.integers(1, 6)), hostile() | st.just("ok"), maybe(st.sampled_from(["mean", "sum", "none"])))
def test_one_way_logistic_loss(C, target_kind, reduction):
    def call():
        eta = torch.randn(4, C if isinstance(C, int) and 0 < C < 100 else 3)
        target = (
            torch.tensor([0, 1, 0, 1])
            if isinstance(target_kind, str) and target_kind == "ok"
            else target_kind
        )
        return one_way_logistic_loss(eta, target, reduction=reduction)

    check_contract(call, ("eta", "target", "reduction", "loss"))


@N
@given(maybe(floats(-10, 10)), st.sampled_from(["tensor", "numpy", "shape"]))
@example(float("nan"), "tensor")
@example(
    1e308, "tensor"
)  # tau * eta overflows float32: an error naming tau, not infinite logits (random run)
def test_npe_adjust(tau, kind):
    def call():
        logits = torch.randn(3, 4)
        eta = {"tensor": torch.randn(3, 4), "numpy": np.zeros((3, 4)), "shape": torch.randn(3, 5)}[kind]
        return npe_adjust(logits, eta, tau)

    check_contract(call, ("logits", "eta", "tau"))


KEYS = (
    "epochs",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "imbalance",
    "tau",
    "augment",
    "amp",
    "milestones",
    "tau_grid",
    "dataset",
    "model",
    "seed",
    "num_pems",
    "n_max",
    "test_fraction",
)


@settings(max_examples=60)
@given(st.sampled_from(KEYS), hostile())
@example("augment", "yes")
@example("seed", 2.5)
@example("epochs", 10**30)
def test_make_config(key, value):
    check_contract(lambda: make_config(dataset="synthetic", **{key: value}), (key, "config"))


@N
@given(
    maybe(st.just(np.array([[0.7, 0.3], [0.4, 0.6]]))),
    maybe(st.just(np.array([0, 1]))),
    maybe(st.integers(1, 100)),
)
@example(np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([0, 1]), 10**9)
@example(
    np.array([[0.7, 0.3], [0.4, 0.6]]), [[1.0], [2.0, 3.0]], 1
)  # ragged labels: NumPy's own ValueError, not ours
def test_expected_calibration_error(probs, labels, bins):
    from npe_train.tasks.rules import expected_calibration_error

    check_contract(lambda: expected_calibration_error(probs, labels, bins), ("probs", "labels", "bins"))


# ---- UniMix, the shifting stream, the UFM geometry, segmentation loaders ----

int_labels = st.lists(st.integers(0, 4), min_size=1, max_size=12)


@N
@given(
    maybe(int_labels), maybe(st.lists(st.integers(1, 10**6), min_size=5, max_size=5)), maybe(floats(-5, 5))
)
@example([0, 7], [1, 2, 3, 4, 5], -0.1)
@example([0, 1], [1, 0, 3, 4, 5], -0.1)
@example([0], [7, 1, 1, 1, 1], 1e308)  # tau ln n overflowed to inf, and the share to NaN
def test_partner_probabilities(labels, counts, tau):
    from npe_train.methods.unimix import partner_probabilities

    def tensor(v):  # valid lists become tensors; a hostile value goes in as it is
        return torch.as_tensor(v) if isinstance(v, list) and all(type(i) is int for i in v) else v

    def call():
        return partner_probabilities(tensor(labels), tensor(counts), tau).numpy()

    check_contract(call, ("labels", "counts", "tau"))


@N
@given(maybe(st.lists(floats(1, 1e6), min_size=1, max_size=6)), maybe(floats(1e-3, 10)))
@example([1.0, 2.0], 0.0)
@example([1.0, float("nan")], 0.8)
def test_mixing_factor(n, a):
    from npe_train.methods.unimix import mixing_factor

    def call():
        t = (
            torch.as_tensor(n, dtype=torch.float64)
            if isinstance(n, list) and all(type(v) is float for v in n)
            else n
        )
        return mixing_factor(t, t, a, torch.Generator().manual_seed(0)).numpy()

    check_contract(call, ("n_i", "n_j", "a"))


@N
@given(maybe(st.text(max_size=20)), maybe(st.integers(1, 100)))
@example("20=reversed:100", 60)
@example("5=exp:1e400", 60)
def test_parse_shift(entry, epochs):
    from npe_train.data.stream import parse_shift

    check_contract(lambda: parse_shift(entry, epochs), ("shift", "epochs"))


@N
@given(maybe(counts_st.map(lambda c: [min(v, 100) for v in c])), maybe(st.integers(2, 12)))
def test_finite_time_logit_with_a_schedule(counts, epochs):
    def call():
        valid = (
            isinstance(counts, list)
            and all(type(v) is int for v in counts)
            and type(epochs) is int
            and 0 <= epochs <= 1000
        )
        sched = [list(counts)] * epochs if valid else counts  # a hostile value goes in as it is
        return dynamics.finite_time_logit(sched, 1e-2, 0.1, batch_size=32)

    check_contract(call, ("counts", "epochs", "lr", "feature_norm_sq"))


@N
@given(maybe(st.sampled_from(["", "nowhere", "file"])), maybe(st.integers(1, 64)))
def test_segmentation_loaders(where, size):
    import tempfile
    from pathlib import Path

    from npe_train.data.segmentation import load_ade20k, load_stare

    with tempfile.TemporaryDirectory() as tmp:
        root = where  # a hostile value goes in as it is
        if isinstance(where, str) and where == "file":
            root = Path(tmp) / "afile"
            root.write_text("x")
        elif isinstance(where, str) and where == "":
            root = tmp
        for load in (load_stare, load_ade20k):
            check_contract(lambda: load(root, size), ("data_dir", "image_size", "root"))
