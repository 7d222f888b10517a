"""Read a YAML configuration file into a mapping, with errors that name the file and what is wrong.

Every YAML input (site specs, scenarios, federations, site.yaml, topology and Prometheus-mapping files) goes
through :func:`read_yaml_mapping`, so a missing file, broken YAML or a document that is not a mapping is reported
the same way everywhere before pydantic validates the fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: str | os.PathLike[str], what: str, expected: str = "a mapping") -> dict[str, Any]:
    """Return the YAML document at ``path`` as a dict; an empty file gives ``{}``.

    ``what`` names the file in errors ("site spec", "topology file", ...); ``expected`` says what the document
    must hold when it is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{what} {str(p)!r} must hold {expected}, not a {type(doc).__name__}")
    return doc
