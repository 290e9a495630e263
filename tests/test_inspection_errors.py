import json
import sys
from pathlib import Path

import pytest

from deq_core import load_model
from deq_core.data import load_dataset
from deq_core.data.inspection import inspection_cases
from deq_core.evaluate import predict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import inspection_errors  # noqa: E402

LATE = ROOT / "assets" / "models" / "inspection-late"


def test_errors_are_grouped_by_what_the_inputs_truly_show(tmp_path, capsys):
    model = load_model(LATE, "cpu")
    data = load_dataset("inspection", "val")
    wrong = int((~predict(model, data).correct).sum())
    errors = inspection_errors.error_evidence(model, data, [c.evidence for c in inspection_cases("val")])
    assert len(data) == 360 and sum(errors.values()) == wrong > 0
    assert all(truth != said for truth, said, *_ in errors)
    photos = {"clean", "bright line", "dark line", "branched crack", "wear band"}
    assert {photo for _, _, photo, *_ in errors} <= photos

    assert inspection_errors.main(["--model", str(LATE), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert f"inspection-late on val: {wrong} errors of 360" in out and "photo head" in out
    saved = json.loads((tmp_path / "e.json").read_text())
    assert sum(row["count"] for row in saved["errors"]) == wrong
    heads = saved["photo_head"]
    assert set(heads) == photos
    assert all(abs(sum(p.values()) - 1) < 1e-4 for p in heads.values())
    assert heads["bright line"]["scratch"] > 0.9  # a bright line is only ever a scratch


def test_a_model_of_another_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        inspection_errors.main(["--model", str(ROOT / "assets" / "models" / "handwritten-late")])
    assert "trained on 'handwritten'" in capsys.readouterr().err
