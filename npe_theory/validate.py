"""Argument checks shared by the public functions: bad input raises ValueError naming the argument."""

from __future__ import annotations

import numpy as np

from .errors import InputError

MAX_CLASSES = (
    100_000  # more classes than any long-tailed benchmark has (iNaturalist 2018: 8,142); bounds allocations
)
LOSSES = ("exp", "logistic")
REDUCTIONS = ("sum", "mean")


def as_float_array(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> np.ndarray:
    """float64 array of ``value``; finite, and > 0 or >= 0 when asked.

    Refused, naming ``name``: booleans, complex numbers, strings and other non-numbers, ragged
    lists, and integers beyond the float64 range (rather than rounding them to infinity).
    """
    if type(value).__module__.partition(".")[0] == "torch" and hasattr(
        value, "detach"
    ):  # a tensor, even one that
        value = (
            value.detach().cpu()
        )  # requires grad or lives on a GPU: its values (NumPy cannot take those directly)
        if value.is_floating_point():
            value = value.double()
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise InputError(f"{name}: expected numbers, got {_show(value)}") from None
    kind = raw.dtype.kind
    if kind == "b":
        raise InputError(f"{name}: expected numbers, got booleans {_show(value)}")
    if kind == "c":
        raise InputError(f"{name}: expected real numbers, got complex {_show(value)}")
    if kind not in "iuf":
        if kind != "O" or any(isinstance(v, (bool, np.bool_, complex, str, bytes)) for v in raw.ravel()):
            raise InputError(f"{name}: expected numbers, got {_show(value)}")
    try:
        arr = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected numbers, got {_show(value)}") from None
    except OverflowError:
        raise InputError(f"{name}: {_show(value)} lies beyond the float64 range") from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: values must be finite (got NaN or infinity)")
    if positive and not np.all(arr > 0):
        raise InputError(f"{name}: values must be > 0 (smallest is {float(arr.min())!r})")
    if nonnegative and not np.all(arr >= 0):
        raise InputError(f"{name}: values must be >= 0 (smallest is {float(arr.min())!r})")
    return arr


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_scalar(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """One finite float (a 0-d or one-element input), > 0 or >= 0 when asked."""
    arr = as_float_array(name, value, positive=positive, nonnegative=nonnegative)
    if arr.size != 1:
        raise InputError(f"{name}: expected one number, got shape {arr.shape}")
    return float(arr.reshape(()))


def momentum_value(value, name: str = "momentum") -> float:
    """A heavy-ball momentum: one number in [0, 1) (at 1 the steps would never settle)."""
    mu = as_float_scalar(name, value, nonnegative=True)
    if mu >= 1:
        raise InputError(f"{name}: must lie in [0, 1), got {mu!r}")
    return mu


def choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InputError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def nonnegative_int(name: str, value, minimum: int = 0, maximum: int | None = None) -> int:
    """An int (not a bool) in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name}: expected an integer >= {minimum}, got {_show(value)}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name}: {value} is above the limit of {maximum}")
    return int(value)


def positive_int(name: str, value, maximum: int | None = None) -> int:
    return nonnegative_int(name, value, minimum=1, maximum=maximum)


def scalar_or_array(arr: np.ndarray):
    """Return a NumPy scalar for 0-d results, like a ufunc does."""
    return arr[()] if arr.ndim == 0 else arr
