"""The decision report as PDF: built from the record alone, rendered to pixels and read back as text."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audit_helpers import audit, issued, key_dir  # noqa: F401  (fixtures)
from conftest import tiny_inputs, tiny_model
from deq_core import save_model
from deq_core.audit import ReportSettings, build_report, main
from deq_core.audit.pdf import PDF_NAME, report_pdf
from deq_core.pdf import latin1


def pdf_pages(data: bytes) -> tuple[str, list[np.ndarray]]:
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    text = "\n".join(page.get_textpage().get_text_range() for page in document)
    return text, [np.asarray(page.render(scale=0.5).to_pil().convert("L")) for page in document]


@pytest.fixture
def report(tmp_path, audit):
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    folder = save_model(model, tmp_path / "tiny-deq")
    built = build_report(model, folder, tuple(x[:1] for x in tiny_inputs()), "case-7",
                         settings=ReportSettings(n_steps=8), label=1)  # fmt: skip
    return issued(built, audit, tmp_path / "report")


def test_pdf_carries_the_records_decision_hash_and_figures(report):
    text, pages = pdf_pages(report_pdf(report))
    record = report.data
    assert "Decision report: case case-7" in text
    assert record.report_sha256 in text.replace("\n", "").replace("\r", "")
    assert f"decided {record.prediction.class_name} with probability {record.prediction.confidence:.1%}" in text
    assert "Class probabilities" in text and "Modality Shapley values" in text and "Relative residual" in text
    assert "Signed and recorded in the audit log." in text
    assert all((page < 200).sum() > 500 for page in pages)


def test_pdf_of_a_json_dict_matches_the_pdf_of_the_record(report):
    from_dict, _ = pdf_pages(report_pdf(json.loads(report.json_text())))
    from_record, _ = pdf_pages(report_pdf(report.data))
    assert from_dict == from_record


def test_an_edited_record_is_refused_not_printed(report):
    record = json.loads(report.json_text())
    record["prediction"]["class"] = "no such class"
    with pytest.raises(ValueError, match="prediction.class"):
        report_pdf(record)


def test_cli_pdf_of_an_existing_report(report, tmp_path, capsys):
    assert main(["pdf", str(tmp_path / "report" / "report.json")]) == 0
    written = tmp_path / "report" / PDF_NAME
    assert capsys.readouterr().out.strip() == str(written) and written.read_bytes().startswith(b"%PDF")
    (tmp_path / "bad.json").write_text("{}")
    assert main(["pdf", str(tmp_path / "bad.json")]) == 1
    assert "error:" in capsys.readouterr().err


def test_latin1_spells_out_symbols_the_core_fonts_lack():
    assert latin1("−€4,000 × 2 ≥ 1 ✓") == "-EUR 4,000 x 2 >= 1 ok"
    assert latin1("日本") == "??"


def test_cli_report_with_pdf_writes_it_beside_the_signed_record(tmp_path, capsys):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "assets" / "models" / "handwritten-deq"
    out = tmp_path / "report"
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    assert main(["report", "--model", str(shipped), "--case", "hw-0004", "--out", str(out), "--steps", "8",
                 "--db", url, "--pdf"]) == 0  # fmt: skip
    record = json.loads((out / "report.json").read_text())
    text, _ = pdf_pages((out / PDF_NAME).read_bytes())
    assert "case hw-0004" in text and record["report_sha256"] in text.replace("\n", "").replace("\r", "")
