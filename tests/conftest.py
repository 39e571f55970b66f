import os

from hypothesis import HealthCheck, settings

# CI: derandomized and bounded, no deadline (mpmath references vary in cost). Dev: more examples.
settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


import pytest  # noqa: E402


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


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder, so default paths (runs/, figures/) never land in the checkout."""
    monkeypatch.chdir(tmp_path)
