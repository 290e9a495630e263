"""Decision reports: one case's decision, its explanation and everything needed to re-run it.

A report is a JSON record (hashes of the model files, of every input and of the
corruption spec; solver settings, seeds, device and library versions; the
prediction, trajectory, attributions and reliability figures; the inputs
themselves, base64 of their raw bytes; and the record's own SHA-256) plus a
self-contained HTML page for people (Plotly inlined, readable offline, printable).

This module builds and writes reports and logs them (``AuditLog``);
``deq_core.audit.verify`` re-runs a decision from the record alone, and
``python -m deq_core.audit`` (``deq_core.audit.cli``) does both from the shell.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from deq_core.audit.hashing import embed_tensor, json_sha256, record_sha256, tensor_sha256
from deq_core.audit.html import plain_summary, render_html
from deq_core.audit.log import AuditLog
from deq_core.engine.checkpoint import CONFIG, WEIGHTS, model_checksum, sha256_file
from deq_core.engine.config import SolverSettings
from deq_core.engine.model import FusionModel
from deq_core.explain.attribution import DEFAULT_STEPS, top_features
from deq_core.explain.corrupt import CorruptionSet, InputReference, apply
from deq_core.explain.explanation import Explanation, explain_case
from deq_core.explain.ideal import IdealReference, ideal_reference, ranking_sentence

FORMAT = "deq-fusion-lens/decision-report"
VERSION = 1
JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Re-running on the same kind of device reproduces the numbers bit for bit; these
# tolerances absorb a different thread count or BLAS build, not a different model.
TOLERANCES = {"probability": 1e-6, "shapley": 1e-5, "feature_score": 1e-5}
TOP_K = 10


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


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


def run_explanation(model: FusionModel, inputs: Sequence[torch.Tensor], texts, settings: ReportSettings) -> Explanation:
    """The explanation a report records; ``verify`` calls it again, so both seed and configure it identically."""
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
        explanation = run_explanation(model, seen, texts, settings)
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
            "sha256": json_sha256(corruption.to_dict()),
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
        record["ideal_reference"] = reference_record(reference, model_values)
    record["report_sha256"] = record_sha256(record)
    return DecisionReport(record=record, html=render_html(record), explanation=explanation)


def reference_record(reference: IdealReference, model_values: Mapping[str, float]) -> dict:
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
