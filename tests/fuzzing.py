"""Shared pieces of the fuzz suites: hostile values and the contract every public entry point keeps.

The contract (docs/reliability.md): bad input raises ValueError or TypeError whose message starts
with the name of the argument; good input returns values that are never NaN (inf only where a
function documents it as the true overflowed value); every call finishes in bounded time.
"""

from __future__ import annotations

import json
import math
import os
import signal
from contextlib import contextmanager

import numpy as np
from hypothesis import strategies as st

HOSTILE_SCALARS = [
    float("nan"),
    float("inf"),
    -float("inf"),
    0.0,
    -0.0,
    -1.0,
    5e-324,
    1e-300,
    1e308,
    np.finfo(float).max,
    10**400,
    -(10**400),
    2**63,
    True,
    False,
    1 + 2j,
    "abc",
    "",
    None,
    b"x",
    [],
    [[1.0], [2.0, 3.0]],
    {"a": 1},
    np.float32("nan"),
    np.int8(-3),
    np.array([], dtype=float),
    np.array([True, False]),
    np.array([1 + 1j, 2]),
    np.array(["a", "b"]),
    np.array([1.0, np.nan]),
    np.array([[1.0, 2.0]]),
    np.array(object()),
]


def hostile():
    return st.sampled_from(HOSTILE_SCALARS)


def floats(lo=-1e300, hi=1e300):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def maybe(valid):
    """A valid value most of the time, a hostile one otherwise."""
    return st.one_of(valid, valid, hostile())


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def fire(*_):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _finite_or_allowed(value, allow_inf: bool) -> bool:
    if isinstance(value, dict):
        return all(_finite_or_allowed(v, allow_inf) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_or_allowed(v, allow_inf) for v in value)
    if value is None or isinstance(value, (str, bool)):
        return True
    if callable(getattr(value, "detach", None)) and hasattr(value, "dtype"):  # a torch tensor (not a module)
        value = value.detach().double().numpy()
    if hasattr(value, "__dataclass_fields__"):
        return all(_finite_or_allowed(getattr(value, k), allow_inf) for k in value.__dataclass_fields__)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return True  # not numeric (a module, a fraction table ...)
    if np.isnan(arr).any():
        return False
    return allow_inf or bool(np.isfinite(arr).all())


TALLY = os.environ.get(
    "NPE_FUZZ_TALLY"
)  # a file: count outcomes there instead of failing (benchmarks/hostile_inputs.py)


def tally(kind: str, outcome: str) -> None:
    with open(TALLY, "a") as fh:
        fh.write(json.dumps({"kind": kind, "outcome": outcome}) + "\n")


def check_contract(call, names: tuple[str, ...], allow_inf: bool = False, seconds: float = 20.0) -> str:
    """Run ``call()``; returns "value" or "error" when the contract holds, raises AssertionError otherwise."""
    if TALLY:
        try:
            result = _check(call, names, allow_inf, seconds)
            tally("api", "clear error or right value")
            return result
        except AssertionError as exc:
            text = str(exc)
            tally(
                "api",
                "hang"
                if text.startswith("hang")
                else "silent wrong value"
                if text.startswith("silent")
                else "raw traceback",
            )
            return "tallied"
    return _check(call, names, allow_inf, seconds)


def _check(call, names, allow_inf, seconds) -> str:
    try:
        with time_limit(seconds):
            out = call()
    except (ValueError, TypeError) as exc:
        head = str(exc).split(":")[0]
        assert any(n in head for n in names), (
            f"{type(exc).__name__} does not name an argument of {names}: {exc}"
        )
        return "error"
    except Hang:
        raise AssertionError(f"hang: no answer in {seconds} s") from None
    except Exception as exc:  # anything else is a raw traceback for the user
        raise AssertionError(f"raw {type(exc).__name__}: {exc}") from exc
    assert _finite_or_allowed(out, allow_inf), f"silent NaN{'' if allow_inf else ' or inf'} in {out!r:.300}"
    return "value"


def is_nan_free(x) -> bool:
    return not any(isinstance(v, float) and math.isnan(v) for v in np.ravel(np.asarray(x, dtype=object)))
