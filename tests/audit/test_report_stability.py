"""Issue 24 in reports: the fixed point's stability and uniqueness recorded, warned about, verified;
and reports small enough to keep (plotly.js once beside them, issue 20)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from audit_helpers import audit, issued, key_dir, resealed  # noqa: F401  (fixtures)
from conftest import tiny_inputs, tiny_model
from deq_core import SolverSettings, save_model, solve
from deq_core.audit import ReportSettings, build_report, verify_report
from deq_core.audit.html import render_html
from deq_core.audit.record import ReportRecord
from deq_core.explain import stability as st
from deq_core.explain.explanation import assess

SETTINGS = ReportSettings(n_steps=8)


@pytest.fixture
def saved(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    return model, save_model(model, tmp_path / "tiny-deq")


@pytest.fixture
def case():
    return tuple(x[:1] for x in tiny_inputs())


def test_a_deq_report_records_its_stability_and_verify_reruns_it(saved, case, audit):
    model, folder = saved
    report = issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit)
    record = report.record
    found = record["stability"]
    assert found["spectral_radius"] == pytest.approx(report.explanation.stability.local.spectral_radius)
    assert len(found["starts"]) == len(found["start_decisions"]) == 8 and found["starts"][0] == "zero"
    assert found["stable"] == (found["spectral_radius"] < 1)
    result = verify_report(record, log=audit)
    assert result.ok, result.problems
    assert any("stability and uniqueness" in c for c in result.checked)
    forged = json.loads(json.dumps(record))
    forged["stability"]["n_equilibria"] = 2
    forged["stability"]["unique"] = False
    problems = verify_report(resealed(forged), log=audit).problems
    assert any(p.startswith("stability.n_equilibria") for p in problems), problems


def test_a_made_up_start_state_fails_verification(saved, case, audit):
    model, folder = saved
    with torch.no_grad():
        f, z0 = model.bind(list(case))
        z = solve(f, z0, **model.config.solver.options()).z[0]
    fake = st.Anchor(1, "no-such-case", 3 * torch.ones_like(z))
    report = issued(build_report(model, folder, case, "case-0", settings=SETTINGS, anchors=(fake,)), audit)
    record = report.record
    if report.explanation.prediction == 1:  # the anchor of the decided class is never a start
        assert record["stability"]["anchors"] == []
        return
    assert record["stability"]["anchors"][0]["case_id"] == "no-such-case"
    assert any("no-such-case" in s for s in record["stability"]["starts"])
    problems = verify_report(record, log=audit).problems
    assert any(p.startswith("stability.anchors") for p in problems), problems


def test_feed_forward_reports_have_no_stability(tmp_path, case, audit):
    model = tiny_model("late").eval()
    folder = save_model(model, tmp_path / "tiny-late")
    report = issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit)
    assert "stability" not in report.record and report.explanation.stability is None
    assert verify_report(report.record, log=audit).ok


def _two_fixed_points() -> st.Stability:
    f = lambda z: torch.tanh(3 * z + 0.5)  # noqa: E731  stable fixed points near +0.99 and -0.97
    settings = SolverSettings(tol=1e-6, max_iter=100)
    with torch.no_grad():
        z_star = solve(f, torch.zeros(1, 1, 1), **settings.options()).z
    names, z0s = st.start_states(z_star, [("equilibrium of b", torch.full((1, 1), -1.0))], 6)
    decide = lambda z: (z.reshape(len(z), -1)[:, 0] < 0).long()  # noqa: E731
    found = st.uniqueness(f, z_star, z0s, names, settings, decide, radius=0.1)
    local = st.local_stability(f, z_star, torch.tensor([1.0, 0.1]), 1, 2, True, 1e-6)
    return st.Stability(local, found, 0, ("a", "b"), 0.0, 0.0)


def test_a_second_equilibrium_or_a_radius_above_one_is_a_plain_warning(saved, case):
    two = _two_fixed_points()
    warnings = two.warnings()
    assert any("2 distinct equilibria" in w for w in warnings) and any("decides b instead of a" in w for w in warnings)
    unstable = dataclasses.replace(two, local=dataclasses.replace(two.local, spectral_radius=1.3))
    assert any("not locally stable" in w and "1.30" in w for w in unstable.warnings())
    model, _ = saved
    explanation = __import__("deq_core").explain_case(model, case, n_steps=8)
    assert explanation.reliable == (not explanation.stability.warnings())
    reliability = assess(None, explanation.attribution, explanation.shapley, 1e-4, stability=two)
    assert not reliability.reliable and set(warnings) <= set(reliability.warnings)


def test_the_page_says_when_the_equilibrium_is_not_stable_or_not_unique(saved, case):
    model, folder = saved
    record = build_report(model, folder, case, "case-0", settings=SETTINGS).data
    page = render_html(record, plotly_js="plotly.min.js")
    assert "the only equilibrium found from 8 starts" in page or "distinct equilibria" in page
    assert '<script src="plotly.min.js"' in page and "no-plotly" in page and len(page) < 200_000
    shaky = dataclasses.replace(record.stability, spectral_radius=1.2, stable=False, unique=False, n_equilibria=2)
    page = render_html(dataclasses.replace(record, stability=shaky))
    assert "NOT locally stable: spectral radius 1.20" in page and "2 distinct equilibria from 8 starts" in page
    assert ReportRecord.from_dict(dataclasses.replace(record, stability=shaky).to_dict()).stability == shaky


def test_reports_of_one_run_share_one_plotly_script(saved, case, tmp_path, audit):
    model, folder = saved
    out = tmp_path / "run"
    for name in ("a", "b"):
        report = issued(build_report(model, folder, case, f"case-{name}", settings=SETTINGS), audit, None)
        report.write(out / name, scripts=out)
        page = (out / name / "report.html").read_text()
        assert '<script src="../plotly.min.js"' in page and len(page.encode()) < 200_000
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "plotly.min.js"]
    assert not (out / "a" / "plotly.min.js").exists()
