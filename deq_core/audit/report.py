"""Decision reports: one case's decision, its explanation and everything needed to re-run it.

A report is a JSON record (hashes of the model files, of every input and of the
corruption spec; solver settings, seeds, device and library versions; the
prediction, trajectory, attributions and reliability figures; the inputs
themselves, base64 of their raw bytes; and the record's own SHA-256) plus a
self-contained HTML page for people (Plotly inlined, readable offline, printable).

    python -m deq_core.audit report --model assets/models/handwritten-deq --case hw-0001 --out reports/hw-0001
    python -m deq_core.audit report --model assets/models/handwritten-deq --cases all --out reports/all
    python -m deq_core.audit verify reports/hw-0001/report.json
    python -m deq_core.audit verify-log

Every report written is appended to the audit log (``audit_log.AuditLog``);
``verify`` re-runs the decision from the record alone and compares.
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import hashlib
import html
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from deq_core.explain.attribution import DEFAULT_STEPS, top_features
from deq_core.audit.log import AuditLog, canonical_json
from deq_core.engine.checkpoint import CONFIG, WEIGHTS, ModelLoadError, load_model, model_checksum, sha256_file
from deq_core.engine.config import SolverSettings
from deq_core.explain.corrupt import CorruptionSet, InputReference, apply
from deq_core.explain.explanation import Explanation, explain_case
from deq_core.explain.ideal import IdealReference, ideal_reference, ranking_sentence
from deq_core.engine.model import FusionModel

FORMAT = "deq-fusion-lens/decision-report"
VERSION = 1
JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Re-running on the same kind of device reproduces the numbers bit for bit; these
# tolerances absorb a different thread count or BLAS build, not a different model.
TOLERANCES = {"probability": 1e-6, "shapley": 1e-5, "feature_score": 1e-5}
TOP_K = 10


# --------------------------------------------------------------------------- hashing and embedding


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's canonical form: ``"<dtype>|<shape>|"`` then its little-endian C-order bytes."""
    array = _canonical_array(tensor)
    digest = hashlib.sha256(f"{array.dtype.name}|{','.join(map(str, array.shape))}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _canonical_array(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def embed_tensor(tensor: torch.Tensor) -> dict:
    """A tensor as JSON: dtype, shape, hash and base64 of the raw bytes (exact, compact)."""
    array = _canonical_array(tensor)
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "sha256": tensor_sha256(tensor),
        "base64": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def unembed_tensor(data: Mapping) -> torch.Tensor:
    """The tensor ``embed_tensor`` wrote; raises ValueError when its bytes do not match its hash."""
    array = np.frombuffer(base64.b64decode(data["base64"]), dtype=np.dtype(data["dtype"]).newbyteorder("<"))
    tensor = torch.from_numpy(array.astype(np.dtype(data["dtype"])).reshape(data["shape"]))
    if tensor_sha256(tensor) != data["sha256"]:
        raise ValueError("embedded bytes do not match their SHA-256")
    return tensor


def record_sha256(record: Mapping) -> str:
    """The report's own hash: SHA-256 of its canonical JSON without the ``report_sha256`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "report_sha256"}).encode()).hexdigest()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportSettings:
    """How the decision is explained; all of it is recorded and replayed by ``verify``.

    Attributes:
        n_steps: Integrated Gradients steps.
        baseline: IG baseline name for every modality; None: each kind's default.
        target: class explained; None: the predicted class.
        cross_check: run Captum's FeatureAblation beside the Shapley values.
        top_k: top features kept per modality.
        seed: ``torch.manual_seed`` before the explanation (the explanation itself draws nothing).
        solver: solver settings; None: the model's own.
    """

    n_steps: int = DEFAULT_STEPS
    baseline: str | None = None
    target: int | None = None
    cross_check: bool = True
    top_k: int = TOP_K
    seed: int = 0
    solver: SolverSettings | None = None

    def to_dict(self, model: FusionModel) -> dict:
        solver = self.solver or model.config.solver
        return {
            "n_steps": self.n_steps,
            "baseline": self.baseline,
            "target": self.target,
            "cross_check": self.cross_check,
            "top_k": self.top_k,
            "seed": self.seed,
            "solver": dataclasses.asdict(solver),
            "solver_is_models_own": self.solver is None,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "ReportSettings":
        solver = None
        if not data.get("solver_is_models_own", True):
            solver = SolverSettings(**data["solver"])
        return cls(data["n_steps"], data["baseline"], data["target"], data["cross_check"], data["top_k"], data["seed"], solver)


@dataclass(frozen=True)
class DecisionReport:
    """One decision report: ``record`` (JSON-ready, carrying its own hash) and ``html``."""

    record: dict
    html: str
    explanation: Explanation

    @property
    def sha256(self) -> str:
        return self.record["report_sha256"]

    @property
    def case_id(self) -> str:
        return self.record["case_id"]

    @property
    def predicted_class(self) -> str:
        return self.record["prediction"]["class"]

    def json_text(self) -> str:
        return json.dumps(self.record, indent=1, sort_keys=True) + "\n"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``report.json`` and ``report.html`` into ``folder``; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, html_path = folder / JSON_NAME, folder / HTML_NAME
        json_path.write_text(self.json_text(), encoding="utf-8")
        html_path.write_text(self.html, encoding="utf-8")
        return json_path, html_path


def environment(model: FusionModel) -> dict:
    import captum

    from deq_core import __version__  # at call time: the package may import this module while it initialises

    return {
        "device": str(model.device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "captum": captum.__version__,
        "numpy": np.__version__,
        "deq_core": __version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def _explain(model: FusionModel, inputs: Sequence[torch.Tensor], texts, settings: ReportSettings) -> Explanation:
    torch.manual_seed(settings.seed)
    return explain_case(model, [x.to(model.device) for x in inputs], texts=texts, target=settings.target,
                        n_steps=settings.n_steps, baseline=settings.baseline, cross_check=settings.cross_check,
                        solver=settings.solver)  # fmt: skip


def _as_batch_of_one(model: FusionModel, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    out = []
    for m, x in zip(model.config.modalities, inputs):
        x = torch.as_tensor(x).detach().cpu()
        out.append(x.unsqueeze(0) if x.dim() == len(m.shape) else x)
    return tuple(out)


def model_inputs(model: FusionModel, inputs: Sequence[torch.Tensor], case_id: str, corruption: CorruptionSet | None):
    """What the model sees: ``inputs`` with ``corruption`` applied, keyed by the case id (as the lab does)."""
    if corruption is None or len(corruption) == 0:
        return tuple(inputs)
    corrupted = apply(inputs, model.config.modalities, corruption, InputReference.of_model(model), case_keys=[case_id])
    return tuple(x.detach().cpu() for x in corrupted)


def build_report(
    model: FusionModel,
    model_folder: str | Path,
    inputs: Sequence[torch.Tensor],
    case_id: str,
    texts: Mapping[str, str] | None = None,
    corruption: CorruptionSet | None = None,
    settings: ReportSettings | None = None,
    source: Mapping | None = None,
    label: int | None = None,
    explanation: Explanation | None = None,
) -> DecisionReport:
    """Explain one case and write down everything needed to check it later.

    Args:
        model: the model loaded from ``model_folder`` (its files are hashed, not re-read).
        inputs: one tensor per modality, ``(1, *shape)`` or ``(*shape)``: the case as given,
            before any corruption.
        case_id: the case's identity (a test case id, or ``upload-<hash>``); corruption
            randomness is keyed by it.
        texts: raw text per text modality, shown in the report.
        corruption: applied to ``inputs`` before the model sees them; its spec is recorded.
        settings: explanation settings (default ``ReportSettings()``).
        source: where the case came from (``{"dataset": ..., "split": ...}``), recorded as is.
        label: the true class index, when known.
        explanation: an explanation already computed with exactly these inputs and
            settings (the app's cache); None: computed here.
    """
    settings = settings or ReportSettings()
    folder = Path(model_folder)
    config = model.config
    original = _as_batch_of_one(model, inputs)
    seen = model_inputs(model, original, case_id, corruption)
    if explanation is None:
        explanation = _explain(model, seen, texts, settings)
    trajectory = explanation.trajectory
    shapley, attribution = explanation.shapley, explanation.attribution
    record = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "case_id": case_id,
        "source": dict(source or {}),
        "model": {
            "name": folder.name,
            "folder": str(folder.resolve()),
            "architecture": config.architecture,
            "checksum": model_checksum(folder),
            "files": {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)},
        },
        "inputs": {
            "modalities": [{"name": m.name, "kind": m.kind, **embed_tensor(x[0])} for m, x in zip(config.modalities, original)],
            "texts": dict(texts or {}),
        },
        "corruption": None if corruption is None or len(corruption) == 0 else {
            "spec": corruption.to_dict(),
            "sha256": hashlib.sha256(canonical_json(corruption.to_dict()).encode()).hexdigest(),
            "description": [s.describe() for s in corruption],
            "model_inputs_sha256": {m.name: tensor_sha256(x[0]) for m, x in zip(config.modalities, seen)},
        },
        "settings": settings.to_dict(model),
        "environment": environment(model),
        "prediction": {
            "index": explanation.prediction,
            "class": explanation.predicted_class,
            "probabilities": dict(zip(config.class_names, explanation.probabilities)),
            "label": None if label is None else config.class_names[label],
        },
        "trajectory": None if trajectory is None else {
            "iterations": trajectory.iterations,
            "status": trajectory.status,
            "converged": trajectory.converged,
            "best_iteration": trajectory.best_iteration,
            "lock_in_iteration": explanation.lock_in_iteration,
            "relative_residuals": trajectory.relative_residuals.tolist(),
            "probabilities": trajectory.probabilities.tolist(),
        },
        "attribution": {
            "target": explanation.target,
            "target_class": config.class_names[explanation.target],
            "shapley": dict(zip(shapley.modality_names, shapley.values.tolist())),
            "shapley_interactions": shapley.interactions.tolist(),
            "full_value": shapley.full_value,
            "empty_value": shapley.empty_value,
            "ig_output": attribution.output,
            "ig_totals": dict(zip(attribution.modality_names, attribution.totals)),
            "ig_method": attribution.method,
            "ig_baselines": dict(zip(attribution.modality_names, attribution.baselines)),
            "top_features": {
                m.name: [s.to_dict() for s in top_features(attribution, i, k=settings.top_k)]
                for i, m in enumerate(config.modalities)
            },
        },
        "reliability": {
            **explanation.reliability.to_dict(),
            "ig_delta": _finite(explanation.reliability.ig_delta),
            "final_relative_residual": _finite(explanation.reliability.final_relative_residual),
        },
        "tolerances": dict(TOLERANCES),
    }
    reference = ideal_reference(case_id, seen, texts or {}, explanation.target, config.modality_names)
    if reference is not None:  # a generated inspection case, unaltered: the ground truth is known
        model_values = dict(zip(shapley.modality_names, shapley.values.tolist()))
        record["ideal_reference"] = _reference_record(reference, model_values)
    record["report_sha256"] = record_sha256(record)
    return DecisionReport(record=record, html=render_html(record), explanation=explanation)


def _reference_record(reference: IdealReference, model_values: Mapping[str, float]) -> dict:
    """The ideal classifier's view of the case, and the sentence comparing it with the model's values."""
    shapley = reference.shapley
    return {
        "label": reference.label,
        "shows": dict(reference.shows),
        "probabilities": dict(zip(shapley.class_names, reference.probabilities.tolist())),
        "target_class": shapley.class_names[shapley.target],
        "shapley": dict(zip(shapley.modality_names, shapley.values.tolist())),
        "sentence": ranking_sentence(model_values, reference),
    }


# --------------------------------------------------------------------------- HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.85em;word-break:break-all}
.summary{background:#f6f8fa;border-left:4px solid #2e6da4;padding:.8em 1em}.warn{background:#fff8e1;border-left:4px solid #e6a700;padding:.6em 1em;margin:.4em 0}
.ok{background:#eef8ee;border-left:4px solid #2e8b57;padding:.6em 1em}.figures{display:grid;grid-template-columns:1fr 1fr;gap:.5em}
.meta{color:#666;font-size:.9em}
@media print{body{max-width:none;margin:0}.figures{display:block}.figure{page-break-inside:avoid}h2{page-break-after:avoid}
table{page-break-inside:avoid}a{color:inherit;text-decoration:none}}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if j in numeric else ''}>{html.escape(str(c))}</td>" for j, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plain_summary(record: Mapping) -> str:
    """Two or three sentences a person without the model's vocabulary can read."""
    prediction, attribution = record["prediction"], record["attribution"]
    confidence = prediction["probabilities"][prediction["class"]]
    text = f"For case {record['case_id']}, the model {record['model']['name']} decided “{prediction['class']}” with {confidence:.0%} confidence."
    if prediction.get("label") is not None:
        text += " This is correct." if prediction["label"] == prediction["class"] else f" The recorded answer is “{prediction['label']}”: the model is wrong."
    values = attribution["shapley"]
    if values:
        strongest = max(values, key=lambda n: abs(values[n]))
        direction = "for" if values[strongest] >= 0 else "against"
        text += f" The input that weighed most was “{strongest}” ({direction} “{attribution['target_class']}”, {values[strongest]:+.3f} in probability)."
    trajectory = record["trajectory"]
    if trajectory is not None:
        text += (f" The equilibrium search settled in {trajectory['iterations']} iterations." if trajectory["converged"]
                 else f" The equilibrium search did not settle ({trajectory['status']}): treat the decision with caution.")  # fmt: skip
    reference = record.get("ideal_reference")
    if reference:
        shows = ", ".join(f"{name}: {what}" for name, what in reference["shows"].items())
        text += f" What the inputs truly show (the generator's record): {shows}. {reference['sentence']}"
    if record.get("corruption"):
        text += " The inputs were deliberately altered before the decision: " + "; ".join(record["corruption"]["description"]) + "."
    return text


def render_html(record: Mapping) -> str:
    """The report as one HTML page: plotly.js inlined once, so it opens offline."""
    from deq_core.audit import report_figures as figures

    import plotly.io

    prediction, attribution, reliability = record["prediction"], record["attribution"], record["reliability"]
    classes = list(prediction["probabilities"])
    made = [figures.probabilities(classes, list(prediction["probabilities"].values()), prediction["index"]),
            figures.shapley(attribution["shapley"], attribution["target_class"])]  # fmt: skip
    trajectory = record["trajectory"]
    if trajectory is not None:
        made.append(figures.residual_trace(trajectory["relative_residuals"], record["settings"]["solver"]["tol"]))
        made.append(figures.probability_path(classes, trajectory["probabilities"], trajectory["lock_in_iteration"]))
    parts = []
    for i, figure in enumerate(made):
        parts.append('<div class="figure">' + plotly.io.to_html(
            figure, full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False, "responsive": True}
        ) + "</div>")  # fmt: skip
    warnings = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in reliability["warnings"])
    verdict = warnings or '<div class="ok">Every solve behind this explanation settled and the attributions add up.</div>'
    residual = reliability["final_relative_residual"]
    trust_rows = [
        ("Solver", reliability["status"]),
        ("Iterations", reliability["iterations"]),
        ("Final relative residual", "n/a" if residual is None else f"{residual:.2e}"),
        ("Integrated Gradients delta", "n/a" if reliability["ig_delta"] is None else f"{reliability['ig_delta']:.2e}"),
        ("Attributions complete (within 1%)", "yes" if reliability["ig_complete"] else "no"),
        ("All solves converged", "yes" if reliability["solves_converged"] else "no"),
    ]
    if trajectory is not None:
        trust_rows.append(("Decision locked in at iteration", trajectory["lock_in_iteration"]))
    top_rows = [(name, f["name"], f"{f['score']:+.4g}") for name, feats in attribution["top_features"].items() for f in feats[:5]]
    model = record["model"]
    provenance = [
        ("Model", f"{model['name']} ({model['architecture']})"),
        ("Model checksum", model["checksum"]),
        *[(f"SHA-256 of {name}", digest) for name, digest in model["files"].items()],
        *[(f"SHA-256 of input {m['name']}", m["sha256"]) for m in record["inputs"]["modalities"]],
    ]
    if record.get("corruption"):
        provenance.append(("SHA-256 of the corruption spec", record["corruption"]["sha256"]))
    env = record["environment"]
    provenance += [
        ("Device / libraries", f"{env['device']}; Python {env['python']}, torch {env['torch']}, captum {env['captum']}, numpy {env['numpy']}"),
        ("Explanation settings", f"{record['settings']['n_steps']} IG steps, baseline {record['settings']['baseline'] or 'default'}, seed {record['settings']['seed']}"),
        ("Report SHA-256", record["report_sha256"]),
    ]  # fmt: skip
    texts = "".join(f"<p><b>{html.escape(k)}:</b> {html.escape(v)}</p>" for k, v in record["inputs"]["texts"].items())
    title = f"Decision report: {record['case_id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Created {html.escape(record['created_at'])} · DEQ Fusion Lens {html.escape(record['environment']['deq_core'])}</p>
<div class="summary">{html.escape(plain_summary(record))}</div>
<h2>The decision</h2>
{_table(["Class", "Probability"], [(c, f"{p:.4f}") for c, p in prediction["probabilities"].items()], numeric=(1,))}
{texts}
<h2>Why</h2>
<p>Each input's contribution to P({html.escape(attribution['target_class'])}) (exact modality Shapley values), and the
strongest individual features (Integrated Gradients on the {html.escape(attribution['ig_output'])}).</p>
{_table(["Input", "Shapley value", "IG total"], [(n, f"{v:+.5f}", f"{attribution['ig_totals'][n]:+.5f}") for n, v in attribution["shapley"].items()], numeric=(1, 2))}
{_table(["Input", "Feature", "Score"], top_rows, numeric=(2,))}
{_ideal_section(record)}
<div class="figures">{''.join(parts)}</div>
<h2>How far to trust it</h2>
{verdict}
{_table(["Check", "Result"], trust_rows)}
<h2>Provenance</h2>
<p>Check this report with <code>python -m deq_core.audit verify report.json</code>: it re-runs the decision from the
inputs and settings recorded in the JSON file and compares.</p>
{_table(["What", "Value"], provenance)}
</body></html>
"""


def _ideal_section(record: Mapping) -> str:
    reference = record.get("ideal_reference")
    if not reference:
        return ""
    model_values = record["attribution"]["shapley"]
    rows = [(name, reference["shows"][name], f"{model_values[name]:+.5f}", f"{value:+.5f}")
            for name, value in reference["shapley"].items()]  # fmt: skip
    return (
        f"<h2>Against the ideal classifier</h2><p>This case comes from the inspection generator, which records what "
        f"each input truly shows; the ideal classifier reads that perfectly and weighs it by Bayes' rule. "
        f"{html.escape(reference['sentence'])}</p>"
        + _table(["Input", "What it truly shows", "Model's Shapley value", "Ideal's Shapley value"], rows, numeric=(2, 3))
    )


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class ReportVerification:
    ok: bool
    problems: tuple[str, ...]
    checked: tuple[str, ...]


def verify_report(record: Mapping, model_folder: str | Path | None = None) -> ReportVerification:
    """Re-run the decision from the record alone and compare.

    Checks the report's own hash, the model files' hashes, the embedded inputs'
    hashes, then the prediction, probabilities, Shapley values and top-feature
    scores within ``record["tolerances"]``.
    """
    problems: list[str] = []
    checked: list[str] = []
    recorded_hash = record.get("report_sha256")
    if record_sha256(record) != recorded_hash:
        problems.append(f"report SHA-256: the content hashes to {record_sha256(record)[:16]}..., the report says "
                        f"{str(recorded_hash)[:16]}... (the report was edited)")  # fmt: skip
    checked.append("report hash")
    folder = Path(model_folder or record["model"]["folder"])
    for name, expected in record["model"]["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"model file {path} is missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{name} SHA-256 {actual[:16]}... differs from the recorded {expected[:16]}... (the model changed)")
    checked.append("model file hashes")
    try:
        original = tuple(unembed_tensor(m)[None] for m in record["inputs"]["modalities"])
    except (ValueError, KeyError, TypeError) as error:
        problems.append(f"embedded inputs unreadable: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked))
    checked.append("input hashes")
    try:
        model = load_model(folder, device="cpu", verify_checksums=False)
    except (ModelLoadError, OSError) as error:
        problems.append(f"model cannot be loaded: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked))
    corruption = None
    if record.get("corruption"):
        corruption = CorruptionSet.from_dict(record["corruption"]["spec"])
        if hashlib.sha256(canonical_json(corruption.to_dict()).encode()).hexdigest() != record["corruption"]["sha256"]:
            problems.append("corruption spec does not match its SHA-256")
    settings = ReportSettings.from_dict(record["settings"])
    seen = model_inputs(model, original, record["case_id"], corruption)
    if corruption is not None:
        for m, x in zip(model.config.modalities, seen):
            if tensor_sha256(x[0]) != record["corruption"]["model_inputs_sha256"][m.name]:
                problems.append(f"corrupted input {m.name}: replaying the corruption gives different values")
    explanation = _explain(model, seen, record["inputs"]["texts"], settings)
    problems += compare(record, explanation, settings.top_k)
    checked.append("re-run: prediction, probabilities, Shapley values, top features")
    if "ideal_reference" in record:
        problems += _compare_reference(record, seen, explanation.target)
        checked.append("ideal classifier reference")
    return ReportVerification(not problems, tuple(problems), tuple(checked))


def _compare_reference(record: Mapping, seen: Sequence[torch.Tensor], target: int) -> list[str]:
    """The recorded ideal-classifier reference against one recomputed from the recorded inputs."""
    names = tuple(m["name"] for m in record["inputs"]["modalities"])
    fresh = ideal_reference(record["case_id"], seen, record["inputs"]["texts"], target, names)
    if fresh is None:
        return ["ideal reference: the recorded inputs are not the generated case they claim to be"]
    recorded = record["ideal_reference"]
    recorded_model = record["attribution"]["shapley"]
    again = _reference_record(fresh, {n: recorded_model.get(n, math.nan) for n in fresh.shapley.modality_names})
    problems = [f"ideal reference {key}: recorded {recorded.get(key)!r}, recomputed {again[key]!r}"
                for key in ("label", "shows", "target_class", "sentence") if recorded.get(key) != again[key]]  # fmt: skip
    tolerance = {**TOLERANCES, **record.get("tolerances", {})}["shapley"]
    recorded_values = recorded.get("shapley", {})
    for name, value in again["shapley"].items():
        if abs(recorded_values.get(name, math.inf) - value) > tolerance:
            problems.append(f"ideal reference Shapley value of {name}: recorded {recorded_values.get(name)}, "
                            f"recomputed {value:.8g}")  # fmt: skip
    return problems


def compare(record: Mapping, explanation: Explanation, top_k: int = TOP_K) -> list[str]:
    """Differences between a recorded decision and a fresh explanation, beyond the record's tolerances."""
    tolerances = {**TOLERANCES, **record.get("tolerances", {})}
    problems = []
    prediction = record["prediction"]
    if explanation.prediction != prediction["index"]:
        problems.append(f"prediction: recorded {prediction['class']!r}, re-run gives {explanation.predicted_class!r}")
    for name, p in zip(explanation.class_names, explanation.probabilities):
        recorded = prediction["probabilities"].get(name)
        if recorded is None or abs(recorded - p) > tolerances["probability"]:
            problems.append(f"P({name}): recorded {recorded}, re-run gives {p:.8g}")
    attribution = record["attribution"]
    for name, value in zip(explanation.shapley.modality_names, explanation.shapley.values.tolist()):
        recorded = attribution["shapley"].get(name)
        if recorded is None or abs(recorded - value) > tolerances["shapley"]:
            problems.append(f"Shapley value of {name}: recorded {recorded}, re-run gives {value:.8g} "
                            f"(tolerance {tolerances['shapley']:g})")  # fmt: skip
    for i, m in enumerate(explanation.attribution.modalities):
        fresh = {tuple(s.index): s.score for s in top_features(explanation.attribution, i, k=top_k)}
        for feature in attribution["top_features"].get(m.name, []):
            score = float(explanation.attribution.maps[i][tuple(feature["index"])])
            if abs(score - feature["score"]) > tolerances["feature_score"]:
                problems.append(f"top feature {m.name} / {feature['name']}: recorded {feature['score']:.8g}, "
                                f"re-run gives {score:.8g} (tolerance {tolerances['feature_score']:g})")  # fmt: skip
            elif tuple(feature["index"]) not in fresh and len(fresh) >= top_k:
                smallest = min(abs(v) for v in fresh.values())
                if abs(score) + tolerances["feature_score"] < smallest:
                    problems.append(f"top feature {m.name} / {feature['name']} is no longer among the top {top_k}")
    return problems


# --------------------------------------------------------------------------- log


def log_report(report: DecisionReport, log: AuditLog, report_path: str | Path = "", source: str = "cli"):
    """Append one report to the audit log; returns the ``AuditEntry``."""
    record = report.record
    reliability = record["reliability"]
    return log.append(
        model_name=record["model"]["name"],
        model_checksum=record["model"]["checksum"],
        case_id=record["case_id"],
        prediction=record["prediction"]["class"],
        report_sha256=report.sha256,
        report_path=str(report_path),
        summary={
            "probability": record["prediction"]["probabilities"][record["prediction"]["class"]],
            "label": record["prediction"]["label"],
            "reliable": reliability["reliable"],
            "converged": reliability["converged"],
            "corruption": record["corruption"]["description"] if record.get("corruption") else None,
            "plain": plain_summary(record),
        },
        source=source,
    )


# --------------------------------------------------------------------------- CLI


def _report_cases(args) -> int:
    from tqdm import tqdm

    from deq_core.data import load_dataset

    model = load_model(args.model, device=args.device)
    dataset = args.data or model.config.dataset
    data = load_dataset(dataset, args.split, modalities=model.config.modalities)
    corruption = CorruptionSet.from_dict(json.loads(Path(args.corruption).read_text())) if args.corruption else None
    settings = ReportSettings(n_steps=args.steps, seed=args.seed)
    log = AuditLog(args.db)
    out = Path(args.out)
    if args.cases == "all":
        ids = list(data.ids)
    else:
        ids = [c.strip() for c in (args.cases or args.case).split(",") if c.strip()]
        unknown = [c for c in ids if c not in data.ids]
        if unknown:
            raise ValueError(f"{dataset}/{args.split} has no case {unknown[0]!r} (e.g. {data.ids[0]!r})")
    many = len(ids) > 1 or args.cases == "all"
    rows = []
    for case_id in tqdm(ids, desc="reports", unit="case", disable=not many):
        inputs, label = data.case(case_id)
        row = data.ids.index(case_id)
        report = build_report(model, args.model, inputs, case_id, texts={k: v[row] for k, v in data.texts.items()},
                              corruption=corruption, settings=settings,
                              source={"dataset": data.name, "split": args.split}, label=label)  # fmt: skip
        folder = out / _safe(case_id) if many else out
        json_path, _ = report.write(folder)
        log_report(report, log, json_path.resolve(), source="cli")
        r = report.record
        rows.append({
            "case_id": case_id, "label": r["prediction"]["label"], "prediction": r["prediction"]["class"],
            "confidence": r["prediction"]["probabilities"][r["prediction"]["class"]],
            "reliable": r["reliability"]["reliable"], "converged": r["reliability"]["converged"],
            "iterations": r["reliability"]["iterations"], "report_sha256": report.sha256,
            "folder": str(folder),
        })  # fmt: skip
    if many:
        with open(out / "summary.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"{len(rows)} reports under {out}; summary in {out / 'summary.csv'}")
    else:
        print(f"{out / HTML_NAME}\n{out / JSON_NAME}\nprediction: {rows[0]['prediction']}  sha256: {rows[0]['report_sha256']}")
    return 0


def _safe(case_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def _verify(args) -> int:
    failed = 0
    for path in args.reports:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        result = verify_report(record, args.model)
        if result.ok:
            print(f"OK: {path} verified ({', '.join(result.checked)}; tolerances {record.get('tolerances', TOLERANCES)})")
            continue
        failed += 1
        print(f"FAILED: {path}")
        for problem in result.problems:
            print(f"  - {problem}")
    return 1 if failed else 0


def _verify_log(args) -> int:
    log = AuditLog(args.db)
    result = log.verify()
    if result.ok:
        print(f"OK: {result.entries} entries, chain intact ({log.url})")
        return 0
    print(f"FAILED: {log.url} ({result.entries} entries)")
    for problem in result.problems:
        print(f"  - {problem}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.audit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write report.html and report.json for one or more cases")
    report.add_argument("--model", required=True, type=Path, help="model folder")
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--case", help="case id")
    which.add_argument("--cases", help="comma-separated case ids, or 'all'")
    report.add_argument("--out", required=True, type=Path, help="output folder")
    report.add_argument("--split", default="test", choices=("train", "val", "test"))
    report.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    report.add_argument("--corruption", default=None, help="JSON file of a CorruptionSet applied before the decision")
    report.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integrated Gradients steps")
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--device", default="cpu")
    report.add_argument("--db", default=None, help="audit log URL (default: $DEQ_LENS_AUDIT_DB or .cache/audit.sqlite)")
    verify = commands.add_parser("verify", help="re-run a report's decision and compare")
    verify.add_argument("reports", type=Path, nargs="+", metavar="report.json")
    verify.add_argument("--model", default=None, type=Path, help="model folder (default: the one recorded)")
    verify_log = commands.add_parser("verify-log", help="check the audit log's hash chain")
    verify_log.add_argument("--db", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return _report_cases(args)
        if args.command == "verify":
            return _verify(args)
        return _verify_log(args)
    except (ModelLoadError, ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if args.command == "report" else 1  # verify: anything but a full match is a failure


if __name__ == "__main__":
    raise SystemExit(main())
