"""Dataset references reach reports and verification by the model's dataset name, through one registry."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from audit_helpers import audit, issued, key_dir  # noqa: F401  (fixtures)
from conftest import tiny_inputs, tiny_model
from deq_core import save_model
from deq_core.audit import ReportSettings, build_report, record_sha256, verify_report
from deq_core.data import references
from deq_core.explain.shapley import ModalityShapley

SETTINGS = ReportSettings(n_steps=8)
NAMES = ("photo", "sensors", "note", "stats")


@dataclass(frozen=True)
class CountingReference:
    """A made-up reference: v(S) = |S| / 4 of class "b"; what each input "shows" is its mean."""

    label: str
    shows: dict
    probabilities: np.ndarray
    shapley: ModalityShapley

    def sentence(self, model_values) -> str:
        return f"model's first: {max(model_values, key=model_values.get)}"


def counting_reference(case_key, inputs, texts, target, modality_names):
    if not case_key.startswith("ref-"):
        return None
    sizes = torch.tensor([bin(s).count("1") / 4 for s in range(16)])
    shows = {name: f"mean {float(x.float().mean()):.3f}" for name, x in zip(modality_names, inputs)}
    return CountingReference("b", shows, np.array([0.0, 1.0, 0.0]),
                             ModalityShapley.from_coalition_values(sizes, modality_names, ("a", "b", "c"), 1))  # fmt: skip


@pytest.fixture
def registered(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setitem(references._registered, "counting-demo", counting_reference)
    model = tiny_model("deq", dataset="counting-demo").eval()
    return model, save_model(model, tmp_path / "tiny-deq"), tuple(x[:1] for x in tiny_inputs())


def test_the_registry_knows_the_inspection_ideal_and_nothing_for_other_data():
    from deq_core.explain.ideal import ideal_reference

    assert references.reference_provider("inspection") is ideal_reference
    assert references.reference_provider("handwritten") is None
    assert references.dataset_reference("handwritten", "hw-0001", (), {}, None, ()) is None
    with pytest.raises(TypeError, match="not callable"):
        references.register_reference("x", "deq_core.explain.ideal:ideal_reference")


def test_a_registered_reference_is_recorded_and_verified(registered, audit):
    model, folder, case = registered
    report = issued(build_report(model, folder, case, "ref-0", settings=SETTINGS), audit)
    reference = report.record["ideal_reference"]
    assert reference["shapley"] == pytest.approx(dict.fromkeys(NAMES, 0.25))
    assert reference["shows"] == {n: f"mean {float(x.float().mean()):.3f}" for n, x in zip(NAMES, case)}
    assert "Against the ideal classifier" in report.html and html.escape(reference["sentence"]) in report.html
    assert reference["probabilities"] == {"a": 0.0, "b": 1.0, "c": 0.0} and reference["target_class"] == "b"
    model_values = report.record["attribution"]["shapley"]
    assert reference["sentence"] == f"model's first: {max(model_values, key=model_values.get)}"
    result = verify_report(report.record, log=audit)
    assert result.ok and result.checked[-1] == "ideal classifier reference"

    forged = json.loads(report.json_text())
    forged["ideal_reference"]["shapley"]["stats"] = 0.5
    forged["report_sha256"] = record_sha256(forged)
    assert any("ideal reference Shapley value of stats" in p for p in verify_report(forged, log=audit).problems)
    assert "ideal_reference" not in build_report(model, folder, case, "other-0", settings=SETTINGS).record


def test_a_reference_the_models_dataset_cannot_recompute_fails_verification(registered, monkeypatch, audit):
    model, folder, case = registered
    record = issued(build_report(model, folder, case, "ref-0", settings=SETTINGS), audit).record
    monkeypatch.delitem(references._registered, "counting-demo")
    result = verify_report(record, log=audit)
    assert not result.ok and result.problems == ("ideal reference: the model's dataset 'counting-demo' has no reference "
                                                 "to recompute it with",)  # fmt: skip


def test_reports_reach_the_ideal_classifier_only_through_the_registry():
    code = ("import sys, deq_core.audit, deq_core.audit.report, deq_core.audit.verify, deq_core.audit.cli; "
            "print('deq_core.explain.ideal' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
