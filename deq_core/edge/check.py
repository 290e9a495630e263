"""`edge check`: an exported file against the full model it came from, on one split."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from deq_core.edge.graph import read_metadata, sha256
from deq_core.explain.tuning import reference_settings


@dataclass
class EdgeCheck:
    """What `edge check` measures: agreement, accuracy, latency and size against the full model.

    ``latency_ms[batchB][engine]`` holds p50/p95 in milliseconds, onnxruntime and PyTorch
    measured alternately in the same run, one thread each; ``latency_ratio_batch1`` is
    the ratio of their p50s at batch 1.
    """

    model: str
    split: str
    cases: int
    steps: int
    precision: str
    agreement: float
    flips: int
    max_probability_difference: float
    max_difference_from_fixed_point: float
    full_from_fixed_point: float
    accuracy_onnx: float
    accuracy_full: float
    residual_median: float
    residual_max: float
    size_bytes: int
    sha256: str
    latency_ms: dict
    latency_ratio_batch1: float

    def to_dict(self) -> dict:
        return asdict(self)


def session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra- and one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


ONNX_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64,
              "tensor(int32)": np.int32}  # fmt: skip


def run_onnx(sess, inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, residual)`` of the exported graph for the model's input tensors.

    Each input is cast to the type the graph declares (a case read from a file may carry
    its tokens as int32 or its pixels as float64, which onnxruntime refuses).
    """
    if len(inputs) != len(sess.get_inputs()):
        raise ValueError(f"the exported graph takes {len(sess.get_inputs())} inputs, got {len(inputs)}")
    feed = {i.name: np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x,
                               dtype=ONNX_TYPES.get(i.type)) for i, x in zip(sess.get_inputs(), inputs)}  # fmt: skip
    probabilities, residual = sess.run(None, feed)
    return probabilities, residual


def _pcts(times: list[float]) -> dict:
    return {"p50": float(np.percentile(times, 50) * 1e3), "p95": float(np.percentile(times, 95) * 1e3)}


def latency(sess, model, data, repeats: int = 20, batches: tuple[int, ...] = (1, 64)) -> dict:
    """p50/p95 of onnxruntime and of the PyTorch model (``run``: the full solve), alternating, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for batch in batches:
            xs = tuple(x[:batch] for x in data.inputs)
            run_onnx(sess, xs)  # warm-up: the first call allocates
            with torch.no_grad():
                model.run(xs)
            t_ort, t_pt = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                run_onnx(sess, xs)
                t_ort.append(time.perf_counter() - t)
                with torch.no_grad():
                    t = time.perf_counter()
                    model.run(xs)
                    t_pt.append(time.perf_counter() - t)
            out[f"batch{batch}"] = {"onnxruntime": _pcts(t_ort), "pytorch": _pcts(t_pt)}
    finally:
        torch.set_num_threads(threads)
    return out


def check_onnx(model_dir, onnx_path: str | Path, split: str = "test", repeats: int = 20,
               max_cases: int | None = None, data=None) -> EdgeCheck:  # fmt: skip
    """Compare the exported graph with the full tolerance-based PyTorch solve on ``split`` (or ``data``).

    Refuses a file exported from another model (its metadata names the model's checksum).
    """
    from deq_core.lens import Lens

    lens = model_dir if isinstance(model_dir, Lens) else Lens.open(model_dir, device="cpu")
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    meta = read_metadata(path)
    if meta.get("model_checksum") not in (None, lens.checksum):
        raise ValueError(f"{path} was exported from model {meta.get('model')!r} (checksum "
                         f"{meta['model_checksum'][:12]}...), not from {lens.name} ({lens.checksum[:12]}...)")  # fmt: skip
    model = lens.model.eval()
    data = data if data is not None else lens.data(split, max_cases=max_cases)
    sess = session(path)
    with torch.no_grad():
        full = torch.softmax(model.run(data.inputs).logits, -1).numpy()
        fixed = torch.softmax(model.run(data.inputs, solver=reference_settings(model.config.solver)).logits, -1).numpy()
    edge, residual = run_onnx(sess, data.inputs)
    labels = data.labels.numpy()
    timing = latency(sess, model, data, repeats)
    b1 = timing["batch1"]
    return EdgeCheck(
        lens.name, split, len(labels), int(meta.get("steps", 0)), meta.get("precision", "?"),
        float((edge.argmax(1) == full.argmax(1)).mean()), int((edge.argmax(1) != full.argmax(1)).sum()),
        float(np.abs(edge - full).max()), float(np.abs(edge - fixed).max()), float(np.abs(full - fixed).max()),
        float((edge.argmax(1) == labels).mean()), float((full.argmax(1) == labels).mean()),
        float(np.median(residual)), float(residual.max()), path.stat().st_size, sha256(path), timing,
        b1["onnxruntime"]["p50"] / b1["pytorch"]["p50"],
    )  # fmt: skip


def format_check(result: EdgeCheck) -> str:
    """The check as lines a person reads."""
    b1, b64 = result.latency_ms["batch1"], result.latency_ms.get("batch64")
    lines = [
        f"{result.model}, {result.split} split, {result.cases} cases; exported with K = {result.steps}, {result.precision}",
        f"decision agreement with the full model: {result.agreement:.2%} ({result.flips} flips)",
        f"max |p_onnx - p_full|: {result.max_probability_difference:.2e}; "
        f"max |p_onnx - p*| (fixed point, tolerance 1e-6): {result.max_difference_from_fixed_point:.2e}; "
        f"the full model itself is {result.full_from_fixed_point:.2e} from p*",
        f"accuracy: onnx {result.accuracy_onnx:.2%}, full model {result.accuracy_full:.2%}",
        f"residual after K steps: median {result.residual_median:.1e}, max {result.residual_max:.1e}",
        f"file: {result.size_bytes / 1e6:.3f} MB, sha256 {result.sha256}",
        f"latency batch 1 p50/p95: onnxruntime {b1['onnxruntime']['p50']:.2f}/{b1['onnxruntime']['p95']:.2f} ms, "
        f"PyTorch {b1['pytorch']['p50']:.2f}/{b1['pytorch']['p95']:.2f} ms (ratio {result.latency_ratio_batch1:.2f}x)",
    ]  # fmt: skip
    if b64:
        lines.append(f"latency batch 64 p50/p95: onnxruntime {b64['onnxruntime']['p50']:.1f}/{b64['onnxruntime']['p95']:.1f}"
                     f" ms, PyTorch {b64['pytorch']['p50']:.1f}/{b64['pytorch']['p95']:.1f} ms")  # fmt: skip
    return "\n".join(lines)
