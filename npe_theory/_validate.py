"""Argument checks shared by the public functions: bad input raises ValueError naming the argument."""
from __future__ import annotations

import numpy as np

LOSSES = ("exp", "logistic")
REDUCTIONS = ("sum", "mean")


def as_float_array(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> np.ndarray:
    """float64 array of ``value``; finite, and > 0 or >= 0 when asked."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected numbers, got {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite (got NaN or infinity)")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name}: values must be > 0 (smallest is {float(arr.min())!r})")
    if nonnegative and not np.all(arr >= 0):
        raise ValueError(f"{name}: values must be >= 0 (smallest is {float(arr.min())!r})")
    return arr


def choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def nonnegative_int(name: str, value, minimum: int = 0) -> int:
    """An int (not a bool) >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_int(name: str, value) -> int:
    return nonnegative_int(name, value, minimum=1)


def scalar_or_array(arr: np.ndarray):
    """Return a NumPy scalar for 0-d results, like a ufunc does."""
    return arr[()] if arr.ndim == 0 else arr
