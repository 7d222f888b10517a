"""Every YAML loader reports a missing file, broken YAML and a non-mapping document the same clear way."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrabrain.simulation.federation import load_federation_spec
from infrabrain.simulation.whatif import load_scenario
from infrabrain.yaml_file import read_yaml_mapping


def test_read_yaml_mapping_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="site spec .*nope.yaml.* does not exist"):
        read_yaml_mapping(tmp_path / "nope.yaml", "site spec")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml.* is not valid YAML"):
        read_yaml_mapping(bad, "site spec")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping, not a list"):
        read_yaml_mapping(listing, "site spec")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty, "site spec") == {}


@pytest.mark.parametrize("loader", [load_scenario, load_federation_spec])
def test_scenario_and_federation_loaders_refuse_broken_yaml(loader, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: {rows: [\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        loader(bad)
