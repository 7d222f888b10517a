"""Federations of sites that differ (non-IID): hardware mix, size, ambient temperature, load profile, fault rates
and firmware quality, all drawn deterministically from one seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infrabrain.simulation.engine import SiteRun, simulate_site
from infrabrain.simulation.spec import FaultSpec, SiteSpec, WorkloadSpec, _format_validation_error

HARDWARE_MIXES: tuple[dict[str, float], ...] = ({"H100": 1.0}, {"A100": 1.0}, {"A100": 0.5, "H100": 0.5})


class FederationSpec(BaseModel):
    """An explicit federation: a list of site specs with unique names (loadable from YAML)."""

    model_config = ConfigDict(extra="forbid")

    sites: list[SiteSpec] = Field(min_length=1, max_length=1000)

    @field_validator("sites")
    @classmethod
    def _validate_unique_names(cls, sites: list[SiteSpec]) -> list[SiteSpec]:
        names = [s.name for s in sites]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site names must be unique, repeated: {', '.join(dup)}")
        return sites


def load_federation_spec(path: str | Path) -> FederationSpec:
    """Load a `FederationSpec` (``sites: [...]``) from YAML; errors name the file and the field."""
    from infrabrain.yaml_file import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p, "federation spec", "a mapping with 'sites'")
    try:
        return FederationSpec.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_format_validation_error(exc, str(p)).replace("SiteSpec", "FederationSpec")) from None


def federation_specs(n_sites: int, seed: int = 0, racks: tuple[int, int] = (2, 8),
                     nodes_per_rack: int = 4) -> list[SiteSpec]:
    """``n_sites`` different sites; site ``i`` depends only on ``(seed, i)``, so adding sites keeps the others."""
    if not isinstance(n_sites, (int, np.integer)) or n_sites < 1 or n_sites > 1000:
        raise ValueError(f"n_sites must be an integer in 1..1000, got {n_sites!r}")
    if racks[0] < 1 or racks[1] < racks[0]:
        raise ValueError(f"racks must be (min, max) with 1 <= min <= max, got {racks!r}")
    specs = []
    for i in range(int(n_sites)):
        rng = np.random.default_rng([int(seed), 7919, i])
        mix = HARDWARE_MIXES[int(rng.choice(len(HARDWARE_MIXES), p=[0.45, 0.35, 0.2]))]
        n_racks = int(rng.integers(racks[0], racks[1] + 1))
        rows = 2 if n_racks >= 6 and n_racks % 2 == 0 else 1
        profile = str(rng.choice(["training", "mixed", "inference"], p=[0.4, 0.35, 0.25]))
        specs.append(SiteSpec(
            name=f"site-{i}",
            rows=rows,
            racks_per_row=n_racks // rows,
            nodes_per_rack=nodes_per_rack,
            gpu_mix=mix,
            racks_per_cooling=int(rng.integers(2, 5)),
            ambient_temp_c=round(float(rng.uniform(16.0, 32.0)), 1),
            workload=WorkloadSpec(
                profile=profile,  # type: ignore[arg-type]
                mean_utilisation=round(float(rng.uniform(0.55, 0.9)), 2),
                diurnal_amplitude=round(float(rng.uniform(0.1, 0.6)), 2),
                burstiness=round(float(rng.uniform(0.1, 0.6)), 2),
                mean_job_hours=round(float(rng.uniform(2.0, 12.0)), 1),
            ),
            faults=FaultSpec(
                rate_scale=round(float(np.clip(rng.lognormal(0.0, 0.4), 0.4, 2.5)), 2),
                firmware_quality=round(float(rng.uniform(0.4, 0.95)), 2),
                repair_hours=round(float(rng.uniform(2.0, 8.0)), 1),
            ),
        ))
    return specs


def simulate_federation(n_sites: int | None = None, hours: float = 24.0, seed: int = 0, acceleration: float = 1.0,
                        specs: list[SiteSpec] | FederationSpec | None = None, progress: bool = False) -> list[SiteRun]:
    """Simulate every site of a federation (generated from ``seed`` unless ``specs`` is given)."""
    if specs is None:
        if n_sites is None:
            raise ValueError("give n_sites or specs")
        specs = federation_specs(n_sites, seed)
    site_specs = specs.sites if isinstance(specs, FederationSpec) else list(specs)
    FederationSpec(sites=site_specs)  # unique names
    it = site_specs
    if progress:
        from tqdm import tqdm

        it = tqdm(site_specs, desc="simulate sites", unit="site")
    return [simulate_site(s, hours, seed=seed, acceleration=acceleration) for s in it]
