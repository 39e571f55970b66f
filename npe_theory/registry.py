"""Named registries: one place per kind of thing a contributor adds (a loss, a data set, a model, a method, ...).

In the spirit of timm's ``register_model``: an entry is registered once, by name, where it is defined, and
every command, default and help text reads the registry instead of a tuple of names kept elsewhere.

    LOSSES = Registry("loss")
    @LOSSES.register("exp")
    class Exponential: ...
    LOSSES.get("exp")        # the entry; an unknown name raises InputError naming the argument, with the choices

An unknown name is an error everywhere, never a fall-through to a default entry.
May import: ``errors.py`` only.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order. ``argument``: the name bad input is reported under."""

    def __init__(self, kind: str, argument: str | None = None):
        self.kind, self.argument = kind, argument or kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """``register(name, entry)``, or ``@register(name)`` as a decorator; returns the entry.

        Registering a name twice is refused unless ``replace`` (a plugin replacing a built-in says so).
        """
        if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
            raise InputError(
                f"{self.argument}: a {self.kind} name is letters, digits, '_' or '-', got {name!r}"
            )

        def add(value: T) -> T:
            if name in self._entries and not replace:
                raise InputError(f"{self.argument}: a {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's plugin cleans up after itself)."""
        self._entries.pop(name, None)

    def get(self, name) -> T:
        """The entry called ``name``; InputError naming the argument, the choices and the closest name otherwise."""
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, self._entries, n=1) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"{self.argument}: unknown {self.kind} {name!r}; choose from {', '.join(self._entries)}{hint}"
        )

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def where(self, test: Callable[[T], bool]) -> tuple[str, ...]:
        """The names of the entries for which ``test(entry)`` holds, in registration order."""
        return tuple(name for name, entry in self._entries.items() if test(entry))

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
