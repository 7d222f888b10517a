"""Load and validate a directory of per-machine ``.npz`` telemetry laid out like the SMD subset.

Layout (see ``/work/shared/data/smd/README.md``): one ``<machine>.npz`` per machine with ``train``
``float [T_train, F]`` (unlabelled, mostly normal), ``test`` ``float [T_test, F]`` and ``test_label``
``int [T_test]`` (1 = anomalous minute); optionally ``interpretation_label/<machine>.txt`` with one line per
anomaly segment, ``start-end:d1,d2,...`` (rows ``start..end-1``, 0-based; 1-based metric indices the operators
named as the cause).

Bad input handling (documented in ``docs/anomaly.md``):
- a file whose metric count differs from the others (or from ``n_metrics``): ``ValueError`` naming the file;
- missing arrays, wrong rank, label length mismatch, labels other than 0/1, infinities: ``ValueError``;
- NaNs: ``nan_policy="error"`` (default) raises naming file, array and count; ``"ffill"`` forward-fills each
  metric from its last finite value (0 before the first one) and records the count in ``Machine.nan_filled``;
- constant columns in ``train``: kept (every detector standardises with a floor on the scale), listed in
  ``Machine.constant_metrics`` so reports can say which metrics carry no information.
Nothing is ever written; files are opened with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SMD_ENV = "INFRABRAIN_SMD_DIR"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_SEGMENT_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*:\s*([\d,\s]+)\s*$")


@dataclass(frozen=True)
class CauseSegment:
    """One labelled anomaly segment: test rows ``start..end`` (inclusive, 0-based) and 0-based cause metrics."""

    start: int
    end: int
    metrics: tuple[int, ...]


@dataclass
class Machine:
    """One machine (one federated site in the benchmark): its normal history and its labelled test period."""

    name: str
    train: np.ndarray
    test: np.ndarray
    test_label: np.ndarray
    segments: list[CauseSegment] = field(default_factory=list)
    constant_metrics: list[int] = field(default_factory=list)
    nan_filled: int = 0

    @property
    def n_metrics(self) -> int:
        return int(self.train.shape[1])


def default_smd_dir() -> Path:
    """``$INFRABRAIN_SMD_DIR`` if set, else ``../shared/data/smd`` relative to the repository root."""
    env = os.environ.get(DEFAULT_SMD_ENV)
    if env:
        return Path(env)
    return (_REPO_ROOT.parent / "shared" / "data" / "smd").resolve()


def _validate_nan_policy(nan_policy: str) -> str:
    if nan_policy not in ("error", "ffill"):
        raise ValueError(f"nan_policy must be 'error' or 'ffill', got {nan_policy!r}")
    return nan_policy


def ffill_nan(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Forward-fill NaNs per column (0 before the first finite value); returns the array and the fill count."""
    x = np.array(x, dtype=np.float32, copy=True)
    mask = np.isnan(x)
    n = int(mask.sum())
    if n == 0:
        return x, 0
    idx = np.where(~mask, np.arange(x.shape[0])[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    cols = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    filled = np.where(idx >= 0, x[np.maximum(idx, 0), cols], 0.0)
    return filled.astype(np.float32), n


def _check_array(name: str, key: str, arr: np.ndarray, nan_policy: str) -> tuple[np.ndarray, int]:
    if arr.ndim != 2:
        raise ValueError(f"{name}: array {key!r} must be 2-D [time, metrics], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: array {key!r} is empty (shape {arr.shape})")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: array {key!r} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if np.isinf(arr).any():
        raise ValueError(f"{name}: array {key!r} holds {int(np.isinf(arr).sum())} infinite values")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        if nan_policy == "error":
            raise ValueError(
                f"{name}: array {key!r} holds {n_nan} NaN values (pass nan_policy='ffill' to forward-fill them)"
            )
        return ffill_nan(arr)
    return arr, 0


def parse_interpretation(path: Path, n_test: int, n_metrics: int) -> list[CauseSegment]:
    """Parse ``start-end:d1,d2`` lines into 0-based inclusive :class:`CauseSegment` objects.

    In the SMD files ``start-end`` is a 0-based, end-exclusive row range (it matches ``test_label`` exactly)
    and the metric indices are 1-based.
    """
    segments: list[CauseSegment] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _SEGMENT_RE.match(line)
        if not m:
            raise ValueError(f"{path}:{lineno}: expected 'start-end:d1,d2,...', got {line.strip()!r}")
        # checked against test_label on the real files: start is 0-based, end exclusive (a Python slice)
        start, end = int(m.group(1)), int(m.group(2)) - 1
        dims = tuple(int(d) - 1 for d in m.group(3).split(",") if d.strip())
        if start < 0 or end < start or end >= n_test:
            raise ValueError(f"{path}:{lineno}: segment {m.group(1)}-{m.group(2)} outside test length {n_test}")
        if any(d < 0 or d >= n_metrics for d in dims):
            raise ValueError(f"{path}:{lineno}: cause metric outside 1..{n_metrics}: {m.group(3)}")
        segments.append(CauseSegment(start, end, dims))
    return segments


def load_machine(path: str | os.PathLike[str], nan_policy: str = "error", n_metrics: int | None = None) -> Machine:
    """Load and validate one machine file; see the module docstring for the checks."""
    _validate_nan_policy(nan_policy)
    p = Path(path)
    name = p.stem
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("train", "test", "test_label") if k not in z.files]
            if missing:
                raise ValueError(f"{p.name}: missing array(s) {missing} (has {sorted(z.files)})")
            train_raw, test_raw, label_raw = z["train"], z["test"], z["test_label"]
    except ValueError as exc:
        if str(exc).startswith(p.name):
            raise
        raise ValueError(f"{p.name}: not a readable .npz of plain arrays ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{p.name}: not a readable .npz file ({exc})") from exc
    train, n1 = _check_array(p.name, "train", train_raw, nan_policy)
    test, n2 = _check_array(p.name, "test", test_raw, nan_policy)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"{p.name}: train has {train.shape[1]} metrics but test has {test.shape[1]}")
    if n_metrics is not None and train.shape[1] != n_metrics:
        raise ValueError(f"{p.name}: has {train.shape[1]} metrics, expected {n_metrics} like the other machines")
    label = np.asarray(label_raw).reshape(-1)
    if label.shape[0] != test.shape[0]:
        raise ValueError(f"{p.name}: test_label has {label.shape[0]} rows but test has {test.shape[0]}")
    if not np.isin(label, (0, 1)).all():
        raise ValueError(f"{p.name}: test_label must hold only 0/1, got values {np.unique(label)[:10].tolist()}")
    std = train.std(axis=0)
    constant = [int(i) for i in np.flatnonzero(std < 1e-8)]
    interp = p.parent / "interpretation_label" / f"{name}.txt"
    segments = parse_interpretation(interp, test.shape[0], train.shape[1]) if interp.exists() else []
    return Machine(name, train, test, label.astype(np.int8), segments, constant, n1 + n2)


def load_dir(
    directory: str | os.PathLike[str] | None = None,
    nan_policy: str = "error",
    machines: list[str] | None = None,
    max_rows: int | None = None,
) -> list[Machine]:
    """Load every ``*.npz`` in ``directory`` (sorted by name), all with the same metric count.

    ``machines`` restricts to those stems; ``max_rows`` truncates train and test (tests use small slices).
    """
    d = Path(directory) if directory is not None else default_smd_dir()
    if not d.is_dir():
        raise ValueError(f"data directory {str(d)!r} does not exist (set --data or ${DEFAULT_SMD_ENV})")
    files = sorted(d.glob("*.npz"))
    if machines is not None:
        wanted = set(machines)
        unknown = wanted - {f.stem for f in files}
        if unknown:
            raise ValueError(f"machines {sorted(unknown)} not found in {d}")
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise ValueError(f"data directory {str(d)!r} holds no .npz files")
    if max_rows is not None and max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows}")
    out: list[Machine] = []
    n_metrics: int | None = None
    for f in files:
        m = load_machine(f, nan_policy=nan_policy, n_metrics=n_metrics)
        n_metrics = m.n_metrics
        if max_rows is not None:
            m.train, m.test, m.test_label = m.train[:max_rows], m.test[:max_rows], m.test_label[:max_rows]
            m.segments = [
                CauseSegment(s.start, min(s.end, max_rows - 1), s.metrics) for s in m.segments if s.start < max_rows
            ]
        out.append(m)
    return out
