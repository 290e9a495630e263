"""The Convergence tuning page's Edge section through AppTest: flips against K, export and check, download;
and the install hint where onnxruntime is missing."""

from __future__ import annotations

import sys

import pytest
from streamlit.testing.v1 import AppTest

from lens_setup import APP, TEST_CASES, lens_env  # noqa: F401  (lens_env: a fixture)

TIMEOUT = 300


def open_tuning() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/tuning.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_edge_section_exports_checks_and_offers_the_file(lens_env):
    pytest.importorskip("onnxruntime")
    at = open_tuning()
    assert any(s.value.startswith("Edge") for s in at.subheader)
    assert any(e.proto.id.endswith("edge_flips") for e in at.get("plotly_chart"))
    chosen = at.number_input(key="edge_steps").value
    assert any(f"K = {chosen}**" in m.value for m in at.markdown) or any("No K up to" in m.value for m in at.markdown)
    at.selectbox(key="edge_precision").set_value("int8").run()
    at.button(key="edge_export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert {"Agreement", "Flips", "Accuracy", "Latency (batch 1)", "File"} <= set(metrics), metrics
    assert 0 <= int(metrics["Flips"]) <= TEST_CASES
    assert metrics["File"].endswith("MB")
    assert [b for b in at.get("download_button") if "onnx" in str(b.proto.label)]


def test_edge_section_says_how_to_install_onnxruntime(lens_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    at = open_tuning()
    hints = [m.value for m in at.info if "pip install .[edge]" in m.value]
    assert hints and "onnxruntime" in hints[0]
