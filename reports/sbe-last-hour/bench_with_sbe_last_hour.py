"""A probe (issue 3 follow-up 32, not adopted): ``bench/predictor.py`` with one more derived GPU metric for every
model, the single-bit ECC count over the last hour.

``gpu_sbe_last_hour`` is ``log1p`` of the increase of ``DCGM_FI_DEV_ECC_SBE_VOL_TOTAL`` over the last 60 steps:
the statistic the incumbents' ECC-rate rule thresholds (100 per hour), read as a level. The wrapper appends it to
``derived_metrics.DERIVED_METRICS`` and runs the bench with its own arguments; the runs in this folder:

    F="--parts accuracy --seeds 2 --data-seeds 4 --no-oracle --no-progress --published-prior-failures 50 --rootcause-absolute"
    .venv/bin/python reports/sbe-last-hour/bench_with_sbe_last_hour.py $F --seed 0 > accuracy-d0-3.json
    # and --seed 4, 8, 12; 4-5 min each, two at a time
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import predictor as bp  # noqa: E402

import infrabrain.models.derived_metrics as derived  # noqa: E402

STEPS = 60  # one hour at the bench's 60-s cadence


def sbe_last_hour(src: np.ndarray, gpu_node: np.ndarray) -> np.ndarray:
    """``log1p`` of each GPU's single-bit ECC total's increase over the last :data:`STEPS` steps (NaN before)."""
    v = np.asarray(src, dtype=np.float64)
    out = np.full(v.shape, np.nan, dtype=np.float32)
    if v.shape[0] > STEPS:
        with np.errstate(invalid="ignore"):
            out[STEPS:] = np.log1p(np.maximum(v[STEPS:] - v[:-STEPS], 0.0))
    return out


derived.DERIVED_METRICS = derived.DERIVED_METRICS + (
    derived.DerivedMetric("gpu_sbe_last_hour", "gpu", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", sbe_last_hour),)
sys.exit(bp.main(sys.argv[1:]))
