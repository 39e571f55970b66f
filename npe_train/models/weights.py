"""Reading tensors from files: safetensors on any torch, torch's pickle-based files only on a torch that reads them
safely (docs/reliability.md, "Files are data, never code").

``torch.load(weights_only=True)`` is meant to build tensors and plain containers only, but its unpickler could be
bypassed to run code up to torch 2.5.1 (CVE-2025-32434, fixed in 2.6) and had a memory-corruption flaw before 2.10
(CVE-2026-24747). The safetensors format holds no code at all (a JSON header and raw tensor bytes), so the run's
checkpoints are written in it and read on every torch; a pickle-based file (an older checkpoint, a ``--weights``
state_dict saved with ``torch.save``) is read only on torch ``SAFE_TORCH_LOAD`` or newer, and refused with one line
saying why on an older one.
Imports: torch, safetensors, ``npe_theory``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from npe_theory.errors import InputError
from npe_theory.io import open_regular

SAFE_TORCH_LOAD = "2.10"  # the first torch whose weights-only unpickler has no known bypass or memory flaw
SAFETENSORS_SUFFIX = ".safetensors"


def torch_load_is_safe(version: str | None = None) -> bool:
    """Whether this torch (or ``version``) reads pickle-based files without a known way to run code from them."""
    from torch.torch_version import TorchVersion

    return TorchVersion(version or torch.__version__) >= SAFE_TORCH_LOAD


def regular_file(path: Path, label: str) -> Path:
    """``path`` when it is a regular file (checked by opening it without blocking: ``npe_theory.io.open_regular``);
    InputError naming ``label`` otherwise (a FIFO or a device would block a reader forever)."""
    with open_regular(path, label):
        pass
    return Path(path)


def load_safetensors(path: Path, label: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU; InputError naming ``label`` for a damaged or foreign file."""
    from safetensors.torch import load_file

    path = regular_file(path, label)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' own error type, OSError, a header that does not parse
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(f"{label}: {path} is not a readable safetensors file ({reason})") from None


def torch_load(path: Path, label: str, what: str):
    """``torch.load(weights_only=True)`` of a pickle-based file, on a torch that reads it safely only."""
    path = regular_file(path, label)
    if not torch_load_is_safe():
        raise InputError(
            f"{label}: {path} is {what} in torch's pickle-based format, which torch {torch.__version__} cannot read "
            f"safely (its weights-only unpickler has known bypasses before {SAFE_TORCH_LOAD}: CVE-2025-32434, "
            f"CVE-2026-24747); use torch >= {SAFE_TORCH_LOAD}, or a .safetensors file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        UnicodeDecodeError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise InputError(
            f"{label}: {path} is damaged, not {what}, or holds something other than tensors and plain values "
            f"({type(exc).__name__})"
        ) from None


def read_state_dict(path, label: str = "weights") -> dict:
    """A network's state_dict from a local file: ``.safetensors`` on any torch, a ``torch.save`` file (``.pt``,
    ``.pth``, ...) on torch >= ``SAFE_TORCH_LOAD`` only. Nothing is downloaded."""
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return load_safetensors(path, label)
    state = torch_load(path, label, "a state_dict")
    if not isinstance(state, dict):
        raise InputError(f"{label}: {path} holds a {type(state).__name__}, not a state_dict")
    return state
