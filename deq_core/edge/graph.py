"""The exported graph: encoders, K unrolled damped fixed-point steps and the head, as ONNX.

Why fixed-point and not Anderson: Anderson needs a small least-squares solve per step
(``torch.linalg.solve``) whose ONNX lowering is not available in opset 17/18, so the
graph uses the plain iteration z <- (1-a) z + a f(z), which exports as ordinary ops and
has a known, fixed cost per case. onnx/onnxruntime are imported only inside functions.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

PRECISIONS = ("fp32", "int8")
OPSET = 17
CALIBRATION_CASES = 256  # training cases the int8 activation ranges are calibrated on
CALIBRATION_BATCH = 32


class ExplicitAdaptivePool(torch.nn.Module):
    """``AdaptiveAvgPool{1,2}d`` for one known input size, spelt as slices and means.

    torch's ONNX exporter lowers an adaptive pool only when the output size divides the
    input size (it becomes a plain AveragePool); handwritten-deq pools 8x7 maps to 4x4,
    which has no symbolic. PyTorch's bins are [floor(i*n/o), ceil((i+1)*n/o)); averaging
    each bin's rows, then each bin's columns, is the same mean, and slices and means
    export as ordinary ops with no weights to quantise (an averaging matrix would be
    quantised by int8 along with the real weights).
    """

    def __init__(self, output: tuple[int, ...], size: tuple[int, ...]):
        super().__init__()
        self.bins = tuple(
            tuple((math.floor(i * n / o), math.ceil((i + 1) * n / o)) for i in range(o)) for o, n in zip(output, size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, bins in enumerate(self.bins, start=x.dim() - len(self.bins)):
            x = torch.cat([x.narrow(axis, s, e - s).mean(dim=axis, keepdim=True) for s, e in bins], dim=axis)
        return x


def _explicit_pools(net, example) -> None:
    """Replace, in ``net`` (an ``nn.Sequential``), each adaptive average pool whose output does
    not divide its input by an ``ExplicitAdaptivePool`` for the size ``example`` reaches it with."""
    x = example
    for index, layer in enumerate(list(net)):
        if isinstance(layer, (torch.nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool2d)):
            size = tuple(x.shape[2:])
            output = layer.output_size if isinstance(layer.output_size, tuple) else (layer.output_size,) * len(size)
            output = tuple(n if o is None else o for o, n in zip(output, size))
            if any(n % o for o, n in zip(output, size)):
                net[index] = layer = ExplicitAdaptivePool(output, size)
        x = layer(x)


def iterates(model, inputs, damping: float) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(probabilities, residual)`` after K = 1, 2, ... damped fixed-point steps from zero.

    After K steps z_K, one more evaluation f(z_K) feeds the head (the same extra evaluation
    as ``DEQFusion.run``); ``residual`` is each case's ||f(z_K) - z_K|| / ||f(z_K)||, the
    relative residual the full solve stops on. The exported graph is the K-th item of
    this sequence, and ``steps.steps_table`` reads every K of it in one pass.
    """
    f, z = model.bind(inputs)
    fz = f(z)
    while True:
        z = (1 - damping) * z + damping * fz
        fz = f(z)
        residual = (fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1).clamp_min(1e-12)
        yield torch.softmax(model.head(fz[:, model.n_modalities]), dim=-1), residual


def unrolled(model, steps: int, damping: float, example: tuple | None = None) -> torch.nn.Module:
    """The model as an exportable module: ``inputs -> (probabilities, residual)``.

    ``residual`` is each case's relative residual ||f(z_K) - z_K|| / ||f(z_K)|| after the K
    steps (the measure the full solve stops on), so the graph reports how far it got.
    ``example`` (inputs of the model) sizes the adaptive pools that need replacing.
    """
    class Unrolled(torch.nn.Module):
        """The model with its solve replaced by ``steps`` damped fixed-point steps."""

        def __init__(self):
            super().__init__()
            self.model = copy.deepcopy(model)
            for i, encoder in enumerate(self.model.encoders):  # one case at a time is an eager-mode
                if hasattr(encoder, "net"):  # bit-reproducibility device; a traced graph needs the batched net
                    object.__setattr__(encoder, "per_case", encoder.net)  # Module.__setattr__ would register it
                    if example is not None and isinstance(encoder.net, torch.nn.Sequential):
                        with torch.no_grad():
                            _explicit_pools(encoder.net, encoder.standardise(example[i][:1]))

        def forward(self, *inputs):
            for _, out in zip(range(steps), iterates(self.model, inputs, damping)):
                pass
            return out

    return Unrolled().eval()


def compact_names(path: str | Path) -> None:
    """Rename the graph's inner tensors and nodes to short ids and drop shape annotations.

    The exporter's and the quantiser's names (``/update_4/Constant_39_output_0_quantized_scale``)
    were half of an int8 file: 190 kB of names around 360 kB of weights on inspection-deq.
    The inputs' and outputs' names stay; what the graph computes does not change.
    """
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if name == "" or name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping):x}")

    for t in g.initializer:
        t.name = short(t.name)
    for i, node in enumerate(g.node):
        node.name, node.doc_string = f"n{i:x}", ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    del g.value_info[:]
    onnx.save(m, str(path))


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for key, value in metadata.items():
        m.metadata_props.add(key=key, value=str(value))
    onnx.save(m, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """What the export wrote into the file: ``model``, ``model_checksum``, ``steps``, ``damping``, ``precision``."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _quantise_int8(calibration: tuple[torch.Tensor, ...], fp32_path: Path, out_path: Path) -> None:
    """onnxruntime static quantisation, QDQ, int8 weights per channel, calibrated on training cases.

    Static (not dynamic) because dynamic quantisation leaves Conv weights and the batched
    (3-d) MatMuls in float (0.54x of fp32 on inspection-deq); QDQ rather than QOperator
    because QLinearMatMul takes no per-channel zero points for the 3-d MatMuls of the
    per-modality branches. Activation ranges: MinMax over the ``calibration`` inputs, by
    default training cases spread evenly over the split (the model never saw the test
    split; the ranges should not either).
    """
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [f"input_{i}" for i in range(len(calibration))]
    n = len(calibration[0])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [{k: x[i : i + CALIBRATION_BATCH].numpy() for k, x in zip(names, calibration)}
                 for i in range(0, n, CALIBRATION_BATCH)]  # fmt: skip
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)  # fmt: skip


def export_onnx(model_dir, steps: int, out: str | Path, precision: str = "fp32", damping: float | None = None,
                calibration: tuple[torch.Tensor, ...] | None = None) -> Path:  # fmt: skip
    """Export ``model_dir`` (a folder or an open Lens) with ``steps`` unrolled steps to ``out`` (opset 17).

    Outputs ``probabilities (batch, C)`` and ``residual (batch,)``; the batch axis is dynamic.
    The file carries its model, K, damping and precision as ONNX metadata. int8: see
    ``_quantise_int8``; ``calibration`` (input tensors) defaults to ``CALIBRATION_CASES``
    training cases of the model's dataset. A failed export leaves no file at ``out``.
    """
    import tempfile

    from deq_core.lens import Lens

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be an integer >= 1, got {steps!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    lens = model_dir if isinstance(model_dir, Lens) else Lens.open(model_dir, device="cpu")
    model = lens.model.eval()
    if not hasattr(model, "bind") or lens.config.architecture != "deq":
        raise ValueError(f"edge export needs a DEQ model; {lens.name} is {lens.config.architecture!r}")
    a = damping if damping is not None else float(getattr(model.config.solver, "damping", 1.0))
    if calibration is None:
        calibration = lens.data("train", max_cases=CALIBRATION_CASES).inputs
    args = tuple(x[:2] for x in calibration)
    out_path = Path(out)
    names = [f"input_{i}" for i in range(len(args))]
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False) warns that it is deprecated in torch 2.9+;
            # its tracer warning is about GroupNorm's "more than one value per channel" check,
            # which holds for any batch (N+1 rows per case).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(unrolled(model, steps, a, args), args, str(fp32_path), opset_version=OPSET, dynamo=False,
                              input_names=names, output_names=["probabilities", "residual"],
                              dynamic_axes={n: {0: "batch"} for n in names + ["probabilities", "residual"]})  # fmt: skip
        final = fp32_path
        if precision == "int8":
            final = Path(tmp) / "int8.onnx"
            _quantise_int8(calibration, fp32_path, final)
        compact_names(final)
        _set_metadata(final, {"model": lens.name, "model_checksum": lens.checksum, "steps": steps, "damping": a,
                              "precision": precision, "solver": "fixed_point"})  # fmt: skip
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_bytes(final.read_bytes())
    return out_path
