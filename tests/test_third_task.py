"""A third task through the unchanged loop: classification with per-class loss weights (class-balanced reweighting).

Nothing in ``npe_train`` knows this task. If the loop branched on tasks, ignored a task's loss terms or
its class weights per position, the checks below would fail: the weights must reach the loss (the PEM
then sees every class equally often and learns flat priors) and the PEM's trace (effective counts).
"""

import json

import numpy as np
import pytest
import torch

from npe_train.loop.build import pem_recipe
from npe_train.loop.train import train
from npe_train.run.config import make_config
from npe_train.tasks.classification import Classification


class Reweighted:
    """Every sample's loss weighted by w_c = n / (C N_c): each class carries the same total weight."""

    def __init__(self, counts, base: Classification):
        counts = np.asarray(counts, dtype=np.float64)
        self.weight = counts.sum() / (len(counts) * counts)
        self.weight_t = torch.as_tensor(self.weight, dtype=torch.float32)
        self.base = base

    def loss_weights(self, labels, num_classes, partner=None, weight=None):
        entries = self.base.loss_weights(labels, num_classes, partner, weight)
        # the step's loss is a batch mean of w_i l_i: one term per sample, its weight w of its own label
        return entries._replace(weight=entries.weight * self.weight[labels][entries.position])

    def loss_terms(self, pairs):
        return [(t, self.weight_t.to(t.device)[t] * (1.0 if w is None else w)) for t, w in pairs]

    def feature_terms(self, h, terms):
        return self.base.feature_terms(h, [(t, None) for t, _ in terms])  # class means stay unweighted

    def evaluate(self, model, held, trace, now):
        return self.base.evaluate(model, held, trace, now)

    def figures(self, out, model, held):
        return []

    def advise(self, model, held, report):
        return self.base.advise(model, held, report)


def _slope(results):
    learned, counts = np.asarray(results["pem"]["learned"]), np.log(results["counts"])
    return float(np.polyfit(counts, learned, 1)[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("third")
    settings = dict(dataset="synthetic", imbalance=20, n_max=200, epochs=12, weight_decay=1e-2)
    plain = train(make_config(**settings, out=str(tmp / "plain")), progress=False)
    cfg = make_config(**settings, out=str(tmp / "weighted"))
    base = Classification(pem_recipe(cfg), cfg.batch_size, cfg.seed, cfg.tau, cfg.tau_grid)
    weighted = train(cfg, task=Reweighted(plain["counts"], base), progress=False)
    lines = [json.loads(s) for s in (tmp / "weighted" / "metrics.jsonl").read_text().splitlines()]
    return plain, weighted, lines


def test_the_task_weights_reach_the_trace(runs):
    plain, weighted, lines = runs
    n, C = sum(plain["counts"]), len(plain["counts"])
    for line in lines:  # every class carries n / C of the epoch's loss weight
        np.testing.assert_allclose(line["effective_counts"], n / C, rtol=1e-6)


def test_the_task_weights_reach_the_loss(runs):
    plain, weighted, _ = runs
    assert _slope(plain) > 0.5  # the PEM learns the log-prior from unweighted data
    assert abs(_slope(weighted)) < 0.5 * _slope(plain)  # balanced weights: it sees a flat prior
    assert set(weighted["accuracy"]) == set(plain["accuracy"]) and weighted["pem"][
        "lambda_s"
    ] == pytest.approx(plain["pem"]["lambda_s"])
