"""Edge export on tiny models: the exported graph computes what PyTorch does, K comes from data, int8 holds.

The figures on the shipped DEQs are measured by ``python benchmarks/edge.py``, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from conftest import tiny_inputs, tiny_model  # noqa: E402
from deq_core import save_model  # noqa: E402
from deq_core.data.inspection import generate_inspection  # noqa: E402
from deq_core.edge import (  # noqa: E402
    ExplicitAdaptivePool, check_onnx, choose_steps, export_onnx, iterates, main, read_metadata, run_onnx, session,
    steps_table,
)  # fmt: skip
from deq_core.lens import Lens  # noqa: E402
from deq_core.train import TrainingSettings, train_model  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """A width-32 inspection DEQ trained for two epochs on a few cases, saved as a model folder."""
    torch.manual_seed(0)
    model, _, metrics = train_model(
        "inspection", "deq", TrainingSettings(epochs=2, width=32, unroll_steps=4), device="cpu", progress=False,
        train_data=generate_inspection("train", n_per_class=8), val_data=generate_inspection("val", n_per_class=3),
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("edge-model") / "inspection-deq"
    save_model(model, folder, extra_files={"metrics.json": json.dumps(metrics) + "\n"})
    return folder


@pytest.mark.parametrize("size, output", [((8, 7), (4, 4)), ((6, 6), (4, 4)), ((15,), (4,)), ((5, 9), (3, 2))])
def test_explicit_pool_equals_adaptive_pool(size, output):
    x = torch.randn(3, 2, *size, dtype=torch.float64)
    pool = torch.nn.AdaptiveAvgPool2d(output) if len(size) == 2 else torch.nn.AdaptiveAvgPool1d(output)
    torch.testing.assert_close(ExplicitAdaptivePool(output, size)(x), pool(x), rtol=0, atol=1e-12)


def test_fp32_graph_computes_the_pytorch_unroll(tmp_path, single_thread):
    """The tiny model's photo encoder pools 6x6 maps to 4x4 (no ONNX symbolic): the export replaces
    it, and the graph matches the eager unroll, probabilities and residuals, on cases it never saw."""
    model = tiny_model("deq").eval()
    lens = Lens(model)
    path = export_onnx(lens, 5, tmp_path / "tiny.onnx", calibration=tiny_inputs(8, seed=3))
    meta = read_metadata(path)
    assert (meta["steps"], meta["precision"], meta["model_checksum"]) == ("5", "fp32", lens.checksum)
    cases = tiny_inputs(7, seed=11)
    probabilities, residual = run_onnx(session(path), cases)
    with torch.no_grad():
        for _, (expected, expected_residual) in zip(range(5), iterates(model, cases, 1.0)):
            pass
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=2e-5)
    np.testing.assert_allclose(residual, expected_residual.numpy(), rtol=1e-3)
    assert (probabilities.argmax(1) == expected.numpy().argmax(1)).all()


def test_steps_table_and_the_chosen_k(trained, single_thread):
    lens = Lens.open(trained, device="cpu")
    table = steps_table(lens, "val", max_steps=25, max_cases=18)
    assert [r.steps for r in table.rows] == list(range(1, 26))
    k = table.chosen_steps
    assert k is not None and all(r.flips == 0 for r in table.rows[k - 1:])
    assert k == 1 or table.rows[k - 2].flips > 0  # the smallest such K
    # the full model is itself off its fixed point by about its tolerance: a floor under every gap to it
    assert all(r.max_dp_full >= table.full_vs_fixed_point - r.max_dp_fixed_point - 1e-7 for r in table.rows)
    assert table.rows[-1].max_residual < table.rows[0].max_residual
    assert "chosen K" in table.format()


def test_export_auto_check_and_int8(trained, tmp_path, single_thread, capsys):
    assert main(["export", "--model", str(trained), "--steps", "auto", "--out", str(tmp_path / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    k = int(read_metadata(tmp_path / "m.onnx")["steps"])
    assert f"chosen K (no flips from there on): {k}" in printed
    lens = Lens.open(trained, device="cpu")
    fp32 = check_onnx(lens, tmp_path / "m.onnx", "val", repeats=2, max_cases=18)
    assert fp32.steps == k and fp32.agreement == 1.0 and fp32.flips == 0  # K was chosen on these cases
    calibration = lens.data("train", max_cases=48).inputs
    int8_path = export_onnx(lens, k, tmp_path / "m8.onnx", precision="int8", calibration=calibration)
    int8 = check_onnx(lens, int8_path, "val", repeats=2, max_cases=18)
    assert int8.precision == "int8" and int8.agreement >= 17 / 18
    # The size at a fixed K: every unrolled step adds its own quantize/dequantize nodes, more bytes than
    # its fp32 graph, so on a model this small the ratio depends on the K chosen, and that K on how the
    # two-epoch training rounds on the CPU (about 18 on the machine where "< 0.5x at the chosen K" failed).
    # At the shipped models' K (4-6) the weights dominate (benchmarks/edge.py: about 0.3x).
    sizes = {precision: export_onnx(lens, 4, tmp_path / f"k4-{precision}.onnx", precision=precision,
                                    calibration=calibration).stat().st_size
             for precision in ("fp32", "int8")}  # fmt: skip
    assert sizes["int8"] < 0.5 * sizes["fp32"]
    assert int8.size_bytes < fp32.size_bytes
    assert main(["check", "--model", str(trained), "--onnx", str(int8_path), "--split", "val", "--repeats", "1",
                 "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["sha256"] == int8.sha256 and report["steps_table"]["rows"]


def test_a_file_of_another_model_is_refused(trained, tmp_path, single_thread):
    other = export_onnx(Lens(tiny_model("deq").eval()), 2, tmp_path / "other.onnx", calibration=tiny_inputs(4))
    with pytest.raises(ValueError, match="exported from model"):
        check_onnx(Lens.open(trained, device="cpu"), other, "val", repeats=1, max_cases=4)


def test_bad_steps_and_precision_refused(trained, tmp_path):
    lens = Lens.open(trained, device="cpu")
    with pytest.raises(ValueError, match="steps"):
        export_onnx(lens, 0, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="precision"):
        export_onnx(lens, 3, tmp_path / "m.onnx", precision="int4")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SystemExit):
        main(["export", "--model", str(trained), "--steps", "many", "--out", str(tmp_path / "m.onnx")])
    with pytest.raises(FileNotFoundError):
        check_onnx(lens, tmp_path / "missing.onnx")
