"""Versioned global model checkpoints: numpy arrays plus JSON metadata, written crash-safely.

Layout::

    REGISTRY/
      v000003/arrays.npz    # the global model after round 3 (np.savez; read back with allow_pickle=False)
      v000003/meta.json     # round, number of sites, aggregate metrics, array keys/shapes, config fingerprint
      audit.jsonl           # the coordinator's inspection log (see inspection.py)

Each version directory is created under a temporary name and renamed (``infrabrain.atomic.atomic_directory``),
so a version that exists is complete. After a coordinator restart the federation resumes from the newest version;
sites (or the daemon) fetch the newest version for local inference.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infrabrain.atomic import atomic_directory, atomic_write_bytes
from infrabrain.logs import get_logger

log = get_logger("coordinator.registry")

_VERSION_RE = re.compile(r"^v(\d{6})$")


@dataclass(frozen=True)
class Checkpoint:
    """One registry version: the arrays (in model order, with their keys) and the metadata."""

    version: int
    keys: list[str]
    arrays: list[np.ndarray]
    meta: dict[str, Any]

    @property
    def round(self) -> int:
        return int(self.meta["round"])


class ModelRegistry:
    """Append-only store of global checkpoints under one directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not str(root):
            raise ValueError("registry directory must be a non-empty path")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"registry path {str(self.root)!r} exists and is not a directory")

    def versions(self) -> list[int]:
        """Complete versions, oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            m = _VERSION_RE.match(p.name)
            if m and (p / "meta.json").is_file() and (p / "arrays.npz").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def save(self, round_: int, arrays: list[np.ndarray], meta: dict[str, Any],
             keys: list[str] | None = None) -> Checkpoint:
        """Store the global model after ``round_`` as a new version (the version number is the round)."""
        if round_ < 0:
            raise ValueError(f"round must be >= 0, got {round_}")
        keys = list(keys) if keys is not None else [str(i) for i in range(len(arrays))]
        if len(keys) != len(arrays) or len(set(keys)) != len(keys):
            raise ValueError(f"need one unique key per array: {len(keys)} keys for {len(arrays)} arrays")
        clean = [np.ascontiguousarray(a) for a in arrays]
        for k, a in zip(keys, clean, strict=True):
            if a.dtype == object:
                raise ValueError(f"array {k!r} has dtype object; only numeric arrays are stored")
        full_meta = dict(meta)
        full_meta.update(round=int(round_), keys=keys, shapes=[list(a.shape) for a in clean],
                         dtypes=[str(a.dtype) for a in clean])
        json.dumps(full_meta)  # fail before writing anything if metadata is not JSON
        target = self.root / f"v{round_:06d}"
        with atomic_directory(target, overwrite=True) as tmp:
            with open(tmp / "arrays.npz", "wb") as fh:
                np.savez(fh, **{f"a{i:04d}": a for i, a in enumerate(clean)})
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_bytes(tmp / "meta.json", json.dumps(full_meta, indent=2, sort_keys=True).encode())
        log.info("checkpoint saved", extra={"round": round_, "dir": str(target)})
        return Checkpoint(round_, keys, clean, full_meta)

    def load(self, version: int) -> Checkpoint:
        """Load one version; raises ValueError when it is missing, damaged on disk or inconsistent."""
        d = self.root / f"v{version:06d}"
        if not (d / "meta.json").is_file():
            raise ValueError(f"registry version {version} not found under {str(self.root)!r}")
        try:
            meta = json.loads((d / "meta.json").read_text())
            with np.load(d / "arrays.npz", allow_pickle=False) as npz:
                arrays = [npz[f"a{i:04d}"] for i in range(len(meta["keys"]))]
            shapes = meta["shapes"]
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"registry version {version} under {str(d)!r} is damaged ({type(exc).__name__}: "
                             f"{exc}); it is left as it is") from exc
        for a, shape in zip(arrays, shapes, strict=True):
            if list(a.shape) != list(shape):
                raise ValueError(f"registry version {version}: array shape {a.shape} differs from metadata {shape}")
        return Checkpoint(version, list(meta["keys"]), arrays, meta)

    def latest(self) -> Checkpoint | None:
        """The newest complete version, or None for an empty registry."""
        versions = self.versions()
        return self.load(versions[-1]) if versions else None

    def history(self) -> list[dict[str, Any]]:
        """Metadata of every version, oldest first (for reports)."""
        return [json.loads((self.root / f"v{v:06d}" / "meta.json").read_text()) for v in self.versions()]


def fetch_latest(registry_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy the newest global model to ``dest`` (an ``.npz`` file) for local inference at a site."""
    ckpt = ModelRegistry(registry_dir).latest()
    if ckpt is None:
        raise FileNotFoundError(f"no global model in registry {str(registry_dir)!r} yet")
    return save_site_model(dest, ckpt.keys, ckpt.arrays, {"round": ckpt.round})


def save_site_model(dest: str | os.PathLike[str], keys: list[str], arrays: list[np.ndarray],
                    meta: dict[str, Any]) -> Path:
    """Atomically write a model as ``.npz`` with a JSON metadata entry (what a site keeps for inference)."""
    import io

    buf = io.BytesIO()
    payload = {f"a{i:04d}": np.ascontiguousarray(a) for i, a in enumerate(arrays)}
    payload["meta_json"] = np.frombuffer(json.dumps({**meta, "keys": keys}).encode(), dtype=np.uint8)
    np.savez(buf, **payload)
    atomic_write_bytes(dest, buf.getvalue())
    return Path(dest)


def load_site_model(path: str | os.PathLike[str]) -> tuple[list[str], list[np.ndarray], dict[str, Any]]:
    """Read a model written by :func:`save_site_model` (no pickle); ``ValueError`` naming the file if damaged."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["meta_json"].tobytes().decode())
            arrays = [npz[f"a{i:04d}"] for i in range(len(meta["keys"]))]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"site model {str(path)!r} is damaged ({type(exc).__name__}: {exc})") from exc
    return list(meta["keys"]), arrays, meta
