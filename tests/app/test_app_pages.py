"""Every page through Streamlit's AppTest, on tiny trained models: it loads, and its key widgets change what is shown."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import plotly.io
import pytest
from streamlit.testing.v1 import AppTest

from deq_core.data.inspection import CLASS_NAMES
from deq_core.explain.ideal import generated_case, ideal_shapley
from lens_setup import APP, TEST_CASES, lens_env  # noqa: F401  (lens_env: a fixture)

from app import resources

TIMEOUT = 300  # seconds per run: the first run of a page queues evaluations and sweeps on one thread


def open_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    if page:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def _decode(value):
    """Plotly's JSON stores arrays as base64 ``{"dtype", "bdata"}``; give them back as numpy arrays."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "bdata"}:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            shape = value.get("shape")
            return array.reshape([int(n) for n in str(shape).split(",")]) if shape else array
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def figure(at: AppTest, key: str):
    """The plotly figure drawn with ``key`` (widgets.chart keys every chart)."""
    for element in at.get("plotly_chart"):
        if element.proto.id.endswith(key):
            return plotly.io.from_json(json.dumps(_decode(json.loads(element.proto.spec)), default=lambda a: a.tolist()))
    raise AssertionError(f"no chart with key {key!r}; ids: {[e.proto.id for e in at.get('plotly_chart')]}")


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}; metrics: {[m.label for m in at.metric]}"
    return values[0]


def test_overview_shows_the_card_the_baselines_and_a_saving_that_follows_the_costs(lens_env):
    at = open_app()
    assert [t.value for t in at.title] == ["Overview"]
    assert metric(at, "Test cases") == str(TEST_CASES)
    comparison = figure(at, "overview_comparison")
    assert {trace.name for trace in comparison.data} == {f"inspection-{a}" for a in ("deq", "weight_tied", "early", "late")}
    # The table names each model's encoders (issue 19: the models compared must read the inputs alike).
    models = next(d.value for d in at.dataframe if "macro F1" in d.value.columns)  # AppTest gives keyless ids here
    assert list(models.columns[:1]) == ["model"]
    assert [c.value for c in at.caption if c.value.startswith("Image pooling")] == [
        "Image pooling: grid 4x4, the same for every model."]
    (verdict,) = [m.value for m in at.markdown if "a paired test gives p" in m.value]
    found = re.search(r"\*\*([\d.]+)%\*\*.*\*\*(?:([\d.]+) points (more|fewer) than|as many as)\*\*.*alone is right on "
                      r"(\d+) cases? and .* alone on (\d+) cases?", verdict)  # a tie reads "as many as", never "0.0 points more"
    assert found, verdict
    gap, sign, only_deq, only_best = float(found[2] or 0), found[3] or "more", int(found[4]), int(found[5])
    # The paired counts are the accuracy gap, case by case.
    assert (1 if sign == "more" else -1) * gap == pytest.approx(100 * (only_deq - only_best) / TEST_CASES, abs=0.051)
    grades = [m for m in at.metric if m.label.split(":")[0] in ("photo", "sensors", "note")]
    assert len(grades) == 3 and all(m.value in ("A", "B", "C", "D") for m in grades)

    at.selectbox(key="cost_baseline").set_value("inspection-late").run()
    label = "inspection-deq against inspection-late, per month"
    before = metric(at, label)
    assert re.fullmatch(r"saves €[\d,]+|costs €[\d,]+ more|no measurable difference", before), before
    def saving_sentence():
        (sentence,) = [m.value for m in at.markdown if "95% interval" in m.value and "inspection-late" in m.value]
        assert "−" not in sentence and "-€" not in sentence
        return sentence

    before = saving_sentence()
    at.number_input(key="cost_miss").set_value(90_000.0).run()
    at.number_input(key="cost_false_alarm").set_value(7_000.0).run()
    assert not at.exception
    assert re.fullmatch(r"saves €[\d,]+|costs €[\d,]+ more|no measurable difference", metric(at, label))
    after = saving_sentence()  # its interval moves with the prices even where the verdict stays "no measurable difference"
    figure(at, "overview_cost_intervals")
    # The two models' error counts differ, so new prices change the saving unless both made no errors.
    costs = figure(at, "overview_cost")
    assert after != before or all(float(np.nansum(t.y)) == 0 for t in costs.data if t.type == "bar")
    assert len(at.get("download_button")) >= 2


def test_inspect_filters_cases_and_shows_the_equilibrium_and_its_explanation(lens_env):
    at = open_app("inspect_decision")
    assert [t.value for t in at.title] == ["Inspect a decision"]
    for key in ("insp_input_photo", "insp_input_sensors", "insp_residuals", "insp_probability_path", "insp_dynamics",
                "insp_path", "insp_shapley", "insp_attr_photo", "insp_attr_sensors"):  # fmt: skip
        figure(at, key)
    residuals = figure(at, "insp_residuals")
    assert residuals.layout.yaxis.type == "log"
    assert {"Solver", "Final residual", "IG delta", "Shapley check"} <= {m.label for m in at.metric}

    # A generated case: its explanation sits beside the ideal classifier's, on the same class.
    case = generated_case(at.session_state["case_id"])
    ideal = [d.value for d in at.dataframe if "what it truly shows" in d.value.columns]
    assert len(ideal) == 1
    table = ideal[0]
    assert list(table["input"]) == ["photo", "sensors", "note"]
    assert list(table["what it truly shows"][:2]) == [case.evidence.photo, case.evidence.sensors]
    target = at.selectbox(key=f"insp_target_{case.case_id}")
    explained = target.value
    # The decided class first, then the others from the most to the least likely (the background job's order).
    entry = resources.default_model(resources.list_models(resources.models_root()))
    probabilities = resources.lens(entry).decide(resources.test_case(entry, case.case_id)).probabilities
    assert list(target.options) == [CLASS_NAMES[i] for i in np.argsort(-probabilities, kind="stable")]
    assert explained == target.options[0] == CLASS_NAMES[int(np.argmax(probabilities))]
    reference = ideal_shapley(case, CLASS_NAMES.index(explained))
    assert np.allclose(table["ideal"], reference.values.numpy(), atol=1e-6)
    assert any(c.value.startswith("The ideal classifier decides") for c in at.caption)

    cases = at.selectbox(key="insp_case")
    first, options = cases.value, cases.options
    assert len(options) == TEST_CASES
    at.selectbox(key="insp_case").set_value(options[1].split(" · ")[0]).run()
    assert not at.exception
    assert at.selectbox(key="insp_case").value != first
    assert at.session_state["case_id"] == at.selectbox(key="insp_case").value

    # Only the wrong decisions: every listed case is marked wrong.
    at.segmented_control(key="insp_correctness").set_value("wrong").run()
    assert not at.exception
    listed = at.selectbox(key="insp_case").options if at.selectbox else []
    assert all("✗" in option for option in listed)

    # Replaying the path moves the highlighted iteration.
    at.segmented_control(key="insp_correctness").set_value("all").run()
    slider = at.slider(key="insp_iteration")
    if slider.max > 0:
        at.slider(key="insp_iteration").set_value(0).run()
        assert "At iteration 0" in " ".join(c.value for c in at.caption)


def test_inspect_upload_reports_invalid_files_in_plain_words(lens_env):
    at = open_app("inspect_decision")
    at.radio(key="insp_source").set_value("Upload a case").run()
    assert not at.exception
    assert any("Give every input" in i.value for i in at.info)
    at.text_area(key="upload_note").input("   ").run()
    assert not at.exception


def test_lab_switching_an_input_off_moves_the_variant(lens_env):
    at = open_app("lab")
    assert metric(at, "Equilibrium shift") == "0.0%"
    reference = figure(at, "lab_probabilities")
    np.testing.assert_allclose(reference.data[0].y, reference.data[1].y)

    at.toggle(key="lab_on_photo").set_value(False).run()
    assert not at.exception
    variant = figure(at, "lab_probabilities")
    assert not np.allclose(variant.data[0].y, variant.data[1].y)
    assert metric(at, "Equilibrium shift") != "0.0%"

    at.button(key="lab_keep").click().run()
    assert at.session_state["lab_history"][0]["description"].startswith("photo: drop")
    at.toggle(key="lab_on_photo").set_value(True).run()
    at.button(key="lab_restore").click().run()
    assert at.toggle(key="lab_on_photo").value is False


def test_tuning_a_looser_tolerance_takes_fewer_iterations(lens_env):
    at = open_app("tuning")
    for key in ("tune_case_residuals", "tune_sweep", "tune_equal_compute"):
        figure(at, key)
    at.select_slider(key="tune_tol").set_value(1e-6).run()
    tight = int(metric(at, "Iterations"))
    at.select_slider(key="tune_tol").set_value(1e-1).run()
    assert not at.exception
    loose = int(metric(at, "Iterations"))
    assert loose < tight
    assert "Flips" in {m.label for m in at.metric}


def test_robustness_shows_dose_response_for_every_model_and_filters_by_damage(lens_env):
    at = open_app("robustness")
    curves = figure(at, "robust_curves")
    assert {t.name for t in curves.data} >= {"inspection-deq", "inspection-late"}
    assert len(at.dataframe) == 2 and len(at.get("download_button")) == 2
    at.selectbox(key="robust_kind").set_value("blur").run()
    assert not at.exception
    blurred = figure(at, "robust_curves")
    assert {a.text for a in blurred.layout.annotations} == {"photo"}  # only the picture can be blurred


def test_the_sidebar_names_the_model_and_refuses_a_folder_that_is_not_one(lens_env, tmp_path):
    at = open_app()
    caption = at.sidebar.caption[0].value
    assert "inspection-deq" in caption and "CPU" in caption and "Checksum" in caption
    assert at.sidebar.selectbox(key="model_choice").value == "inspection-deq"

    # AppTest reruns only the page script of an st.navigation app, so the sidebar is driven on a first run.
    other = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    other.session_state["model_choice"] = "Another folder…"
    other.session_state["model_path"] = str(tmp_path)
    other.run()
    assert not other.exception
    assert any("not a model folder" in e.value for e in other.sidebar.error)
    assert [t.value for t in other.title] == ["DEQ Fusion Lens"]  # no page without a model


def test_another_model_under_the_root_is_selectable(lens_env):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "inspection-weight_tied"
    at.run()
    assert not at.exception
    assert "inspection-weight_tied" in at.sidebar.caption[0].value
