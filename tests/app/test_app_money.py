"""Money with its uncertainty, the pilot read-out and the model card downloads, through AppTest on tiny models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from deq_core import Lens
from deq_core.data.inspection import CLASS_NAMES
from lens_setup import APP, TEST_CASES, app_environment, apply_environment, restore_environment, tiny_models

TIMEOUT = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    models = tiny_models()
    pilots = tmp_path_factory.mktemp("pilots")
    # A pilot log over the app's (capped) test cases: the "current process" calls every case normal,
    # and the outcome of the last case is not known yet.
    lens = Lens.open(models / "inspection-late")
    ids = lens.data("test", TEST_CASES).ids
    _, p = lens.evaluate(lens.data("test", TEST_CASES))
    rows = [f"{i},ok,{CLASS_NAMES[int(y)] if n < len(ids) - 1 else ''}" for n, (i, y) in enumerate(zip(ids, p.labels))]
    (pilots / "inspection-always-ok.csv").write_text("case_id,current_decision,outcome\n" + "\n".join(rows) + "\n")
    (pilots / "inspection-broken.csv").write_text("case_id,current_decision,outcome\nx,fine,ok\n")
    variables = app_environment(models, tmp_path_factory.mktemp("money-cache")) | {"DEQ_LENS_PILOT_DIR": str(pilots)}
    previous = apply_environment(variables)
    yield
    restore_environment(previous)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; metrics: {[m.label for m in at.metric]}"
    return values[0]


def test_compared_model_defaults_to_the_best_baseline_and_prices_survive_a_page_change(env):
    at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    table = at.dataframe[0].value
    others = table[table["model"] != "inspection-deq"]
    best = others.sort_values("accuracy (%)", ascending=False, kind="stable")["model"].iloc[0]
    assert at.selectbox(key="cost_baseline").value == best
    at.number_input(key="cost_miss").set_value(2_345.0)
    at.selectbox(key="cost_baseline").set_value("inspection-early")
    run(at)
    at.switch_page("pages/audit_log.py")
    run(at)
    at.switch_page("pages/overview.py")
    run(at)
    assert at.number_input(key="cost_miss").value == 2_345.0
    assert at.selectbox(key="cost_baseline").value == "inspection-early"
    # the model card: the stable-unique share on every visit, three downloads once prepared
    assert re.fullmatch(r"\d+%", metric(at, "Unique, stable equilibrium"))
    assert not [b for b in at.get("download_button") if "card_" in b.proto.id]
    at.button(key="card_prepare").click()
    run(at)
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"Model card (Markdown)", "Model card (HTML)", "Model card (PDF)"} <= labels


def test_pilot_page_prices_both_sides_and_the_break_even(env):
    at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    at.switch_page("pages/pilot.py")
    run(at)
    assert [t.value for t in at.title] == ["Pilot read-out"]
    assert at.selectbox(key="pilot_source").value == "inspection-always-ok.csv"
    assert metric(at, "Pilot cases") == str(TEST_CASES) and metric(at, "Outcome known") == str(TEST_CASES - 1)
    (sentence,) = [m.value for m in at.markdown if "95% interval" in m.value and "per month" in m.value]
    assert "current process" in sentence and "−" not in sentence
    (payback,) = [m.value for m in at.markdown if m.value.startswith("For a one-off")]
    assert "pays back" in payback or "does not pay back" in payback
    at.number_input(key="pilot_one_off").set_value(0.0)
    run(at)
    assert any(m.value.startswith("For a one-off €0") for m in at.markdown)


def test_a_bad_pilot_log_says_what_is_wrong(env):
    at = run(AppTest.from_file(str(APP), default_timeout=TIMEOUT))
    at.switch_page("pages/pilot.py")
    run(at)
    at.selectbox(key="pilot_source").set_value("inspection-broken.csv")
    run(at)
    (error,) = [e.value for e in at.error]
    assert "row 2: current_decision 'fine' is not a class" in error
