"""Timers the benchmark scripts wrap around the toolkit's functions (imported by them as a sibling module)."""

from __future__ import annotations

import time


def timed(module, name: str, totals: dict, clock=time.process_time, after=None) -> None:
    """Replace ``module.name`` by a wrapper adding each call's ``clock()`` seconds to ``totals[name]``; ``after()`` runs
    after every call (e.g. to record cumulative costs)."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = clock()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] += clock() - t
            if after is not None:
                after()

    setattr(module, name, wrapper)
