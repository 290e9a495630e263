"""ReportRecord: the typed record writes exactly the JSON a report has, and reading one back names any bad field."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from audit_helpers import key_dir  # noqa: F401  (fixture)
from conftest import tiny_inputs, tiny_model
from deq_core import save_model
from deq_core.audit import ReportRecord, ReportSettings, build_report, record_sha256, verify_report
from deq_core.explain.corrupt import CorruptionSet, corrupt

SETTINGS = ReportSettings(n_steps=8)
# The order every report has written its fields in (the hash is over sorted keys, but
# readers of report.record see this order, and a reordering would be a silent change).
TOP_LEVEL = ["format", "version", "created_at", "case_id", "source", "model", "inputs", "corruption", "settings",
             "environment", "prediction", "trajectory", "attribution", "reliability", "tolerances", "stability", "report_sha256"]  # fmt: skip


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    folder = save_model(model, tmp_path_factory.mktemp("record") / "tiny-deq")
    case = tuple(x[:1] for x in tiny_inputs())
    plain = build_report(model, folder, case, "case-0", texts={"note": "bearing noise"}, settings=SETTINGS, label=1)
    corrupted = build_report(model, folder, case, "case-0", settings=SETTINGS, source={"dataset": "tiny"},
                             corruption=CorruptionSet((corrupt("photo", "blur", 0.6),)))  # fmt: skip
    return plain, corrupted


def test_to_dict_round_trips_exactly_keys_order_and_values(records):
    for report in records:
        as_json = json.loads(report.json_text())
        again = ReportRecord.from_dict(as_json)
        assert again == report.data
        assert again.to_dict() == as_json
        assert list(report.record) == TOP_LEVEL
        assert json.dumps(ReportRecord.from_dict(report.record).to_dict()) == json.dumps(report.record)  # order kept
        assert again.content_sha256() == record_sha256(as_json) == report.sha256


def test_the_typed_fields_carry_the_recorded_values(records):
    plain, corrupted = records
    data = plain.data
    assert data.prediction.class_name == plain.record["prediction"]["class"] == plain.predicted_class
    assert data.prediction.confidence == plain.record["prediction"]["probabilities"][data.prediction.class_name]
    assert data.prediction.label == plain.record["prediction"]["label"] is not None
    assert data.inputs.names == ("photo", "sensors", "note", "stats")
    assert data.corruption is None and plain.record["corruption"] is None
    assert corrupted.data.corruption.spec == CorruptionSet((corrupt("photo", "blur", 0.6),))
    assert corrupted.data.corruption.description == tuple(corrupted.record["corruption"]["description"])
    assert ReportSettings.from_recorded(data.settings) == SETTINGS  # the model's own solver stays the model's own


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r["prediction"].__setitem__("index", "1"), "prediction.index"),
        (lambda r: r["prediction"].__setitem__("class", "no such class"), "prediction.class"),
        (lambda r: r["attribution"]["shapley"].__setitem__("photo", None), "attribution.shapley.photo"),
        (lambda r: r["inputs"]["modalities"][1].pop("sha256"), "inputs.modalities[1].sha256"),
        (lambda r: r["trajectory"]["relative_residuals"].append("small"), "trajectory.relative_residuals["),
        (lambda r: r["settings"]["solver"].__setitem__("speed", 2), "settings.solver"),
        (lambda r: r["reliability"].__setitem__("reliable", 1), "reliability.reliable"),
        (lambda r: r.__setitem__("comment", "hi"), "comment"),
        (lambda r: r.pop("tolerances"), "tolerances"),
        (lambda r: r.__setitem__("format", "something/else"), "format"),
    ],
)
def test_from_dict_names_the_bad_field(records, edit, field):
    record = copy.deepcopy(records[0].record)
    edit(record)
    with pytest.raises(ValueError, match=re.escape(f"field '{field}")):
        ReportRecord.from_dict(record)


def test_verify_reports_an_unreadable_record_as_a_problem(records):
    record = copy.deepcopy(records[0].record)
    record["reliability"]["iterations"] = "six"
    record["report_sha256"] = record_sha256(record)
    result = verify_report(record)
    assert not result.ok and result.problems == (
        "report record unreadable: report record field 'reliability.iterations': expected an integer, got str 'six'",
    )
