import os

# The suite runs one worker per core (pyproject.toml: -n auto); a second torch or BLAS thread per worker would only
# spin-wait on a core another worker holds. Set before torch is imported here, inherited by every subprocess a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# CI: derandomized and bounded, no deadline (mpmath references vary in cost). Dev: more examples.
settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


import pytest  # noqa: E402


def optional_module(name: str):
    """The module, or None when it is not installed or does not load with this torch. With NPE_REQUIRE_VISION=1 (the
    torchvision/timm lane of .ci/run) a missing module is an error, so that lane can never pass by skipping."""
    import importlib

    try:
        return importlib.import_module(name)
    except (ImportError, RuntimeError, OSError):
        if os.environ.get("NPE_REQUIRE_VISION") == "1":
            raise
        return None


class Killed(Exception):
    """Stands for SIGKILL right after a checkpoint was written."""


@pytest.fixture
def kill_after(monkeypatch):
    """``kill_after(n)``: the next training run dies right after writing its n-th checkpoint (no hook in the code)."""
    import npe_train.loop.train as tr

    def arm(n: int):
        real, calls = tr.save_checkpoint, {"n": 0}

        def save(*args, **kwargs):
            real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] >= n:
                monkeypatch.setattr(tr, "save_checkpoint", real)
                raise Killed

        monkeypatch.setattr(tr, "save_checkpoint", save)
        return Killed

    return arm


@pytest.fixture
def pem_steps(monkeypatch):
    """``(steps, plans)`` of the next training runs, recorded without a hook in the code: for every training step the
    features its PEM head read and the head's weight and bias before the step (float64 copies, a forward hook on
    head 0), and every epoch's plan (which samples each step took)."""
    import torch

    import npe_train.loop.train as tr

    steps, plans = [], []
    real_plan, real_build = tr.epoch_plan, tr.build_network
    monkeypatch.setattr(tr, "epoch_plan", lambda *a, **k: plans.append(real_plan(*a, **k)) or plans[-1])

    def record(module, args, out):
        if torch.is_grad_enabled():  # a training step, not an evaluation
            steps.append(tuple(t.detach().double().clone() for t in (args[0], module.weight, module.bias)))

    def build(cfg, data):
        model = real_build(cfg, data)
        model.pem.heads[0].register_forward_hook(record)
        return model

    monkeypatch.setattr(tr, "build_network", build)
    return steps, plans


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so default paths (runs/, figures/) never land in the checkout."""
    monkeypatch.chdir(tmp_path)
