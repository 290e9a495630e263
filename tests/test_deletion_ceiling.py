import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deq_core import load_model
from deq_core.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import deletion_ceiling  # noqa: E402

MODELS = ROOT / "assets" / "models"


def test_the_ideal_classifier_fails_deletion_only_on_ties():
    ideal = deletion_ceiling.ideal_ceiling("val")
    assert ideal.accuracy > 0.99  # the evidence table's ceiling
    disagreements = sum(ideal.disagreements.values())
    assert disagreements > 0 and ideal.near_ties == disagreements
    assert ideal.deletion_agreement == pytest.approx(1 - disagreements / 360)
    assert ideal.agreement_without_near_ties == 1.0
    assert ideal.ideal_top_agreement == ideal.ideal_ranking_agreement == 1.0 and 0 < ideal.ranked < 360
    # Nothing observed: the uniform prior; everything observed: nearly certain.
    assert ideal.coalition_log_loss["none"] == pytest.approx(math.log(6))
    assert ideal.coalition_log_loss["photo+sensors+note"] < 0.05


def test_a_models_row_reads_the_same_probabilities_as_its_evaluation(tmp_path, capsys):
    folder = MODELS / "inspection-late"
    row = deletion_ceiling.model_ceiling(folder, "val", cases=60)
    rows = torch.tensor(deletion_ceiling.spread_rows(360, 60))
    assert len(rows) == 60 and rows[0] == 0 and rows[-1] == 359
    model, data = load_model(folder, "cpu"), load_dataset("inspection", "val")
    with torch.no_grad():
        logits = model(*(x[rows] for x in data.inputs))
    labels = data.labels[rows]
    assert row.accuracy == pytest.approx(float((logits.argmax(1) == labels).double().mean()))
    full_loss = float(F.cross_entropy(logits.double(), labels))
    assert row.coalition_log_loss["photo+sensors+note"] == pytest.approx(full_loss, rel=1e-4)
    assert list(row.coalition_log_loss) == deletion_ceiling.coalition_names(("photo", "sensors", "note"))
    assert 0 <= row.deletion_agreement <= 1 and row.near_ties <= sum(row.disagreements.values())
    assert 0 < row.ranked <= 60 and 0 <= row.ideal_ranking_agreement <= row.ideal_top_agreement <= 1

    out = tmp_path / "ceiling.json"
    assert deletion_ceiling.main(["--model", str(folder), "--cases", "30", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ideal: accuracy" in printed and "inspection-late: accuracy" in printed
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert saved["cases"] == 30
    assert [r["name"] for r in rows] == ["ideal", "inspection-late"]
    assert rows[1]["name"] == "inspection-late" and 0 <= rows[1]["deletion_agreement"] <= 1
    assert deletion_ceiling.ideal_ceiling("val", 30).deletion_agreement == pytest.approx(rows[0]["deletion_agreement"])


@pytest.mark.parametrize("folder, cases, message", [("handwritten-late", "5", "trained on 'handwritten'"),
                                                    ("no-such-model", "5", "is not a model folder"),
                                                    ("inspection-late", "0", "--cases must be positive")])  # fmt: skip
def test_bad_requests_are_refused_with_a_reason(folder, cases, message, capsys):
    with pytest.raises(SystemExit):
        deletion_ceiling.main(["--model", str(MODELS / folder), "--cases", cases])
    assert message in capsys.readouterr().err
