"""Plugins: modules outside the package that register losses, data sets, models, methods or report references.

A plugin is an importable module whose import registers its entries (``register_loss``, ``register_dataset``,
``register_model``, ``register_method``, ``register_reference``; docs/extending.md). The ``npe`` command imports
every plugin before it reads its arguments, so a plugin's names are valid choices and appear in ``--help``:

- installed packages declare one under the entry-point group ``npe.plugins`` (``[project.entry-points."npe.plugins"]``
  in their pyproject.toml: ``mine = "my_package.npe_plugin"``);
- any module on the path can be named in the environment variable ``NPE_PLUGINS`` (comma-separated).

In Python, importing the module yourself before ``train(...)`` is all it takes. May import: ``errors.py`` only.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from .errors import InputError

GROUP = "npe.plugins"
ENV = "NPE_PLUGINS"
_loaded: set[str] = set()


def plugin_modules() -> list[str]:
    """The module names of the installed entry points, then those of ``NPE_PLUGINS``, each once."""
    names = [ep.value.split(":")[0] for ep in entry_points(group=GROUP)]
    names += [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys(names))


def load_plugins() -> list[str]:
    """Import every plugin module (once per process); returns their names. A plugin that fails to import is an
    InputError naming it (the command line prints one line), not a traceback from deep inside the import."""
    names = plugin_modules()
    for name in names:
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise InputError(f"{ENV}: cannot import the plugin {name!r} ({exc})") from None
        _loaded.add(name)
    return names
