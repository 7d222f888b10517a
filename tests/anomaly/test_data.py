"""Loading and validating SMD-like directories: the real files, and every documented bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infrabrain.models.anomaly_data import ffill_nan, load_dir, load_machine


def _write(directory: Path, name: str, train: np.ndarray, test: np.ndarray, label: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"{name}.npz", train=train, test=test, test_label=label)
    return directory / f"{name}.npz"


def _ok(t: int = 50, f: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return (g.random((t, f), dtype=np.float32), g.random((t, f), dtype=np.float32),
            (g.random(t) < 0.1).astype(np.int8))


def test_real_smd_slice(slice_dir: Path) -> None:
    ms = load_dir(slice_dir)
    assert [m.name for m in ms] == ["machine-1-6", "machine-2-7"]
    m = ms[0]
    assert m.train.shape == (4000, 38) and m.train.dtype == np.float32 and m.n_metrics == 38
    assert m.test_label.sum() > 0
    # '246-252:1,2,...' is rows 246..251 (0-based, end exclusive), metric 1 -> index 0
    seg = m.segments[0]
    assert (seg.start, seg.end) == (246, 251) and seg.metrics[0] == 0
    for seg in m.segments:
        assert m.test_label[seg.start : seg.end + 1].all()
        assert m.test_label[seg.start - 1] == 0 and m.test_label[seg.end + 1] == 0
    assert m.test_label[seg.start : seg.end + 1].all()
    assert m.constant_metrics  # SMD has constant columns: listed, not dropped
    assert m.train.shape[1] == 38


def test_max_rows_and_machine_filter(smd_dir: Path) -> None:
    ms = load_dir(smd_dir, machines=["machine-2-7"], max_rows=700)
    assert len(ms) == 1 and ms[0].test.shape == (700, 38)
    assert all(s.end < 700 for s in ms[0].segments)
    with pytest.raises(ValueError, match="machine-9-9"):
        load_dir(smd_dir, machines=["machine-9-9"])


def test_different_metric_count_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "a", *_ok(f=5))
    tr, te, y = _ok(f=4)
    _write(tmp_path, "b", tr, te, y)
    with pytest.raises(ValueError, match=r"b\.npz: has 4 metrics, expected 5"):
        load_dir(tmp_path)


def test_train_test_metric_mismatch(tmp_path: Path) -> None:
    tr, _, y = _ok()
    _write(tmp_path, "a", tr, np.zeros((50, 6), np.float32), y)
    with pytest.raises(ValueError, match="train has 5 metrics but test has 6"):
        load_machine(tmp_path / "a.npz")


def test_nan_error_and_ffill(tmp_path: Path) -> None:
    tr, te, y = _ok()
    tr[3, 2] = np.nan
    tr[0, 1] = np.nan
    _write(tmp_path, "a", tr, te, y)
    with pytest.raises(ValueError, match=r"a\.npz: array 'train' holds 2 NaN"):
        load_dir(tmp_path)
    (m,) = load_dir(tmp_path, nan_policy="ffill")
    assert m.nan_filled == 2 and np.isfinite(m.train).all()
    assert m.train[3, 2] == pytest.approx(tr[2, 2]) and m.train[0, 1] == 0.0
    with pytest.raises(ValueError, match="nan_policy"):
        load_dir(tmp_path, nan_policy="drop")


def test_ffill_keeps_values() -> None:
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0]], np.float32)
    out, n = ffill_nan(x)
    assert n == 3
    np.testing.assert_array_equal(out, [[0.0, 1.0], [2.0, 1.0], [2.0, 3.0]])


def test_constant_columns_listed(tmp_path: Path) -> None:
    tr, te, y = _ok()
    tr[:, 4] = 0.5
    _write(tmp_path, "a", tr, te, y)
    assert load_machine(tmp_path / "a.npz").constant_metrics == [4]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("test_label"), "missing array"),
        (lambda d: d.update(test_label=np.full(50, 2, np.int8)), "only 0/1"),
        (lambda d: d.update(test_label=np.zeros(49, np.int8)), "test_label has 49 rows"),
        (lambda d: d.update(train=np.zeros(50, np.float32)), "must be 2-D"),
        (lambda d: d.update(train=np.full((50, 5), np.inf, np.float32)), "infinite"),
    ],
)
def test_bad_files(tmp_path: Path, mutate, message: str) -> None:  # noqa: ANN001
    tr, te, y = _ok()
    d = {"train": tr, "test": te, "test_label": y}
    mutate(d)
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(ValueError, match=message):
        load_dir(tmp_path)


def test_not_an_npz_and_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable"):
        load_dir(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npz"):
        load_dir(tmp_path / "empty")


def test_bad_interpretation_line(tmp_path: Path) -> None:
    _write(tmp_path, "a", *_ok())
    (tmp_path / "interpretation_label").mkdir()
    (tmp_path / "interpretation_label" / "a.txt").write_text("10-20:1,99\n")
    with pytest.raises(ValueError, match="cause metric outside 1..5"):
        load_dir(tmp_path)
    (tmp_path / "interpretation_label" / "a.txt").write_text("garbage\n")
    with pytest.raises(ValueError, match="expected 'start-end"):
        load_dir(tmp_path)
