"""Decision reports: round trip through verify, tampering detected, determinism within and across processes."""

from __future__ import annotations

import csv
import html
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from audit_helpers import audit, issued, key_dir  # noqa: F401  (fixtures)
from conftest import tiny_inputs, tiny_model
from deq_core import save_model
from deq_core.audit import AuditLog, ReportSettings, build_report, log_report, main, record_sha256, tensor_sha256, verify_report
from deq_core.audit.hashing import embed_tensor, unembed_tensor
from deq_core.audit.html import render_html
from deq_core.engine.checkpoint import WEIGHTS
from deq_core.engine.text import tokenize
from deq_core.explain.corrupt import CorruptionSet, corrupt

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "assets" / "models" / "handwritten-deq"
SETTINGS = ReportSettings(n_steps=8)
DECISION_FIELDS = ("prediction", "attribution", "trajectory", "reliability")


@pytest.fixture
def saved(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    return model, save_model(model, tmp_path / "tiny-deq")


@pytest.fixture
def case():
    return tuple(x[:1] for x in tiny_inputs())


def write(report, folder: Path) -> Path:
    json_path, html_path = report.write(folder)
    assert len(report.html) > 1_000_000  # the page handed out alone inlines plotly.js ...
    assert html_path.stat().st_size < 200_000  # ... the one on disk reads the copy beside it
    assert (folder / "plotly.min.js").stat().st_size > 1_000_000
    return json_path


def test_tensor_hash_is_canonical_and_embedding_is_exact():
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    assert tensor_sha256(x) == tensor_sha256(x.clone())
    assert tensor_sha256(x) != tensor_sha256(x.double())  # dtype is part of the identity
    assert tensor_sha256(x) != tensor_sha256(x.reshape(3, 2))  # and so is the shape
    assert tensor_sha256(x.t().contiguous().t()) == tensor_sha256(x)  # memory layout is not
    back = unembed_tensor(embed_tensor(x))
    assert back.dtype == x.dtype and torch.equal(back, x)
    tokens = torch.tensor([3, 1, 0], dtype=torch.int64)
    assert torch.equal(unembed_tensor(embed_tensor(tokens)), tokens)


def test_report_verifies_from_its_record_alone(saved, case, tmp_path, audit):
    model, folder = saved
    note = model.config.modalities[2]  # the text shown must be the text whose tokens the model read
    case = (*case[:2], torch.tensor([tokenize("bearing noise", note.vocabulary, note.shape[0])]), case[3])
    report = build_report(model, folder, case, "case-0", texts={"note": "bearing noise"}, settings=SETTINGS)
    report = issued(report, audit)
    record = json.loads(write(report, tmp_path / "out").read_text())
    assert record["report_sha256"] == record_sha256(record) == report.sha256
    assert set(record["model"]["files"]) == {"weights.safetensors", "config.json"}
    assert [m["name"] for m in record["inputs"]["modalities"]] == ["photo", "sensors", "note", "stats"]
    assert set(record["environment"]) >= {"device", "python", "torch", "captum", "numpy"}
    assert record["trajectory"]["iterations"] == len(record["trajectory"]["relative_residuals"])
    shapley = record["attribution"]["shapley"]
    assert abs(sum(shapley.values()) - (record["attribution"]["full_value"] - record["attribution"]["empty_value"])) < 1e-6
    assert "<script" in report.html and "Decision report: case-0" in report.html
    result = verify_report(record, log=audit)
    assert result.ok, result.problems


def test_a_corrupted_variant_records_its_spec_and_replays_it(saved, case, audit):
    model, folder = saved
    corruption = CorruptionSet((corrupt("photo", "blur", 0.6), corrupt("stats", "gaussian_noise", 0.5, seed=3)))
    report = issued(build_report(model, folder, case, "case-0", corruption=corruption, settings=SETTINGS), audit)
    record = json.loads(report.json_text())
    assert CorruptionSet.from_dict(record["corruption"]["spec"]) == corruption
    # the recorded inputs are the untouched case; the model saw the corrupted one
    assert record["inputs"]["modalities"][0]["sha256"] == tensor_sha256(case[0][0])
    assert record["corruption"]["model_inputs_sha256"]["photo"] != tensor_sha256(case[0][0])
    assert verify_report(record, log=audit).ok
    record["corruption"]["spec"]["specs"][0]["severity"] = 0.7
    record["report_sha256"] = record_sha256(record)  # even with a consistent own hash, the spec hash catches it
    result = verify_report(record, log=audit)
    assert not result.ok and any("corruption spec" in p for p in result.problems)


def test_changed_weights_fail_verification_naming_the_weights_hash(saved, case, tmp_path, capsys, audit):
    model, folder = saved
    json_path = write(issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit), tmp_path / "out")
    assert main(["verify", str(json_path), "--db", audit.url]) == 0
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    save_model(model, folder)  # a consistent, loadable folder: only the report notices
    assert main(["verify", str(json_path), "--db", audit.url]) == 1
    output = capsys.readouterr().out
    assert "FAILED" in output and "weights.safetensors SHA-256" in output


def test_an_edited_report_fails_its_own_hash(saved, case, tmp_path, capsys, audit):
    model, folder = saved
    json_path = write(issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit), tmp_path / "out")
    record = json.loads(json_path.read_text())
    classes = list(record["prediction"]["probabilities"])
    record["prediction"]["class"] = next(c for c in classes if c != record["prediction"]["class"])
    json_path.write_text(json.dumps(record))
    assert main(["verify", str(json_path), "--db", audit.url]) == 1
    assert "report SHA-256" in capsys.readouterr().out


def test_a_forged_result_with_a_recomputed_hash_fails_the_rerun(saved, case, audit):
    model, folder = saved
    record = json.loads(issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit).json_text())
    name = next(iter(record["attribution"]["shapley"]))
    record["attribution"]["shapley"][name] += 1e-3
    record["report_sha256"] = record_sha256(record)
    result = verify_report(record, log=audit)
    assert not result.ok and any(f"Shapley value of {name}" in p for p in result.problems)


def test_edited_embedded_input_is_detected(saved, case, audit):
    model, folder = saved
    record = json.loads(issued(build_report(model, folder, case, "case-0", settings=SETTINGS), audit).json_text())
    entry = record["inputs"]["modalities"][3]
    entry["base64"] = embed_tensor(case[3][0] + 1)["base64"]
    record["report_sha256"] = record_sha256(record)
    result = verify_report(record, log=audit)
    assert not result.ok and any("embedded inputs" in p for p in result.problems)


def test_an_edited_log_row_fails_verify_log_through_the_cli(saved, case, tmp_path, capsys):
    model, folder = saved
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    log = AuditLog(url)
    report = build_report(model, folder, case, "case-0", settings=SETTINGS)
    for _ in range(3):
        log_report(report, log, "report.json")
    assert main(["verify-log", "--db", url]) == 0
    connection = sqlite3.connect(tmp_path / "audit.sqlite")
    connection.execute("DROP TRIGGER audit_entries_no_update")
    connection.execute("UPDATE audit_entries SET prediction = 'forged' WHERE id = 2")
    connection.commit()
    connection.close()
    capsys.readouterr()
    assert main(["verify-log", "--db", url]) == 1
    assert "entry 2: content does not match" in capsys.readouterr().out


def decision(record: dict) -> dict:
    return {k: record[k] for k in DECISION_FIELDS}


def test_same_case_model_and_settings_give_identical_decisions(saved, case):
    model, folder = saved
    first = build_report(model, folder, case, "case-0", settings=SETTINGS).record
    second = build_report(model, folder, case, "case-0", settings=SETTINGS).record
    assert json.dumps(decision(first), sort_keys=True) == json.dumps(decision(second), sort_keys=True)


@pytest.mark.skipif(not (SHIPPED / WEIGHTS).is_file(), reason="no shipped handwritten-deq model")
def test_cli_reports_are_bit_identical_across_processes_and_logged(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(out: Path, *cases: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "deq_core.audit", "report", "--model", str(SHIPPED), "--out", str(out),
                   "--steps", "8", "--db", url, *cases]  # fmt: skip
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first, second = run(tmp_path / "one", "--case", "hw-0004"), run(tmp_path / "two", "--case", "hw-0004")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a = json.loads((tmp_path / "one" / "report.json").read_text())
    b = json.loads((tmp_path / "two" / "report.json").read_text())
    assert json.dumps(decision(a), sort_keys=True) == json.dumps(decision(b), sort_keys=True)

    several = run(tmp_path / "many", "--cases", "hw-0004,hw-0005")
    assert several.returncode == 0, several.stderr
    with open(tmp_path / "many" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ["hw-0004", "hw-0005"]
    assert (tmp_path / "many" / "hw-0005" / "report.html").is_file()

    entries = AuditLog(url).entries()
    assert [e.case_id for e in entries] == ["hw-0005", "hw-0004", "hw-0004", "hw-0004"]
    assert entries[-1].report_sha256 == a["report_sha256"]
    verified = subprocess.run([sys.executable, "-m", "deq_core.audit", "verify", str(tmp_path / "one" / "report.json"), "--db", url],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    logged = subprocess.run([sys.executable, "-m", "deq_core.audit", "verify-log", "--db", url],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert logged.returncode == 0 and "4 entries" in logged.stdout


INSPECTION_LATE = REPO / "assets" / "models" / "inspection-late"


def test_a_generated_inspection_case_carries_the_ideal_reference_and_it_is_verified(audit):
    from deq_core import load_model
    from deq_core.data import load_dataset

    torch.set_num_threads(1)
    model, data = load_model(INSPECTION_LATE, "cpu"), load_dataset("inspection", "test")
    inputs, texts = tuple(x[7:8] for x in data.inputs), {"note": data.texts["note"][7]}
    report = issued(build_report(model, INSPECTION_LATE, inputs, data.ids[7], texts=texts, settings=SETTINGS), audit)
    reference = report.record["ideal_reference"]
    assert reference["shows"] == {"photo": "bright line", "sensors": "normal", "note": "names scratch"}
    assert reference["target_class"] == report.record["attribution"]["target_class"] == "scratch"
    assert sum(reference["shapley"].values()) == pytest.approx(1 - 1 / 6, abs=1e-6)  # certain, from the uniform prior
    assert html.escape("What the inputs truly show (the generator's record): photo: bright line") in report.html
    assert "Against the ideal classifier" in report.html and html.escape(reference["sentence"]) in report.html
    verification = verify_report(report.record, log=audit)
    assert verification.checked[-1] == "ideal classifier reference"
    assert verification.ok, verification.problems

    forged = json.loads(json.dumps(report.record))
    forged["ideal_reference"]["shapley"]["note"] += 0.2
    forged["report_sha256"] = record_sha256(forged)
    assert any("ideal reference Shapley value of note" in p for p in verify_report(forged, log=audit).problems)

    # Altered inputs no longer show what the generator recorded: no reference, nothing claimed.
    variant = build_report(model, INSPECTION_LATE, inputs, data.ids[7], texts=texts, settings=SETTINGS,
                           corruption=CorruptionSet((corrupt("photo", "gaussian_noise", 0.5),)))  # fmt: skip
    assert "ideal_reference" not in variant.record
    other = build_report(model, INSPECTION_LATE, inputs, data.ids[8], texts=texts, settings=SETTINGS)
    assert "ideal_reference" not in other.record


def test_reports_of_other_data_have_no_ideal_reference(saved, case):
    model, folder = saved
    record = build_report(model, folder, case, "insp-test-0000", settings=SETTINGS).record
    assert "ideal_reference" not in record and "Against the ideal classifier" not in render_html(record)
