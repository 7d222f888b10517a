"""What-if: same site with and without an injected event; what fails, when, along which path."""

from __future__ import annotations

import pytest

from infrabrain.simulation import SiteSpec
from infrabrain.simulation.whatif import parse_time, parse_what_if, run_what_if


def test_parse_what_if() -> None:
    inj = parse_what_if("cooling crac-2 fails at 3h")
    assert (inj.component_id, inj.at_s, inj.kind) == ("crac-2", 10800.0, "cooling")
    assert parse_what_if("leaf-r01 fails at 90m").at_s == 5400.0
    assert parse_time("45s") == 45.0 and parse_time(2) == 7200.0
    with pytest.raises(ValueError, match="not understood"):
        parse_what_if("crac-2 explodes")


def test_cooling_what_if_reports_paths() -> None:
    spec = SiteSpec(name="w", rows=1, racks_per_row=4, nodes_per_rack=4, racks_per_cooling=2)
    res = run_what_if(spec, 8, (parse_what_if("cooling crac-2 fails at 3h"),), seed=0)
    caused = res.caused[res.caused["from_injection"]]
    assert len(caused) >= 1
    assert (caused["t_h"] >= 3.0).all() and (caused["t_h"] < 5.0).all()
    assert caused["path"].str.startswith("crac-2 -> r0").all()
    assert caused["path"].str.contains("XID 79").all()
    assert set(caused["component_id"].str[:3]) <= {"r02", "r03"}
    assert "crac-2 fails at 3.00h" in res.format()


def test_bad_what_if_targets() -> None:
    spec = SiteSpec(name="w")
    with pytest.raises(ValueError, match="unknown component 'crac-9'"):
        run_what_if(spec, 4, (parse_what_if("crac-9 fails at 1h"),))
    with pytest.raises(ValueError, match="is a leaf"):
        run_what_if(spec, 4, (parse_what_if("cooling leaf-r01 fails at 1h"),))
    with pytest.raises(ValueError, match="outside the run"):
        run_what_if(spec, 4, (parse_what_if("crac-1 fails at 9h"),))
