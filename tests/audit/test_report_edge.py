"""Issue 21 in reports: a decision an exported model made is recorded (hash, K, precision) and re-run by verify."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnxruntime")

from audit_helpers import audit, issued, key_dir, resealed  # noqa: E402, F401  (fixtures)
from conftest import tiny_inputs, tiny_model  # noqa: E402
from deq_core import save_model  # noqa: E402
from deq_core.audit import ReportSettings, build_report, verify_report  # noqa: E402
from deq_core.edge import export_onnx  # noqa: E402
from deq_core.lens import Lens  # noqa: E402

SETTINGS = ReportSettings(n_steps=8)


@pytest.fixture
def saved(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    folder = save_model(model, tmp_path / "tiny-deq")
    onnx = export_onnx(Lens.open(folder, device="cpu"), 6, tmp_path / "tiny.onnx", calibration=tiny_inputs(8, seed=5))
    return model, folder, onnx


@pytest.fixture
def case():
    return tuple(x[:1] for x in tiny_inputs())


def test_a_report_with_an_exported_model_verifies_and_fails_when_the_file_is_swapped(saved, case, audit, tmp_path):
    model, folder, onnx = saved
    report = issued(build_report(model, folder, case, "case-0", settings=SETTINGS, edge=onnx), audit)
    edge = report.record["edge"]
    assert (edge["steps"], edge["precision"], edge["file"]) == (6, "fp32", str(onnx.resolve()))
    assert edge["agrees"] == (edge["class"] == report.record["prediction"]["class"])
    assert sum(edge["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    result = verify_report(report.record, log=audit)
    assert result.ok, result.problems
    assert any("exported model" in c for c in result.checked)
    # the same model exported with another K, put where the report says the file is
    export_onnx(Lens.open(folder, device="cpu"), 2, onnx, calibration=tiny_inputs(8, seed=5))
    problems = verify_report(report.record, log=audit).problems
    assert any("swapped" in p for p in problems), problems
    # pointed at a copy of the original file elsewhere, it verifies again
    original = export_onnx(Lens.open(folder, device="cpu"), 6, tmp_path / "moved.onnx", calibration=tiny_inputs(8, seed=5))
    assert verify_report(report.record, log=audit, edge_file=original).ok


def test_a_forged_edge_decision_fails(saved, case, audit):
    model, folder, onnx = saved
    report = issued(build_report(model, folder, case, "case-0", settings=SETTINGS, edge=onnx), audit)
    forged = json.loads(json.dumps(report.record))
    first = next(iter(forged["edge"]["probabilities"]))
    forged["edge"]["probabilities"][first] += 0.01
    forged["edge"]["steps"] = 60
    problems = verify_report(resealed(forged), log=audit).problems
    assert any(p.startswith("edge.probabilities") for p in problems), problems
    assert any(p.startswith("edge.steps") for p in problems), problems


def test_a_file_of_another_model_is_refused_in_a_report(saved, case, tmp_path):
    model, folder, _ = saved
    other = tiny_model("deq", seed=1).eval()
    other_onnx = export_onnx(Lens(other), 3, tmp_path / "other.onnx", calibration=tiny_inputs(8, seed=5))
    with pytest.raises(ValueError, match="not exported from this model"):
        build_report(model, folder, case, "case-0", settings=SETTINGS, edge=other_onnx)


def test_audit_verify_cli_takes_the_file_s_new_place(saved, case, audit, tmp_path, capsys):
    from deq_core.audit import main

    model, folder, onnx = saved
    issued(build_report(model, folder, case, "case-0", settings=SETTINGS, edge=onnx), audit, tmp_path / "report")
    moved = tmp_path / "station" / "m.onnx"
    moved.parent.mkdir()
    onnx.rename(moved)
    db = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    assert main(["verify", str(tmp_path / "report" / "report.json"), "--db", db]) == 1
    assert "is missing" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "report" / "report.json"), "--db", db, "--onnx", str(moved)]) == 0
    assert "exported model" in capsys.readouterr().out
