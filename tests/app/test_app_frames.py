"""app.frames: the pure tables and arrays behind the pages."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from app import frames

CLASSES = ("ok", "scratch", "crack")
# rows: true class, columns: predicted. 10 ok (2 flagged), 10 scratch (1 passed, 3 called crack), 10 crack (4 passed).
CONFUSION = [[8, 1, 1], [1, 6, 3], [4, 0, 6]]


def evaluation(name: str, confusion, architecture: str = "deq"):
    return SimpleNamespace(confusion_matrix=confusion, classes=list(CLASSES), architecture=architecture, name=name)


def test_error_rates_split_false_alarms_misses_and_wrong_faults():
    rates = frames.error_counts(CONFUSION, CLASSES, "ok")
    assert rates["false_alarm"] == pytest.approx(2 / 30)
    assert rates["miss"] == pytest.approx(5 / 30)
    assert rates["wrong_fault"] == pytest.approx(3 / 30)
    plain = frames.error_counts(CONFUSION, CLASSES, None)
    assert plain == {"false_alarm": 0.0, "miss": 0.0, "wrong_fault": pytest.approx(10 / 30)}


def test_monthly_cost_and_saving_follow_the_prices():
    perfect = [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    evaluations = {"deq": evaluation("deq", perfect), "late": evaluation("late", CONFUSION, "late")}
    costs = frames.CostInputs(cases_per_month=3000, false_alarm_cost=10.0, miss_cost=100.0)
    table = frames.monthly_cost_table(evaluations, costs, "ok")
    late = table.set_index("model").loc["late"]
    assert late["false_alarms_per_month"] == pytest.approx(200)
    assert late["misses_per_month"] == pytest.approx(500)
    assert late["monthly_cost"] == pytest.approx(200 * 10 + 500 * 100)
    assert frames.saving_over(table, "deq", "late") == pytest.approx(52_000)
    assert frames.saving_over(table, "late", "deq") == pytest.approx(-52_000)


@pytest.mark.parametrize(("retained", "letter"), [(1.0, "A"), (0.9, "A"), (0.89, "B"), (0.75, "B"), (0.6, "C"), (0.2, "D")])
def test_grades_cut_at_the_documented_shares(retained, letter):
    assert frames.grade(retained)[0] == letter


def test_robustness_grades_speak_of_one_model_only():
    summary = pd.DataFrame({
        "model": ["a", "a", "b"], "modality": ["photo", "note", "photo"], "clean_accuracy": [0.9, 0.9, 0.8],
        "worst_accuracy": [0.85, 0.3, 0.1], "retained_accuracy": [0.97, 0.55, 0.4],
    })  # fmt: skip
    grades = frames.robustness_grades(summary, "a")
    assert list(grades["modality"]) == ["photo", "note"] and list(grades["grade"]) == ["A", "D"]
    assert "55.0%" in grades["sentence"].iloc[1] and "30.0%" in grades["sentence"].iloc[1]


def test_principal_path_of_a_straight_walk_is_one_dimensional():
    direction = np.random.default_rng(0).normal(size=16)
    states = np.outer(np.linspace(0, 1, 9) ** 2, direction)  # slowing down along one line
    path = frames.principal_path(states)
    assert path.explained[0] == pytest.approx(1.0)
    np.testing.assert_allclose(path.points[:, 1], 0, atol=1e-9)
    distances = np.linalg.norm(np.diff(path.points, axis=0), axis=1)
    np.testing.assert_allclose(distances, np.linalg.norm(np.diff(states, axis=0), axis=1))  # lengths are kept
    assert (path.points[-1] >= 0).all()
    still = frames.principal_path(np.ones((4, 3)))
    assert not still.points.any() and not still.explained.any()


def test_case_filters_combine():
    table = pd.DataFrame({
        "case": list("abcd"), "label": ["ok", "crack", "crack", "ok"], "predicted": ["ok", "ok", "crack", "crack"],
        "correct": [True, False, True, False], "confidence": [0.9, 0.4, 0.7, 0.5], "iterations": [5, 20, 8, 12],
    })  # fmt: skip
    assert list(frames.filter_cases(table)["case"]) == list("abcd")
    assert list(frames.filter_cases(table, ["crack"], "wrong")["case"]) == ["b"]
    assert list(frames.filter_cases(table, low_confidence_below=0.6)["case"]) == ["b", "d"]
    assert list(frames.filter_cases(table, slow_from_iterations=12)["case"]) == ["b", "d"]
    assert "✗" in frames.case_label(table.iloc[1]) and "40.0%" in frames.case_label(table.iloc[1])


def test_equilibrium_shift_compares_the_states_the_decisions_came_from():
    reference = SimpleNamespace(states=np.array([[[0.0, 0.0]], [[3.0, 4.0]]]), best_iteration=1)
    variant = SimpleNamespace(states=np.array([[[0.0, 0.0]], [[9.0, 9.0]], [[3.0, 0.0]]]), best_iteration=2)
    assert frames.equilibrium_shift(reference, variant) == pytest.approx(4 / 5)
    assert frames.equilibrium_shift(reference, reference) == 0.0


def test_pure_layers_import_neither_streamlit_nor_torch():
    code = "import sys, app.frames, app.plots; bad = {'streamlit', 'torch'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=frames.__file__.rsplit("/app/", 1)[0])


def test_the_ideal_comparison_sets_the_models_values_beside_the_ideals():
    import torch

    from deq_core.data.inspection import CLASS_NAMES, inspection_cases
    from deq_core.explain.ideal import ideal_reference
    from deq_core.explain.shapley import ModalityShapley

    case = inspection_cases("test")[0]  # a good part: clean, normal, vague
    inputs = (torch.from_numpy(case.photo / 255).float()[None, None], torch.from_numpy(case.sensors)[None], None)
    reference = ideal_reference(case.case_id, inputs, {"note": case.note}, target=0)
    values = torch.tensor([0.1, 0.2, 0.2, 0.9, 0.8, 0.85, 0.9, 0.95], dtype=torch.float64)
    model = ModalityShapley.from_coalition_values(values, ("photo", "sensors", "note"), CLASS_NAMES, target=0)
    table = frames.ideal_comparison(model, reference)
    assert list(table.columns) == ["input", "what it truly shows", "model", "ideal"]
    assert list(table["what it truly shows"]) == ["clean", "normal", "vague"]
    assert np.allclose(table["model"], model.values.numpy()) and np.allclose(table["ideal"], reference.shapley.values)
    other = ModalityShapley.from_coalition_values(values, ("photo", "sensors", "note"), CLASS_NAMES, target=5)
    with pytest.raises(ValueError, match="class 5, the ideal reference class 0"):
        frames.ideal_comparison(other, reference)


def test_evaluation_table_names_each_models_encoders():
    evaluation = SimpleNamespace(
        architecture="deq", accuracy=0.9, macro_f1=0.9, false_alarm_rate=0.0, miss_rate=0.0, latency_ms_median=1.0,
        iterations_mean=5.0, iterations_p95=7, converged_fraction=1.0, n=10,
    )  # fmt: skip
    table = frames.evaluation_table({"a": evaluation, "b": evaluation}, {"a": "photo: CNN, global pooling"})
    assert table["encoders"].tolist() == ["photo: CNN, global pooling", ""]
    assert frames.evaluation_table({"a": evaluation})["encoders"].tolist() == [""]
    assert frames.encoders_caption(table) == ("Image pooling: photo: CNN, global pooling (a); not stated (b). Models "
                                              "that read the photo differently are not compared on equal terms.")  # fmt: skip
    table["encoders"] = "global"
    assert frames.encoders_caption(table) == "Image pooling: global, the same for every model."
    assert frames.encoders_caption(frames.evaluation_table({"a": evaluation})) == ""
