import os

from hypothesis import HealthCheck, settings

# CI: derandomized and bounded, no deadline (mpmath references vary in cost). Dev: more examples.
settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
