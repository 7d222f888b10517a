"""Read a JSON file that must hold an object, with errors that name the file and what is wrong.

The JSON counterpart of :func:`infrabrain.yaml_file.read_yaml_mapping`: model cards, dataset manifests and site
descriptions go through :func:`read_json_object`, so a file that is not JSON, or holds a list where an object
belongs, is reported the same way everywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The JSON object at ``path``. ``what`` names the file in errors ("model card", "dataset manifest", ...):
    ``FileNotFoundError`` where it is missing, ``ValueError`` where it is not JSON or not an object."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(p)!r} holds a JSON {type(data).__name__}, not an object")
    return data
