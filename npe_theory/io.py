"""Writing results that a person and a program can both read."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path, payload, indent: int = 1) -> Path:
    """Write ``payload`` as JSON, atomically (a reader never sees half a file), making folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent) + "\n")
    os.replace(tmp, path)
    return path
