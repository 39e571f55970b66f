"""Every registered data set, network, method and report reference, tested by being registered (no lists here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from npe_theory.errors import InputError
from npe_theory.references import REFERENCES
from npe_theory.report import PemSettings, pem_report
from npe_train.data.catalog import DATASETS, DataRequest
from npe_train.methods.catalog import METHODS, MethodSettings
from npe_train.methods.objective import EpochState
from npe_train.models.catalog import MODELS, model_entry
from npe_train.models.classifiers import build_model
from npe_train.run.config import make_config

SELF_CONTAINED = [
    n for n, e in DATASETS.items() if not e.reads and n not in ("mnist1d",)
]  # mnist1d: test_data.py
NEEDS_INPUT = [n for n, e in DATASETS.items() if {"data_dir", "datasets"} & set(e.reads)]


@pytest.mark.parametrize("name", SELF_CONTAINED)
def test_each_generated_data_set_is_long_tailed_and_balanced_at_test(name):
    entry = DATASETS.get(name)
    data = entry.build(
        DataRequest(imbalance=10.0, profile="natural" if entry.task == "segmentation" else "exp", n_max=60)
    )
    assert data.num_classes >= 2 and len(data.y_train) == len(data.x_train)
    if entry.task == "classification":
        counts = np.bincount(data.y_train, minlength=data.num_classes)
        assert counts.tolist() == list(data.counts) and counts[0] == 60 and counts[-1] == 6
        test = np.bincount(data.y_test, minlength=data.num_classes)
        assert test.min() == test.max() > 0


@pytest.mark.parametrize("name", NEEDS_INPUT)
def test_a_data_set_that_reads_input_says_which(name):
    entry = DATASETS.get(name)
    with pytest.raises(InputError, match=r"^(data_dir|datasets)"):
        entry.build(DataRequest(profile="natural" if entry.natural else "exp"))


@pytest.mark.parametrize("name", list(DATASETS))
def test_each_data_set_has_a_default_network_of_its_task(name):
    entry = DATASETS.get(name)
    assert entry.help and model_entry(entry.model).task == entry.task


@pytest.mark.parametrize(
    "name", [n for n, e in MODELS.items() if not e.prefix and e.task == "classification"]
)
def test_each_network_gives_features_of_its_stated_width(name):
    shape = {"(C, L) signals": (1, 40), "(C, H, W) images": (3, 28, 28)}.get(MODELS.get(name).inputs, (12,))
    torch.manual_seed(0)
    net = build_model(name, shape, 5, 1, None, False, None)
    net.eval()
    logits, heads, h = net(torch.zeros(2, *shape))
    assert (
        logits.shape == (2, 5)
        and heads.shape == (1, 2, 5)
        and h.shape[0] == 2
        and torch.isfinite(logits).all()
    )


@pytest.mark.parametrize("name, width", [("mlp", 256), ("mlp:64", 64), ("mlp:1", 1)])
def test_an_mlp_takes_its_width_from_its_name(name, width):
    net = build_model(name, (12,), 5, 1, None, False, None)
    assert net(torch.zeros(2, 12))[2].shape == (2, width) and net.feature_dim == width


@pytest.mark.parametrize("name", ["mlp:", "mlp:0", "mlp:-3", "mlp:6.5", "mlp:abc", "mlp:65537", "cnn1d:64"])
def test_a_width_that_is_not_one_is_refused_naming_the_model(name):
    with pytest.raises(InputError, match="^model: "):
        build_model(name, (1, 40), 5, 1, None, False, None)
    with pytest.raises(InputError, match="^model: "):  # and by the config's checks, before any work
        make_config(dataset="mnist1d", model=name)


def _state(counts):
    counts = torch.as_tensor(counts, dtype=torch.float32)
    return EpochState(0, counts, torch.log(counts / counts.sum()))


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_gives_a_finite_loss_with_a_gradient(name):
    counts = np.array([500, 120, 30, 1])
    loss_fn = METHODS.get(name).make(MethodSettings(counts=counts, epochs=10))
    z = (torch.randn(16, 4, generator=torch.Generator().manual_seed(0)) * 30).requires_grad_()
    y = torch.tensor([0, 1, 2, 3] * 4)
    loss = loss_fn(z, y, None, _state(counts))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_trains_end_to_end(name, tmp_path):
    res = __import__("npe_train.loop.train", fromlist=["train"]).train(
        make_config(
            dataset="synthetic",
            method=name,
            epochs=2,
            n_max=60,
            imbalance=10,
            batch_size=32,
            out=str(tmp_path / "r"),
        ),
        progress=False,
    )
    assert res["config"]["method"] == name and np.isfinite(res["accuracy"]["npe_la"]["overall"])


def test_references_have_distinct_names_and_all_appear_in_a_report():
    labels = [r.label for _, r in REFERENCES.items()]
    shorts = [r.short for _, r in REFERENCES.items()]
    assert len(set(labels)) == len(labels) and len(set(shorts)) == len(shorts)
    rng = np.random.default_rng(0)
    counts = np.array([80, 30, 10])
    y = np.repeat(np.arange(3), counts)
    h = np.eye(3)[y] * 2 + 0.1 * rng.normal(size=(len(y), 3))
    eta = np.log(counts)[y][:, None] * np.eye(3)[y] + 0.05 * rng.normal(size=(len(y), 3))
    report = pem_report(
        eta,
        h,
        y,
        counts,
        PemSettings(weight_decay=1e-2, lr=0.05, batch_size=16, epochs=20),
        eta_eval=eta,
        references="all",
    )
    have = set(report["prior_match"])
    missing = {k for k, r in REFERENCES.items() if k not in have and r.of != "learned_eval"}
    assert not missing, missing
