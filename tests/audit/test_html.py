"""The report page: drawn by the app's own figure builders (one palette), and deq_core stays free of streamlit."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from conftest import tiny_inputs, tiny_model
from deq_core import figures, save_model
from deq_core.audit import ReportSettings, build_report
from deq_core.audit.html import CSS, _figures, render_html


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    folder = save_model(model, tmp_path_factory.mktemp("html") / "tiny-deq")
    return build_report(model, folder, tuple(x[:1] for x in tiny_inputs()), "case-0", settings=ReportSettings(n_steps=8), label=0)


def test_the_page_draws_the_apps_figures_from_the_record(report):
    data = report.data
    drawn = _figures(data)
    assert [f.layout.title.text for f in drawn] == ["What the model decided", "Each input's contribution to P(" +
                                                    data.attribution.target_class + ")", "How the equilibrium search settled",
                                                    "The decision at every iteration"]  # fmt: skip
    classes, values = list(data.prediction.probabilities), list(data.prediction.probabilities.values())
    app_bars = figures.probabilities(classes, values, truth=data.prediction.label).data[0]
    assert drawn[0].data[0].marker.color == app_bars.marker.color  # the decided class in the app's colour
    assert figures.PALETTE[0] in drawn[0].data[0].marker.color
    assert drawn[0].data[0].marker.line.width == app_bars.marker.line.width  # the true class outlined, as in the app
    assert list(drawn[2].data[0].y) == pytest.approx([max(r, 1e-12) for r in data.trajectory.relative_residuals])
    assert any(shape.y0 == data.settings.solver.tol for shape in drawn[2].layout.shapes)
    assert len(drawn[3].data) == len(classes)


def test_the_page_has_one_stylesheet_and_inlines_plotly_once(report):
    page = render_html(report.data)
    assert page.count("<style>") == 1 and CSS in page
    assert page.count("plotly.js v") == 1  # the library once, however many figures
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # plotly's random div ids
    assert uuid.sub("id", page) == uuid.sub("id", report.html)  # the page is a pure function of the record


def test_deq_core_never_imports_streamlit():
    code = "import sys, deq_core, deq_core.figures, deq_core.audit, deq_core.audit.cli; print('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
