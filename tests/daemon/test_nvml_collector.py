"""NVML collector: on this CPU machine through pynvml's own error paths (the real library load fails); on a
GPU machine against the real GPUs. Never a fake GPU."""

from __future__ import annotations

import math

import pynvml
import pytest

from infrabrain.client.collectors.base import CollectorError, CollectorHealth, run_collector
from infrabrain.client.collectors.nvml import NvmlCollector, nvml_unavailable_reason, read_field

HAVE_NVML = nvml_unavailable_reason() is None


@pytest.mark.skipif(HAVE_NVML, reason="this machine has a working NVML")
def test_no_nvml_library_gives_a_clear_message_and_no_crash() -> None:
    reason = nvml_unavailable_reason()
    assert reason is not None and "NVML library not found" in reason and "other collectors" in reason
    collector = NvmlCollector("r00-n00")
    assert collector.unavailable == reason
    with pytest.raises(CollectorError, match="NVML library not found"):
        collector.collect(1_700_000_000)
    health = CollectorHealth("nvml")
    result = run_collector(collector, health)
    assert len(result.samples) == 0 and not health.up and health.errors_total == 1
    assert collector.layout() is None
    collector.close()


def test_a_failing_field_is_missing_not_raised() -> None:
    problems: list[str] = []
    # a real NVML call through the real binding: without an initialised library it raises a real NVMLError
    value = read_field(lambda: pynvml.nvmlDeviceGetTemperature(None, pynvml.NVML_TEMPERATURE_GPU), problems,
                       "temperature")
    assert value is None
    if not HAVE_NVML:
        assert problems and problems[0].startswith("temperature:")


@pytest.mark.skipif(not HAVE_NVML, reason="needs a GPU with the NVIDIA driver")
def test_real_gpus_are_read() -> None:  # pragma: no cover - runs on GPU machines
    collector = NvmlCollector("gpu-host")
    try:
        result = collector.collect(1_700_000_000)
        temps = [v for m, v in zip(result.samples.metric, result.samples.value) if m == "DCGM_FI_DEV_GPU_TEMP"]
        assert temps and all(math.isfinite(t) and 0 < t < 120 for t in temps)
        layout = collector.layout()
        assert layout is not None and len(layout.gpus) == len(temps)
    finally:
        collector.close()
