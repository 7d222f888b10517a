"""SiteSpec validation: bad input is an error that names the field."""

from __future__ import annotations

import pytest

from infrabrain.simulation.spec import SiteSpec, load_site_spec, site_spec_from_dict


def test_defaults_are_valid() -> None:
    s = SiteSpec()
    assert s.n_gpus == s.rows * s.racks_per_row * s.nodes_per_rack * s.gpus_per_node


@pytest.mark.parametrize(("data", "field"), [
    ({"rows": -1}, "rows"),
    ({"nodes_per_rack": 0}, "nodes_per_rack"),
    ({"gpus_per_node": -8}, "gpus_per_node"),
    ({"gpu_mix": {"V100": 1.0}}, "gpu_mix"),
    ({"workload": {"mean_utilisation": 1.5}}, "workload.mean_utilisation"),
    ({"faults": {"rate_scale": -1}}, "faults.rate_scale"),
    ({"faults": {"cause_scale": {"psus": 2.0}}}, "faults.cause_scale"),
    ({"faults": {"cause_scale": {"psu": -1.0}}}, "faults.cause_scale"),
    ({"racks_per_rowz": 3}, "racks_per_rowz"),
])
def test_bad_values_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        site_spec_from_dict(data)
    assert field in str(err.value)


def test_unknown_gpu_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown GPU model 'V100'"):
        site_spec_from_dict({"gpu_mix": {"V100": 1.0}})


def test_yaml_roundtrip_and_errors(tmp_path) -> None:
    good = tmp_path / "site.yaml"
    good.write_text("name: lab\nrows: 2\nracks_per_row: 3\ngpu_mix: {A100: 0.5, H100: 0.5}\n"
                    "workload: {profile: inference}\n")
    s = load_site_spec(good)
    assert (s.name, s.n_racks, s.workload.profile) == ("lab", 6, "inference")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rows: 2\nnodes_per_rack: -4\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*nodes_per_rack"):
        load_site_spec(bad)
    with pytest.raises(FileNotFoundError):
        load_site_spec(tmp_path / "missing.yaml")
    junk = tmp_path / "junk.yaml"
    junk.write_text("rows: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_site_spec(junk)
