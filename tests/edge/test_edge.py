"""Export + check of a shipped DEQ on a few cases: fp32 decides like PyTorch, int8 stays close, sizes shrink."""

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from deq_core.edge import check_onnx, export_onnx  # noqa: E402

MODEL = str(Path(__file__).resolve().parents[2] / "assets/models/inspection-deq")


def test_fp32_and_int8_export_agree_with_pytorch(tmp_path):
    fp32 = export_onnx(MODEL, steps=12, out=str(tmp_path / "m.onnx"))
    result = check_onnx(MODEL, str(fp32), max_cases=16, repeats=1)
    assert result.agreement == 1.0
    assert result.max_probability_difference < 1e-2
    int8 = export_onnx(MODEL, steps=12, out=str(tmp_path / "m8.onnx"), precision="int8")
    quantised = check_onnx(MODEL, str(int8), max_cases=16, repeats=1)
    assert quantised.agreement >= 15 / 16
    assert quantised.size_bytes < result.size_bytes


def test_bad_steps_refused(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        export_onnx(MODEL, steps=0, out=str(tmp_path / "m.onnx"))
