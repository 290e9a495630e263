"""The stability views through Streamlit's AppTest: Inspect a decision's "How far to trust it", the tuning page's survey."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lens_setup import APP, TEST_CASES, lens_env  # noqa: F401  (lens_env: a fixture)

TIMEOUT = 300


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _messages(at: AppTest) -> list[str]:
    return [m.value for kind in ("success", "info", "warning") for m in getattr(at, kind)]


def test_inspect_says_how_stable_and_unique_the_equilibrium_is(lens_env):
    at = open_page("inspect_decision")
    labels = {m.label: m.value for m in at.metric}
    assert {"Spectral radius", "Equilibria found", "Gradient amplification"} <= set(labels)
    radius = float(labels["Spectral radius"])
    equilibria = int(labels["Equilibria found"])
    lines = [m for m in _messages(at) if m.startswith("Equilibrium")]
    assert lines, _messages(at)
    if radius < 1:
        assert any("stable (contracts by" in line for line in lines)
    else:
        assert any("not locally stable" in line for line in lines)
    if equilibria == 1:
        assert any("the only equilibrium found from 8 starts" in line for line in lines) or any(
            "no convergence from" in line for line in lines)  # fmt: skip
    else:
        assert any(f"{equilibria} distinct equilibria found from 8 starts" in line for line in lines)
    starts = [d.value for d in at.dataframe if "start" in d.value.columns]
    assert len(starts) == 1 and len(starts[0]) == 8 and starts[0]["start"].iloc[0] == "zero"


def test_tuning_shows_the_spectral_radii_of_the_test_set(lens_env):
    at = open_page("tuning")
    ids = [e.proto.id for e in at.get("plotly_chart")]
    assert any(i.endswith("tune_radii") for i in ids) and any(i.endswith("tune_radius_iterations") for i in ids), ids
    assert {"Median spectral radius", "Largest", "Unique equilibrium", "Same decision"} <= {m.label for m in at.metric}
    tables = [d.value for d in at.dataframe if "spectral radius" in d.value.columns]  # the readable header
    assert len(tables) == 1 and len(tables[0]) == TEST_CASES
