"""The model card: owner fields, measured sections, Markdown/HTML/PDF, the CLI (deq_core.card, deq_core.pdf)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deq_core.card import (
    PLACEHOLDER, CardFieldsError, CardOptions, build_card, card_html, card_markdown, main, per_class_metrics,
    read_owner_fields, sections,
)  # fmt: skip

MODEL = Path(__file__).resolve().parents[1] / "assets" / "models" / "inspection-deq"
OPTIONS = CardOptions(stability_cases=3, faithfulness_cases=2)


def pdf_text_and_pixels(data: bytes) -> tuple[str, list]:
    """Every page's text (pdfium's extraction) and each page rendered to an image, as a reader would see it."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    texts, images = [], []
    for page in document:
        texts.append(page.get_textpage().get_text_range())
        images.append(page.render(scale=0.5).to_pil())
    return "\n".join(texts), images


@pytest.fixture(scope="module")
def card():
    from deq_core import Lens

    return build_card(Lens.open(MODEL), OPTIONS)


def test_per_class_metrics_from_a_confusion_matrix():
    rows = per_class_metrics([[8, 2], [1, 9]], ("ok", "bad"))
    assert rows[0] == {"class": "ok", "support": 10, "precision": pytest.approx(8 / 9), "recall": 0.8,
                       "f1": pytest.approx(2 * (8 / 9) * 0.8 / (8 / 9 + 0.8))}  # fmt: skip
    assert per_class_metrics([[0, 0], [0, 3]], ("a", "b"))[0]["recall"] is None


def test_owner_fields_are_read_and_bad_ones_refused(tmp_path):
    assert set(read_owner_fields(tmp_path).values()) == {None}
    (tmp_path / "card.json").write_text(json.dumps({"owner": "QA team", "caveats": "  "}))
    fields = read_owner_fields(tmp_path)
    assert fields["owner"] == "QA team" and fields["caveats"] is None
    for bad, message in (({"ownr": "x"}, "unknown field 'ownr'"), ({"owner": 3}, "must be text"), ([], "object")):
        (tmp_path / "card.json").write_text(json.dumps(bad))
        with pytest.raises(CardFieldsError, match=message):
            read_owner_fields(tmp_path)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(CardFieldsError, match="not valid JSON"):
        read_owner_fields(tmp_path)


def test_card_sections_follow_mitchell_and_carry_measured_figures(card):
    titles = [s.title for s in sections(card)]
    for expected in ("Model details", "Intended use", "Factors", "Metrics", "Metrics by class", "Evaluation data",
                     "Training data", "Ethical considerations", "Caveats and recommendations"):  # fmt: skip
        assert expected in titles
    assert any("robustness" in t for t in titles) and any("faithfulness" in t for t in titles)
    m = card.measured
    assert [r["class"] for r in m["per_class"]] == list(card.classes)
    assert sum(r["support"] for r in m["per_class"]) == m["evaluation"]["n"] == 300
    assert {r["modality"] for r in m["robustness"]} == {"photo", "sensors", "note"}
    assert m["stability"]["cases"] == 3 and 0.0 <= m["stability"]["stable_unique_fraction"] <= 1.0
    assert m["faithfulness"]["n"] == 2


def test_markdown_has_hugging_face_front_matter_and_marked_placeholders(card):
    text = card_markdown(card)
    # The card says which encoder reads each input, as the model's config builds them.
    pooling = json.loads((MODEL / "config.json").read_text())["encoder"].get("image_pooling", "grid")
    assert card.encoders.startswith(f"photo: CNN, {'4x4 grid' if pooling == 'grid' else 'global'} pooling;")
    assert f"Encoders: {card.encoders}." in text and "sensors: 1-D CNN" in text
    head, body = text.split("---\n", 2)[1:]
    assert "license:" in head and "model-index:" in head and "stable_unique_equilibrium_share" in head
    assert f"value: {card.measured['evaluation']['accuracy']:.4f}" in head
    assert "## Metrics by class" in body and "| crack |" in body
    assert body.count(PLACEHOLDER) >= len(card.missing_owner_fields)
    html = card_html(card)
    assert html.startswith("<!DOCTYPE html>") and 'class="placeholder"' in html and "http" not in html


def test_owner_text_replaces_the_placeholder(card, tmp_path):
    import dataclasses

    owned = dataclasses.replace(card, owner={**card.owner, "intended_use": "Triage of flange photos by QA staff."})
    text = card_markdown(owned)
    assert "Triage of flange photos by QA staff." in text and "intended_use" not in owned.missing_owner_fields


def test_card_pdf_renders_with_its_text_and_figures(card):
    from deq_core.pdf import card_pdf

    text, pages = pdf_text_and_pixels(card_pdf(card))
    assert "Model card: inspection-deq" in text and "Metrics by class" in text and "Recall by class" in text
    assert "TO BE COMPLETED BY THE MODEL OWNER" in text and "stable equilibrium" in text
    ink = [int((np.asarray(page.convert("L")) < 200).sum()) for page in pages]
    assert all(i > 500 for i in ink)  # every page is drawn, not blank


def test_cli_writes_all_four_files(tmp_path, capsys):
    assert main(["--model", str(MODEL), "--out", str(tmp_path), "--stability-cases", "3", "--faithfulness-cases", "2"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 96.0% on 300 test cases" in out and "owner fields still placeholders" in out
    for name in ("README.md", "model_card.html", "model_card.json", "model_card.pdf"):
        assert (tmp_path / name).stat().st_size > 500
    assert (tmp_path / "model_card.pdf").read_bytes().startswith(b"%PDF")


def test_cli_refuses_a_bad_card_json(tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    (folder / "card.json").write_text('{"licence": "mit"}')
    assert main(["--model", str(folder), "--out", str(tmp_path / "out"), "--stability-cases", "3",
                 "--faithfulness-cases", "2"]) == 2  # fmt: skip
    assert "unknown field 'licence'" in capsys.readouterr().err


def test_card_options_refuse_nothing_to_measure(capsys):
    with pytest.raises(ValueError, match="stability cases must be at least 1"):
        CardOptions(stability_cases=0)
    with pytest.raises(ValueError, match="include 0"):
        CardOptions(robustness_severities=(0.5, 1.0))
    assert main(["--model", str(MODEL), "--out", "/nonexistent/x", "--faithfulness-cases", "0"]) == 2
    assert "faithfulness cases must be at least 1" in capsys.readouterr().err
