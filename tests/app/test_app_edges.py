"""The rough edges a new user hit (issue 23): each one pinned on the pure tables and figures behind it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import frames, plots
from deq_core.engine import Modality


def test_the_models_table_reads_at_a_glance():
    raw = pd.DataFrame({"model": ["deq", "late"], "architecture": ["deq", "late"], "accuracy": [0.96667, 0.96],
                        "macro_f1": [0.95432, 0.9], "latency_ms": [2.8167, 0.51], "iterations_mean": [6.234, np.nan],
                        "iterations_p95": [9.0, np.nan], "converged_fraction": [1.0023, np.nan], "cases": [300, 300]})  # fmt: skip
    shown = frames.display(raw, frames.MODEL_COLUMNS)
    assert not any("_" in title for title in shown.frame.columns)  # no stop_mode, no iterations_mean
    assert list(shown.frame["accuracy (%)"]) == [96.7, 96.0]  # rounded as shown, one decimal
    assert shown.formats["accuracy (%)"] == "%.1f%%" and shown.formats["converged (%)"] == "%.1f%%"
    assert shown.frame["latency ms"].iloc[0] == 2.8 and shown.frame["macro F1"].iloc[0] == 0.954
    assert "architecture" not in shown.frame and "cases" not in shown.frame  # fewer columns: fits 1280 px
    assert len(shown.frame.columns) <= 9


def test_every_table_of_the_pages_has_readable_headers():
    for columns in (frames.MODEL_COLUMNS, frames.SWEEP_COLUMNS, frames.COMPUTE_COLUMNS, frames.ROBUSTNESS_SUMMARY_COLUMNS,
                    frames.ROBUSTNESS_ROW_COLUMNS, frames.STABILITY_COLUMNS):  # fmt: skip
        assert all("_" not in c.title for c in columns.values())
        assert all(c.format() in (None, "%.1f%%") for c in columns.values() if c.kind == "percent")


def test_one_percent_format_everywhere():
    assert frames.percent(0.96) == "96.0%" and frames.percent(0.9667) == "96.7%" and frames.percent(None) == "n/a"
    history = [{"case": "c", "settings": (), "description": "photo off", "decision": "ok", "confidence": 0.9234,
                "iterations": 7, "equilibrium_shift": 1.0531, "P(ok)": 0.9234, "P(crack)": 0.0766}]  # fmt: skip
    shown = frames.lab_history_display(history, ["ok", "crack"])
    assert shown.frame["confidence (%)"].iloc[0] == 92.3 and shown.frame["shift (%)"].iloc[0] == 105.3
    assert "settings" not in shown.frame and shown.frame["variant"].iloc[0] == 1


@pytest.mark.parametrize(("gap", "phrase"), [(0.0, "as many as"), (0.0004, "as many as"), (-0.0004, "as many as"),
                                             (0.015, "1.5 points more than"), (-0.003, "0.3 points fewer than")])
def test_a_tie_reads_as_a_tie(gap, phrase):
    assert frames.against_phrase(gap) == phrase
    assert "0.0 points" not in frames.points_phrase(gap)


def test_equal_compute_accuracy_ticks_are_distinct():
    frame = pd.DataFrame({"f_evaluations": [1, 2, 4, 8], "deq_accuracy": [0.955, 0.962, 0.965, 0.967],
                          "weight_tied_accuracy": [0.958, 0.96, 0.961, 0.97], "deq_evaluations_used": [1, 2, 4, 6],
                          "deq_relative_residual": [1e-1, 1e-2, 1e-3, 1e-4], "weight_tied_relative_residual": [1e-1, 5e-2, 2e-2, 1e-2]})  # fmt: skip
    fig = plots.equal_compute(frame, 4)
    axis = fig.layout.yaxis
    ticks = np.arange(0.9, 1.0001, axis.dtick)
    labels = [f"{t:.1%}" for t in ticks]
    assert axis.tickformat == ".1%" and len(set(labels)) == len(labels)  # no 96%, 96%, 96%
    assert 0.015 / axis.dtick <= 8  # a handful of ticks across the data, not dozens


def test_the_tolerance_label_sits_on_its_line():
    frame = pd.DataFrame({"iteration": [0, 1, 2], "absolute": [1.0, 0.1, 0.0], "relative": [1.0, 1e-2, 1e-5], "run": ""})
    fig = plots.residuals([frame], tolerance=1e-4)
    label = next(a for a in fig.layout.annotations if "tolerance" in a.text)
    assert label.yref == "y" and label.y == pytest.approx(-4)  # log axis: the exponent, where the dashed line is


def test_the_lock_in_label_is_inside_the_plot():
    frame = pd.DataFrame({"iteration": [0, 0, 1, 1, 2, 2], "class": ["a", "b"] * 3, "probability": [0.6, 0.4, 0.2, 0.8, 0.1, 0.9]})
    for lock_in, anchor in ((0, "left"), (2, "right")):
        label = next(a for a in plots.probability_path(frame, lock_in=lock_in).layout.annotations if "locked in" in a.text)
        assert (label.yref, label.y, label.xanchor) == ("y", 0.5, anchor)  # not on the top axis nor the legend


def test_sensor_panels_have_two_readable_ticks_and_a_name_each():
    rng = np.random.default_rng(0)
    series = np.stack([rng.normal(0, 1, 128), 44 + rng.normal(0, 0.3, 128), 3.8 + rng.normal(0, 0.05, 128)])
    fig = plots.sensor_traces(series, ["vibration", "temperature", "motor_current"], height=260)
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        ticks = fig.layout[axis].tickvals
        assert len(ticks) == 2 and ticks[0] < ticks[1]
    names = [a.text for a in fig.layout.annotations]
    assert names == ["vibration", "temperature", "motor current"]
    assert all(a.yanchor == "bottom" and a.y == 1 for a in fig.layout.annotations)


def test_handwritten_features_are_named_by_their_view():
    from deq_core import feature_names
    from deq_core.data import handwritten

    named = {m.name: feature_names(m) for m in handwritten.MODALITIES if m.kind == "vector"}
    assert named["fourier"][0] == "Fourier coefficient 1" and len(named["fourier"]) == 76
    assert named["profile"][215] == "profile correlation 216"
    assert named["karhunen_loeve"][13] == "Karhunen-Loève coefficient 14"
    assert named["zernike"][46] == "Zernike moment 47"
    assert named["morphology"] == tuple(f"morphological feature {k}" for k in range(1, 7))
    assert feature_names(Modality("fourier", "vector", (3,))) == ("feature 0", "feature 1", "feature 2")  # not a view
    assert feature_names(Modality("v", "vector", (2,), feature_names=("a", "b"))) == ("a", "b")


def test_the_six_view_interaction_heatmap_is_legible():
    names = [m.name for m in __import__("deq_core.data", fromlist=["handwritten"]).handwritten.MODALITIES]
    matrix = np.random.default_rng(1).normal(0, 0.05, (6, 6))
    fig = plots.shapley(names, np.zeros(6), matrix)
    heat = fig.data[-1]
    assert all(len(t) <= 5 for row in heat.text for t in row)  # "+0.1": one decimal in a small cell
    assert heat.textfont.size >= 9 and all(len(x) <= 8 for x in heat.x)
    assert "karhunen loeve" in heat.customdata[2][2]  # the full names on hover


def test_attribution_colours_share_the_cases_scale_and_quiet_inputs_are_named():
    photo = np.full((4, 4), 0.02)
    sensors = np.array([[0.4, -0.1]])
    bound = plots.attribution_bound([photo, sensors])
    assert bound == pytest.approx(0.4)
    fig = plots.picture(np.zeros((4, 4)), overlay=photo, bound=bound)
    assert (fig.data[1].zmin, fig.data[1].zmax) == (-0.4, 0.4)  # 0.02 looks faint, not like evidence
    notes = frames.evidence_notes([photo, sensors], ["photo", "sensors"])
    assert list(notes) == ["photo"] and "no notable evidence" in notes["photo"] and "5%" in notes["photo"]
    assert frames.shown_maps([np.ones((1, 2, 2)), np.ones((3, 5))], ["image", "timeseries"])[0].shape == (2, 2)


def test_a_switched_off_inputs_share_is_explained():
    assert frames.absent_share_note(["photo", "sensors"], [0.28, 0.72], []) is None
    note = frames.absent_share_note(["photo", "sensors"], [0.28, 0.72], ["photo"])
    assert "photo" in note and "28.0%" in note and "training average" in note


def test_mcnemar_exact_matches_scipy():
    from scipy.stats import binomtest

    from deq_core.evaluate import mcnemar_exact

    for k, n in ((0, 1), (3, 10), (5, 10), (12, 40), (7, 7), (20, 41)):
        assert mcnemar_exact(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, abs=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
