"""Argument checks shared by the public functions: bad input raises ValueError naming the argument."""

from __future__ import annotations

import numpy as np

from .errors import InputError, InputTypeError

MAX_CLASSES = (
    100_000  # more classes than any long-tailed benchmark has (iNaturalist 2018: 8,142); bounds allocations
)
LOSSES = ("exp", "logistic")
REDUCTIONS = ("sum", "mean")


def _untorched(value):
    """A torch tensor's values on the CPU, detached (NumPy cannot read a tensor that requires grad or lives on a
    GPU, and has no bfloat16): float32 and float64 as they are, other floating types in float64, so a tensor and
    the same values saved as .npy are read alike; anything else as it is."""
    if type(value).__module__.partition(".")[0] == "torch" and hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and str(value.dtype) not in ("torch.float32", "torch.float64"):
            value = value.double()
    return value


def as_float_array(
    name: str, value, *, positive: bool = False, nonnegative: bool = False, single: bool = False
) -> np.ndarray:
    """float64 array of ``value``; finite, and > 0 or >= 0 when asked. ``single``: a float32 array is checked and kept as
    it is (no float64 copy: a feature matrix of 10^5 x 2,048 is 1.9 GB in float64; its readers upcast by the chunk).

    Refused, naming ``name``: booleans, complex numbers, strings and other non-numbers, ragged
    lists, and integers beyond the float64 range (rather than rounding them to infinity).
    """
    value = _untorched(value)
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
        # float64 input is read in place (the checks below only read it); float32 too when ``single``
        arr = raw if single and raw.dtype == np.float32 else raw.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected numbers, got {_show(value)}") from None
    except OverflowError:
        raise InputError(f"{name}: {_show(value)} lies beyond the float64 range") from None
    if not all_finite(arr):
        raise InputError(f"{name}: values must be finite (got NaN or infinity)")
    if positive and not np.all(arr > 0):
        raise InputError(f"{name}: values must be > 0 (smallest is {float(arr.min())!r})")
    if nonnegative and not np.all(arr >= 0):
        raise InputError(f"{name}: values must be >= 0 (smallest is {float(arr.min())!r})")
    return arr


def all_finite(arr: np.ndarray) -> bool:
    """Whether every value of ``arr`` is finite, read by blocks of rows of about ``_FINITE_SLICE`` values: one
    ``isfinite`` over the whole array allocates a boolean array a quarter of float32 features' size (237 MB at 10^5 x
    2,048), and a fresh allocation of that size took from 0.1 s to 2 s to page in here; a block stays in cache. Slices
    along the first axis are views whatever the memory order, so nothing is copied."""
    if arr.ndim == 0 or arr.size <= _FINITE_SLICE:
        return bool(np.isfinite(arr).all())
    step = max(1, _FINITE_SLICE * len(arr) // arr.size)
    return all(bool(np.isfinite(arr[lo : lo + step]).all()) for lo in range(0, len(arr), step))


_FINITE_SLICE = 1 << 16


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


def class_count(name: str, value, minimum: int = 1) -> int:
    """A number of classes: an int in [minimum, MAX_CLASSES] (every per-class array is allocated from it)."""
    return nonnegative_int(name, value, minimum=minimum, maximum=MAX_CLASSES)


def instance(name: str, value, kind, what: str):
    """``value`` when it is a ``kind``; InputTypeError naming ``name`` otherwise (never an AttributeError later)."""
    if not isinstance(value, kind):
        raise InputTypeError(f"{name}: expected {what}, got {type(value).__name__} {_show(value)}")
    return value


def matrix(
    name: str, value, rows: int | None = None, cols: int | None = None, single: bool = False
) -> np.ndarray:
    """A finite float64 (rows, cols) array (either size free when None); float32 kept with ``single``."""
    arr = as_float_array(name, value, single=single)
    if (
        arr.ndim != 2
        or (rows is not None and arr.shape[0] != rows)
        or (cols is not None and arr.shape[1] != cols)
    ):
        want = f"({'N' if rows is None else rows}, {'D' if cols is None else cols})"
        raise InputError(f"{name}: expected shape {want}, got {arr.shape}")
    return arr


def class_ids(
    name: str,
    value,
    num_classes: int,
    length: int | None = None,
    every_class: bool = False,
    against: str = "",
) -> np.ndarray:
    """Integer class ids in [0, num_classes) as int64, one per row when ``length`` is given; with ``every_class``,
    each class at least once. Booleans and non-integral numbers are refused, integral floats are not ids.
    ``against``: the argument that sets num_classes (named beside ``name`` when an id lies beyond it)."""
    try:
        raw = np.asarray(_untorched(value))
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise InputError(f"{name}: expected integer class ids, got {_show(value)}") from None
    if raw.dtype.kind not in "iu" or raw.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of integer class ids, got {raw.dtype} {raw.shape}")
    if length is not None and raw.size != length:
        raise InputError(f"{name}: expected {length} class ids (one per row), got {raw.size}")
    if raw.size and (raw.min() < 0 or raw.max() >= num_classes):
        head = f"{name}, {against}" if against else name
        raise InputError(f"{head}: class ids must lie in [0, {num_classes}), got [{raw.min()}, {raw.max()}]")
    y = raw.astype(np.int64)
    if every_class:
        present = np.bincount(y, minlength=num_classes)
        if not present.all():
            raise InputError(f"{name}: class {int(np.argmin(present))} has no sample")
    return y


def features_and_labels(features, labels, num_classes, every_class: bool = True):
    """(features (N, D) float64, or float32 as given, labels (N,) int64 in [0, C), C) checked together, naming the
    argument at fault. Readers of float32 features accumulate in float64 (by class or by chunk)."""
    C = class_count("num_classes", num_classes)
    h = matrix("features", features, single=True)
    y = class_ids("labels", labels, C)
    if len(y) != len(h):
        raise InputError(f"features, labels: {len(h)} feature rows but {len(y)} labels (one per row)")
    return h, class_ids("labels", y, C, every_class=every_class), C


def broadcastable(**arrays) -> tuple[int, ...]:
    """The common shape of arrays combined elementwise; InputError naming all of them when they do not broadcast."""
    try:
        return np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
    except ValueError:
        shapes = ", ".join(str(np.shape(a)) for a in arrays.values())
        raise InputError(f"{', '.join(arrays)}: shapes {shapes} do not broadcast together") from None


def env_threads() -> int | None:
    """The thread count OMP_NUM_THREADS asks for (its first level in OpenMP's nested form "4,2"), None when unset;
    InputError naming it when it is not a positive integer (OpenMP would ignore it with a warning of its own)."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not env:
        return None
    first = env.split(",")[0].strip()
    if not (first.isascii() and first.isdigit() and int(first) > 0):
        raise InputError(
            f"OMP_NUM_THREADS: expected a positive integer, got {env[:40]!r}; unset it or give --threads"
        )
    return int(first)


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, less a cgroup CPU quota when one is set (a container given
    2 CPUs of a 64-core machine sees all 64 in its affinity)."""
    import math
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def scalar_or_array(arr: np.ndarray):
    """Return a NumPy scalar for 0-d results, like a ufunc does."""
    return arr[()] if arr.ndim == 0 else arr
