"""On the edge: a DEQ exported to ONNX with a fixed solver budget of K steps.

The exported graph is encoders + K unrolled *damped fixed-point* steps + the head.
Why fixed-point and not Anderson: Anderson needs a small least-squares solve per step
(``torch.linalg.solve``) whose ONNX lowering is not available in opset 17/18, so the
graph uses the plain iteration z <- (1-a) z + a f(z), which exports as ordinary ops and
has a known, fixed cost per case. onnx/onnxruntime are imported only inside functions.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["EdgeCheck", "export_onnx", "check_onnx", "main"]


def _unrolled(model, steps: int, damping: float):
    import torch

    class Unrolled(torch.nn.Module):
        """The model with its solve replaced by ``steps`` damped fixed-point steps."""

        def __init__(self):
            super().__init__()
            self.model = copy.deepcopy(model)
            for encoder in self.model.encoders:  # one case at a time is an eager-mode bit-reproducibility device;
                if hasattr(encoder, "net"):  # a traced graph needs the batched convolution
                    object.__setattr__(encoder, "per_case", encoder.net)  # Module.__setattr__ would register it

        def forward(self, *inputs):
            f, z = self.model.bind(inputs)
            for _ in range(steps):
                z = (1 - damping) * z + damping * f(z)
            z = f(z)  # the same one extra evaluation as DEQFusion.run
            return torch.softmax(self.model.head(z[:, self.model.n_modalities]), dim=-1)

    return Unrolled().eval()


def export_onnx(model_dir: str, steps: int, out: str, precision: str = "fp32", damping: float | None = None) -> Path:
    """Export ``model_dir`` with ``steps`` unrolled steps to ``out`` (opset 17); int8 via dynamic quantisation.

    int8 uses onnxruntime's dynamic quantisation (weights int8, activations quantised per
    batch at run time): it needs no calibration set to go stale, and the graph's MatMuls
    are where the size is.
    """
    import torch

    from deq_core.lens import Lens

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    lens = Lens.open(model_dir, device="cpu")
    model = lens.model.eval()
    a = damping if damping is not None else float(getattr(model.config.solver, "damping", 1.0))
    data = lens.data("train", max_cases=2)
    args = tuple(x[:2] for x in data.inputs)
    out_path = Path(out)
    fp32_path = out_path if precision == "fp32" else out_path.with_suffix(".fp32.onnx")
    names = [f"input_{i}" for i in range(len(args))]
    with torch.no_grad():
        torch.onnx.export(_unrolled(model, steps, a), args, str(fp32_path), opset_version=17, dynamo=False,
                          input_names=names, output_names=["probabilities"],
                          dynamic_axes={n: {0: "batch"} for n in names + ["probabilities"]})
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8)
        fp32_path.unlink()
    elif precision != "fp32":
        raise ValueError(f"precision must be fp32 or int8, got {precision!r}")
    return out_path


@dataclass
class EdgeCheck:
    """What `edge check` measures: agreement, accuracy, latency and size against the full model."""

    cases: int
    agreement: float
    max_probability_difference: float
    accuracy_onnx: float
    accuracy_full: float
    size_bytes: int
    sha256: str
    latency_ms: dict


def _session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _pcts(times: list[float]) -> dict:
    import numpy as np

    return {"p50": float(np.percentile(times, 50) * 1e3), "p95": float(np.percentile(times, 95) * 1e3)}


def check_onnx(model_dir: str, onnx_path: str, split: str = "test", repeats: int = 20,
               max_cases: int | None = None) -> EdgeCheck:
    """Compare the exported graph with the full tolerance-based PyTorch solve on ``split``."""
    import numpy as np
    import torch

    from deq_core.lens import Lens

    torch.set_num_threads(1)
    lens = Lens.open(model_dir, device="cpu")
    model = lens.model.eval()
    data = lens.data(split, max_cases=max_cases)
    sess = _session(onnx_path)
    feed = lambda xs: {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)}  # noqa: E731
    with torch.no_grad():
        full = torch.softmax(model.run(data.inputs).logits, -1).numpy()
    edge = sess.run(None, feed(data.inputs))[0]
    labels = data.labels.numpy()
    latency = {}
    for batch in (1, 64):
        xs = tuple(x[:batch] for x in data.inputs)
        t_ort, t_pt = [], []
        for _ in range(repeats):
            t = time.perf_counter(); sess.run(None, feed(xs)); t_ort.append(time.perf_counter() - t)  # noqa: E702
            with torch.no_grad():
                t = time.perf_counter(); model.run(xs); t_pt.append(time.perf_counter() - t)  # noqa: E702
        latency[f"batch{batch}"] = {"onnxruntime": _pcts(t_ort), "pytorch": _pcts(t_pt)}
    raw = Path(onnx_path).read_bytes()
    return EdgeCheck(len(labels), float((edge.argmax(1) == full.argmax(1)).mean()), float(np.abs(edge - full).max()),
                     float((edge.argmax(1) == labels).mean()), float((full.argmax(1) == labels).mean()), len(raw),
                     hashlib.sha256(raw).hexdigest(), latency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deq-lens edge", description="ONNX export with a fixed solver budget")
    sub = parser.add_subparsers(dest="verb", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--model", required=True)
    ex.add_argument("--steps", type=int, required=True)
    ex.add_argument("--solver", choices=["fixed_point"], default="fixed_point")
    ex.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    ex.add_argument("--out", required=True)
    ch = sub.add_parser("check")
    ch.add_argument("--model", required=True)
    ch.add_argument("--onnx", required=True)
    ch.add_argument("--split", default="test")
    ch.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.verb == "export":
        print(export_onnx(args.model, args.steps, args.out, args.precision))
        return 0
    result = asdict(check_onnx(args.model, args.onnx, args.split))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0
