"""The local node's GPUs through NVML (the ``nvidia-ml-py`` distribution, imported as ``pynvml``).

Reads, per GPU: temperature, power, utilisation, clocks, throttle reasons, ECC counters, remapped rows, NVLink
error counters (summed over the GPU's links), PCIe replays; XID errors arrive through NVML's event API
(``nvmlEventSetWait``) and become both events and the ``DCGM_FI_DEV_XID_ERRORS`` value (the last XID, as DCGM
reports it). Metric names and units follow the DCGM exporter so that NVML and Prometheus data look alike.

A field the GPU or driver does not support is recorded as missing (NaN), never raised. Without an NVML library
(no driver, a CPU-only machine) the collector says so once, clearly, and the daemon runs on with its other
collectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pynvml

from infrabrain.client.collectors.base import Collector, CollectorError
from infrabrain.client.records import CollectResult, EventRecord, SampleBatch
from infrabrain.client.topology_file import GpuInfo, GpuLayout

# Errors that mean "this field is not available here": recorded as missing, silently.
_MISSING_ERRORS: tuple[type[pynvml.NVMLError], ...] = tuple(
    getattr(pynvml, n)
    for n in ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_InvalidArgument",
              "NVMLError_FunctionNotFound", "NVMLError_NotFound")
    if hasattr(pynvml, n)
)


def nvml_unavailable_reason() -> str | None:
    """``None`` when NVML initialises; otherwise a message an operator can act on."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return _explain(exc)
    pynvml.nvmlShutdown()
    return None


def _explain(exc: pynvml.NVMLError) -> str:
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return (f"NVML library not found ({exc}): no NVIDIA driver on this machine (libnvidia-ml.so.1 missing); "
                "the NVML collector is off, the other collectors keep running")
    if isinstance(exc, getattr(pynvml, "NVMLError_DriverNotLoaded", ())):
        return f"NVIDIA driver not loaded ({exc}); the NVML collector is off"
    if isinstance(exc, getattr(pynvml, "NVMLError_NoPermission", ())):
        return f"no permission to use NVML ({exc}); run the daemon as a user that can open /dev/nvidia*"
    return f"NVML failed to initialise ({exc})"


def read_field(fn: Callable[[], Any], problems: list[str], label: str) -> Any:
    """Call one NVML getter: unsupported -> ``None`` (missing); other NVML errors -> ``None`` and a note."""
    try:
        return fn()
    except _MISSING_ERRORS:
        return None
    except pynvml.NVMLError as exc:
        problems.append(f"{label}: {exc}")
        return None


def _sum_links(handle: Any, counter: int, label: str) -> float | None:
    """Sum of one NVLink error counter over the GPU's links; links that do not exist/answer are skipped."""
    total, seen = 0.0, False
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        value = read_field(lambda link=link: pynvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter),
                           [], label)
        if value is not None:
            total += float(value)
            seen = True
    return total if seen else None


def _gpu_fields(handle: Any, problems: list[str]) -> dict[str, float | None]:
    """All per-GPU values, DCGM names and units (W, MHz, MiB, us)."""
    p = pynvml
    r = lambda name, fn: read_field(fn, problems, name)  # noqa: E731
    util = r("utilization", lambda: p.nvmlDeviceGetUtilizationRates(handle))
    mem = r("memory", lambda: p.nvmlDeviceGetMemoryInfo(handle))
    power = r("power", lambda: p.nvmlDeviceGetPowerUsage(handle))
    remap = r("remapped_rows", lambda: p.nvmlDeviceGetRemappedRows(handle))
    throttle_fn = getattr(p, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        p.nvmlDeviceGetCurrentClocksThrottleReasons
    ecc = {
        (kind, where): r(f"ecc_{kind}_{where}",
                         lambda kind=kind, where=where: p.nvmlDeviceGetTotalEccErrors(handle, kind, where))
        for kind in (p.NVML_MEMORY_ERROR_TYPE_CORRECTED, p.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
        for where in (p.NVML_VOLATILE_ECC, p.NVML_AGGREGATE_ECC)
    }
    violation = {
        pol: r(f"violation_{pol}", lambda pol=pol: p.nvmlDeviceGetViolationStatus(handle, pol))
        for pol in (p.NVML_PERF_POLICY_POWER, p.NVML_PERF_POLICY_THERMAL)
    }
    mem_temp = r("memory_temp", lambda: p.nvmlDeviceGetFieldValues(handle, [p.NVML_FI_DEV_MEMORY_TEMP])[0])
    mem_temp_value = None
    if mem_temp is not None and getattr(mem_temp, "nvmlReturn", 1) == p.NVML_SUCCESS:
        mem_temp_value = float(mem_temp.value.uiVal)
    fields: dict[str, float | None] = {
        "DCGM_FI_DEV_GPU_TEMP": r("temperature", lambda: p.nvmlDeviceGetTemperature(handle, p.NVML_TEMPERATURE_GPU)),
        "DCGM_FI_DEV_MEMORY_TEMP": mem_temp_value,
        "DCGM_FI_DEV_POWER_USAGE": None if power is None else power / 1000.0,
        "DCGM_FI_DEV_GPU_UTIL": None if util is None else util.gpu,
        "DCGM_FI_DEV_MEM_COPY_UTIL": None if util is None else util.memory,
        "DCGM_FI_DEV_SM_CLOCK": r("sm_clock", lambda: p.nvmlDeviceGetClockInfo(handle, p.NVML_CLOCK_SM)),
        "DCGM_FI_DEV_MEM_CLOCK": r("mem_clock", lambda: p.nvmlDeviceGetClockInfo(handle, p.NVML_CLOCK_MEM)),
        "DCGM_FI_DEV_FB_USED": None if mem is None else mem.used / 2**20,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": r("throttle_reasons", lambda: throttle_fn(handle)),
        "DCGM_FI_DEV_POWER_VIOLATION": None if violation[p.NVML_PERF_POLICY_POWER] is None
        else violation[p.NVML_PERF_POLICY_POWER].violationTime / 1000.0,
        "DCGM_FI_DEV_THERMAL_VIOLATION": None if violation[p.NVML_PERF_POLICY_THERMAL] is None
        else violation[p.NVML_PERF_POLICY_THERMAL].violationTime / 1000.0,
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ecc[(p.NVML_MEMORY_ERROR_TYPE_CORRECTED, p.NVML_VOLATILE_ECC)],
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ecc[(p.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, p.NVML_VOLATILE_ECC)],
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": ecc[(p.NVML_MEMORY_ERROR_TYPE_CORRECTED, p.NVML_AGGREGATE_ECC)],
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": ecc[(p.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, p.NVML_AGGREGATE_ECC)],
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": None if remap is None else remap[0],
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": None if remap is None else remap[1],
        "DCGM_FI_DEV_ROW_REMAP_FAILURE": None if remap is None else float(bool(remap[3])),
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL": _sum_links(
            handle, p.NVML_NVLINK_ERROR_DL_CRC_FLIT, "nvlink_crc_flit"),
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL": _sum_links(
            handle, p.NVML_NVLINK_ERROR_DL_CRC_DATA, "nvlink_crc_data"),
        "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL": _sum_links(
            handle, p.NVML_NVLINK_ERROR_DL_REPLAY, "nvlink_replay"),
        "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL": _sum_links(
            handle, p.NVML_NVLINK_ERROR_DL_RECOVERY, "nvlink_recovery"),
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": r("pcie_replay", lambda: p.nvmlDeviceGetPcieReplayCounter(handle)),
    }
    return fields


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlCollector(Collector):
    """Collects the GPUs of the node the daemon runs on; GPU ids are ``<node_id>-g<index>``."""

    name = "nvml"

    def __init__(self, node_id: str, xid_events: bool = True) -> None:
        self.node_id = node_id
        self.unavailable: str | None = None
        self._handles: list[Any] = []
        self._event_set: Any = None
        self._last_xid: dict[int, int] = {}
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.unavailable = _explain(exc)
            return
        try:
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except pynvml.NVMLError as exc:
            self.unavailable = f"NVML could not list GPUs ({exc})"
            return
        if xid_events:
            self._register_xid_events()

    def _register_xid_events(self) -> None:
        try:
            self._event_set = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError:
            self._event_set = None
            return
        for handle in self._handles:
            # Unsupported on some GPUs: then XIDs of that GPU are simply not seen.
            read_field(lambda handle=handle: pynvml.nvmlDeviceRegisterEvents(
                handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set), [], "register_xid")

    def gpu_id(self, index: int) -> str:
        """Component id of GPU ``index`` of this node."""
        return f"{self.node_id}-g{index}"

    def _drain_xids(self, t: int) -> list[EventRecord]:
        events: list[EventRecord] = []
        if self._event_set is None:
            return events
        index_of = {id(h): i for i, h in enumerate(self._handles)}
        for _ in range(1024):  # bounded: never spin forever on a storm
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, 0)
            except pynvml.NVMLError:  # NVML_ERROR_TIMEOUT: nothing pending
                break
            index = self._index_of_handle(data.device, index_of)
            xid = int(data.eventData)
            self._last_xid[index] = xid
            events.append(EventRecord(t, self.gpu_id(index), "gpu", "xid", xid, "NVML XidCriticalError"))
        return events

    def _index_of_handle(self, device: Any, index_of: dict[int, int]) -> int:
        try:
            return int(pynvml.nvmlDeviceGetIndex(device))
        except pynvml.NVMLError:
            return index_of.get(id(device), -1)

    def collect(self, now: float) -> CollectResult:
        """One reading of every GPU; unsupported fields are NaN; XID events since the last pass."""
        if self.unavailable is not None:
            raise CollectorError(self.unavailable)
        t = int(now)
        result = CollectResult(samples=SampleBatch())
        result.events.extend(self._drain_xids(t))
        for index, handle in enumerate(self._handles):
            problems: list[str] = []
            fields = _gpu_fields(handle, problems)
            fields["DCGM_FI_DEV_XID_ERRORS"] = float(self._last_xid.get(index, 0))
            gid = self.gpu_id(index)
            for metric, value in fields.items():
                result.samples.add(t, gid, "gpu", metric, math.nan if value is None else float(value))
            result.warnings.extend(f"{gid} {p}" for p in problems)
        return result

    def layout(self) -> GpuLayout | None:
        """The node's GPUs and NVLink wiring (``None`` when NVML is unavailable)."""
        if self.unavailable is not None:
            return None
        gpus, by_bus = [], {}
        for i, h in enumerate(self._handles):
            pci = read_field(lambda h=h: pynvml.nvmlDeviceGetPciInfo(h), [], "pci")
            bus = _decode(pci.busId) if pci is not None else ""
            gpus.append(GpuInfo(i, _decode(read_field(lambda h=h: pynvml.nvmlDeviceGetUUID(h), [], "uuid") or ""),
                                bus, _decode(read_field(lambda h=h: pynvml.nvmlDeviceGetName(h), [], "name") or "")))
            by_bus[bus.lower()] = i
        links: list[tuple[int, int, int]] = []
        for i, h in enumerate(self._handles):
            for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
                state = read_field(lambda h=h, link=link: pynvml.nvmlDeviceGetNvLinkState(h, link), [], "nvlink")
                if not state:
                    continue
                remote = read_field(lambda h=h, link=link: pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link), [],
                                    "nvlink_remote")
                peer = by_bus.get(_decode(remote.busId).lower()) if remote is not None else None
                if peer is not None and peer != i:
                    links.append((i, peer, link))
        return GpuLayout(gpus=gpus, nvlinks=links)

    def close(self) -> None:
        """Free the event set and shut NVML down."""
        if self.unavailable is not None:
            return
        if self._event_set is not None:
            read_field(lambda: pynvml.nvmlEventSetFree(self._event_set), [], "event_set_free")
        read_field(pynvml.nvmlShutdown, [], "shutdown")
