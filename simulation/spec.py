"""Typed description of one simulated site (`SiteSpec`), loadable from YAML, with errors that name the field.

A site is ``rows`` of ``racks_per_row`` racks; a rack holds ``nodes_per_rack`` nodes of ``gpus_per_node`` GPUs of
one model (chosen per rack from ``gpu_mix``), a leaf switch and ``pdus_per_rack`` PDUs, and is cooled by a cooling
unit shared by ``racks_per_cooling`` neighbouring racks. Spine switches sit above the leaves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class GpuModel(BaseModel):
    """Electrical and thermal constants of one GPU model (SXM parts, public datasheets)."""

    model_config = ConfigDict(frozen=True)

    name: str
    tdp_w: float  # board power limit
    idle_w: float
    max_sm_clock_mhz: float
    idle_sm_clock_mhz: float
    slowdown_temp_c: float  # HW slowdown threshold: clocks drop above it
    shutdown_temp_c: float  # HW shutdown / XID 79 territory
    thermal_rise_c: float  # die temperature above inlet at full power, healthy cooling
    node_overhead_w: float  # CPUs, NICs, fans, PSU losses of an 8-GPU server


# A100 SXM4 80GB: 400 W; H100 SXM5: 700 W (NVIDIA datasheets). DGX A100 ~6.5 kW, DGX H100 ~10.2 kW max.
GPU_MODELS: dict[str, GpuModel] = {
    "A100": GpuModel(name="A100", tdp_w=400.0, idle_w=55.0, max_sm_clock_mhz=1410.0, idle_sm_clock_mhz=210.0,
                     slowdown_temp_c=86.0, shutdown_temp_c=92.0, thermal_rise_c=42.0, node_overhead_w=2200.0),
    "H100": GpuModel(name="H100", tdp_w=700.0, idle_w=75.0, max_sm_clock_mhz=1980.0, idle_sm_clock_mhz=345.0,
                     slowdown_temp_c=87.0, shutdown_temp_c=92.0, thermal_rise_c=48.0, node_overhead_w=2800.0),
}

PROFILES = ("training", "mixed", "inference")


class WorkloadSpec(BaseModel):
    """Job mix of a site: how busy, how diurnal, how bursty, how big and long jobs are."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["training", "mixed", "inference"] = "mixed"
    mean_utilisation: float = Field(0.75, ge=0.0, le=1.0, description="target fraction of nodes busy")
    diurnal_amplitude: float = Field(0.3, ge=0.0, le=1.0, description="day/night swing of job arrivals")
    burstiness: float = Field(0.3, ge=0.0, le=1.0, description="share of jobs that arrive in batches")
    mean_job_hours: float = Field(6.0, gt=0.0, le=24 * 30)
    max_job_nodes: int = Field(64, ge=1, le=4096)


class FaultSpec(BaseModel):
    """Fault-rate knobs of a site. ``rate_scale`` = 1 and ``firmware_quality`` = 0.8 give the Llama 3 rate."""

    model_config = ConfigDict(extra="forbid")

    base_rate_per_gpu_hour: float = Field(2e-5, ge=0.0, le=1.0,
                                          description="unexpected interruptions per GPU-hour (Llama 3: ~2e-5)")
    rate_scale: float = Field(1.0, ge=0.0, le=100.0, description="site multiplier on hardware fault rates")
    firmware_quality: float = Field(0.8, ge=0.0, le=1.0,
                                    description="1 = best; lower raises software/GSP faults and XID noise")
    repair_hours: float = Field(4.0, gt=0.0, le=24 * 14, description="mean hardware repair time")
    noise_scale: float = Field(1.0, ge=0.0, le=100.0, description="multiplier on benign counter noise")
    cause_scale: dict[str, float] = Field(
        default_factory=dict, description="per-cause multiplier on top of rate_scale / firmware_quality, e.g. "
        "{psu: 5} for a site with failing power supplies (causes: simulation.faults.CAUSES)")

    @field_validator("cause_scale")
    @classmethod
    def _validate_cause_scale(cls, v: dict[str, float]) -> dict[str, float]:
        from infrabrain.simulation.faults import CAUSES  # faults imports this module: import at validation time

        unknown = sorted(set(v) - set(CAUSES))
        if unknown:
            raise ValueError(f"unknown cause(s) {unknown}; known: {list(CAUSES)}")
        bad = {c: x for c, x in v.items() if not (math.isfinite(x) and 0.0 <= x <= 100.0)}
        if bad:
            raise ValueError(f"cause_scale values must be in [0, 100], got {bad}")
        return v


class SiteSpec(BaseModel):
    """One site. Unknown fields are rejected so that a typo in YAML is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("site-0", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    rows: int = Field(1, ge=1, le=64)
    racks_per_row: int = Field(4, ge=1, le=128)
    nodes_per_rack: int = Field(4, ge=1, le=32)
    gpus_per_node: int = Field(8, ge=1, le=16)
    gpu_mix: dict[str, float] = Field(default_factory=lambda: {"H100": 1.0},
                                      description="share of racks per GPU model, e.g. {A100: 0.5, H100: 0.5}")
    racks_per_cooling: int = Field(2, ge=1, le=64)
    spines: int = Field(2, ge=1, le=64)
    pdus_per_rack: int = Field(2, ge=1, le=4)
    pdu_rating_kw: float | None = Field(None, gt=0.0, description="default: 0.75 x rack peak power / PDUs x 2")
    ambient_temp_c: float = Field(22.0, ge=-20.0, le=50.0)
    cadence_s: int = Field(60, ge=1, le=3600)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    faults: FaultSpec = Field(default_factory=FaultSpec)

    @field_validator("gpu_mix")
    @classmethod
    def _validate_gpu_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        if not mix:
            raise ValueError("gpu_mix must name at least one GPU model")
        for model, share in mix.items():
            if model not in GPU_MODELS:
                raise ValueError(f"unknown GPU model {model!r} (known: {', '.join(sorted(GPU_MODELS))})")
            if not math.isfinite(share) or share < 0:
                raise ValueError(f"share of {model!r} must be a finite number >= 0, got {share!r}")
        if sum(mix.values()) <= 0:
            raise ValueError("gpu_mix shares sum to 0")
        return mix

    @model_validator(mode="after")
    def _validate_size(self) -> SiteSpec:
        if self.n_gpus > 200_000:
            raise ValueError(f"site has {self.n_gpus} GPUs; the simulator supports at most 200000")
        return self

    def with_cause_scale(self, scale: dict[str, float]) -> SiteSpec:
        """This site with its faults' ``cause_scale`` set to ``scale`` (validated like any ``FaultSpec``)."""
        return self.model_copy(update={"faults": FaultSpec(**{**self.faults.model_dump(), "cause_scale": scale})})

    @property
    def n_racks(self) -> int:
        return self.rows * self.racks_per_row

    @property
    def n_nodes(self) -> int:
        return self.n_racks * self.nodes_per_rack

    @property
    def n_gpus(self) -> int:
        return self.n_nodes * self.gpus_per_node


def _format_validation_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid SiteSpec in {source}: " + "; ".join(parts)


def site_spec_from_dict(data: dict[str, Any], source: str = "input") -> SiteSpec:
    """Validate ``data`` into a `SiteSpec`; raises ``ValueError`` naming every bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"invalid SiteSpec in {source}: expected a mapping, got {type(data).__name__}")
    try:
        return SiteSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_format_validation_error(exc, source)) from None


def load_site_spec(path: str | Path) -> SiteSpec:
    """Load a `SiteSpec` from a YAML file (``ValueError`` naming the file and field on bad input)."""
    from infrabrain.yaml_file import read_yaml_mapping

    p = Path(path)
    return site_spec_from_dict(read_yaml_mapping(p, "site spec"), source=str(p))
