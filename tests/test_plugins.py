"""A plugin registered from outside the package: its data set, model, method, PEM loss and report reference are
choices of ``npe train``, appear in its help, and run end to end (docs/extending.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from npe_theory.errors import InputError

PLUGIN = textwrap.dedent("""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F

    from npe_theory.references import Reference, register_reference
    from npe_train.data.longtail import Source, classification_source
    from npe_train.methods.catalog import Method, register_method
    from npe_train.models.catalog import register_model


    @classification_source("plug_blobs", model="plug_net", help="plugin data: four Gaussian blobs in 8-d")
    def _blobs(request):
        rng = np.random.default_rng(request.seed)
        centers = 3.0 * np.eye(4, 8)

        def draw(n):
            y = np.repeat(np.arange(4), n)
            return (centers[y] + rng.normal(size=(len(y), 8))).astype(np.float32), y

        (x, y), (xt, yt) = draw(80), draw(30)
        return Source(x, y, xt, yt, request.n_max or 80)


    @register_model("plug_net", inputs="vectors", help="plugin network: one hidden layer of 16")
    def _net(input_shape, num_classes, weights=None, name=None):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), 16), torch.nn.ReLU())
        net.out_features = 16
        return net


    class Smoothed:
        def __call__(self, z, labels, weight, state):
            return F.cross_entropy(z, labels, label_smoothing=0.1)


    register_method("plug_smooth", Method(lambda s: Smoothed(), "plugin method: label-smoothed CE"))
    register_reference("plug_half", Reference("half the log-counts", "half", "half_log_counts",
                                              compute=lambda ctx: 0.5 * np.log(ctx.counts)))
""")


def _npe(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "npe", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture
def plugin_env(tmp_path):
    (tmp_path / "npe_plugin_demo.py").write_text(PLUGIN)
    env = {
        **os.environ,
        "NPE_PLUGINS": "npe_plugin_demo",
        "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    return env, tmp_path


def test_a_plugin_shows_in_the_help_and_trains(plugin_env):
    env, tmp = plugin_env
    help_text = _npe(["train", "--help"], env, tmp)
    assert help_text.returncode == 0, help_text.stderr
    for name in ("plug_blobs", "plugin data", "plug_net", "plug_smooth", "plugin method"):
        assert name in help_text.stdout, name
    run = _npe(
        [
            "train",
            "--dataset",
            "plug_blobs",
            "--method",
            "plug_smooth",
            "--epochs",
            "3",
            "--imbalance",
            "10",
            "--batch-size",
            "32",
            "--out",
            str(tmp / "run"),
        ],
        env,
        tmp,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp / "run" / "results.json").read_text())
    assert results["config"]["model"] == "plug_net" and results["config"]["method"] == "plug_smooth"
    counts = results["counts"]
    assert counts[0] == 80 and counts[-1] == 8  # the toolkit's exp profile on the plugin's data
    match = results["pem"]["prior_match"]["plug_half"]
    assert match["slope"] == pytest.approx(
        2 * results["pem"]["prior_match"]["vs_log_counts"]["slope"], rel=1e-6
    )


def test_without_the_plugin_its_names_are_errors(plugin_env):
    env, tmp = plugin_env
    env = {k: v for k, v in env.items() if k != "NPE_PLUGINS"}
    run = _npe(["train", "--dataset", "plug_blobs", "--epochs", "1"], env, tmp)
    assert (
        run.returncode == 2
        and "dataset: unknown data set 'plug_blobs'" in run.stderr
        and "Traceback" not in run.stderr
    )


def test_a_plugin_that_does_not_import_is_one_line(plugin_env):
    env, tmp = plugin_env
    run = _npe(["check", "--help"], {**env, "NPE_PLUGINS": "no_such_npe_plugin"}, tmp)
    assert run.returncode == 2 and "NPE_PLUGINS" in run.stderr and "no_such_npe_plugin" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_registering_a_name_twice_is_refused():
    from npe_train.methods.catalog import METHODS, Method, register_method

    with pytest.raises(InputError, match="already registered"):
        register_method("npe", Method(lambda s: None, "again"))
    assert METHODS.get("npe").joint_pem
