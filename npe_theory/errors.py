"""The one error type for input the toolkit checked and refused.

``InputError`` is a ``ValueError`` (and ``InputTypeError`` also a ``TypeError``), so the API's
contract "bad input raises ValueError naming the argument" holds. The command line maps these,
and only these, to a one-line message and exit code 2; any other exception is ours, an internal
error (exit 1, traceback in a crash log). See docs/reliability.md.
May import: nothing of the project.
"""

from __future__ import annotations


class InputError(ValueError):
    """A value, flag, config key or file the toolkit checked and refused; the message names it."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (e.g. a NumPy array where a torch tensor is needed)."""
