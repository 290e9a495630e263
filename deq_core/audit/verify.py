"""Verification: re-run a report's decision from its record alone and compare.

``verify_report`` checks the record's own hash, the model files' and embedded
inputs' hashes, replays any corruption, re-explains the case with the recorded
settings and compares within the recorded tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from deq_core.audit.hashing import json_sha256, record_sha256, tensor_sha256
from deq_core.audit.record import TOP_K, ReportRecord, Tolerances
from deq_core.audit.report import ReportSettings, model_inputs, reference_record, run_explanation
from deq_core.data.references import dataset_reference, reference_provider
from deq_core.engine.checkpoint import ModelLoadError, load_model, sha256_file
from deq_core.explain.attribution import top_features
from deq_core.explain.explanation import Explanation


@dataclass(frozen=True)
class ReportVerification:
    """What ``verify_report`` found: ``ok`` when ``problems`` is empty; ``checked`` names each check made."""

    ok: bool
    problems: tuple[str, ...]
    checked: tuple[str, ...]


def verify_report(record: ReportRecord | Mapping, model_folder: str | Path | None = None) -> ReportVerification:
    """Re-run the decision from the record alone and compare.

    Checks the report's own hash, the model files' hashes, the embedded inputs'
    hashes, then the prediction, probabilities, Shapley values and top-feature
    scores within the record's tolerances. ``record``: the JSON as read (its hash is
    checked over exactly those bytes' content) or a ``ReportRecord``.
    """
    raw = record.to_dict() if isinstance(record, ReportRecord) else record
    problems: list[str] = []
    checked: list[str] = []
    recorded_hash = raw.get("report_sha256")
    if record_sha256(raw) != recorded_hash:
        problems.append(f"report SHA-256: the content hashes to {record_sha256(raw)[:16]}..., the report says "
                        f"{str(recorded_hash)[:16]}... (the report was edited)")  # fmt: skip
    checked.append("report hash")
    try:
        record = ReportRecord.from_dict(raw)
    except ValueError as error:
        problems.append(f"report record unreadable: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked))
    folder = Path(model_folder or record.model.folder)
    for name, expected in record.model.files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"model file {path} is missing")
            continue
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{name} SHA-256 {actual[:16]}... differs from the recorded {expected[:16]}... (the model changed)")
    checked.append("model file hashes")
    try:
        original = tuple(m.tensor()[None] for m in record.inputs.modalities)
    except ValueError as error:
        problems.append(f"embedded inputs unreadable: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked))
    checked.append("input hashes")
    try:
        model = load_model(folder, device="cpu", verify_checksums=False)
    except (ModelLoadError, OSError) as error:
        problems.append(f"model cannot be loaded: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked))
    recorded_corruption = record.corruption
    corruption = None if recorded_corruption is None else recorded_corruption.spec
    if corruption is not None and json_sha256(corruption.to_dict()) != recorded_corruption.sha256:
        problems.append("corruption spec does not match its SHA-256")
    settings = ReportSettings.from_recorded(record.settings)
    seen = model_inputs(model, original, record.case_id, corruption)
    if corruption is not None:
        for m, x in zip(model.config.modalities, seen):
            if tensor_sha256(x[0]) != recorded_corruption.model_inputs_sha256.get(m.name):
                problems.append(f"corrupted input {m.name}: replaying the corruption gives different values")
    explanation = run_explanation(model, seen, record.inputs.texts, settings)
    problems += compare(record, explanation, settings.top_k)
    checked.append("re-run: prediction, probabilities, Shapley values, top features")
    if record.ideal_reference is not None:
        problems += _compare_reference(record, model.config.dataset, seen, explanation.target)
        checked.append("ideal classifier reference")
    return ReportVerification(not problems, tuple(problems), tuple(checked))


def _compare_reference(record: ReportRecord, dataset: str, seen: Sequence[torch.Tensor], target: int) -> list[str]:
    """The recorded reference (the ideal classifier's) against one recomputed by the model's dataset's provider."""
    if reference_provider(dataset) is None:
        return [f"ideal reference: the model's dataset {dataset!r} has no reference to recompute it with"]
    fresh = dataset_reference(dataset, record.case_id, seen, record.inputs.texts, target, record.inputs.names)
    if fresh is None:
        return ["ideal reference: the recorded inputs are not the generated case they claim to be"]
    recorded = record.ideal_reference
    recorded_model = record.attribution.shapley
    again = reference_record(fresh, {n: recorded_model.get(n, math.nan) for n in fresh.shapley.modality_names})
    problems = [f"ideal reference {key}: recorded {getattr(recorded, key)!r}, recomputed {getattr(again, key)!r}"
                for key in ("label", "shows", "target_class", "sentence") if getattr(recorded, key) != getattr(again, key)]  # fmt: skip
    tolerance = record.tolerances.shapley
    for name, value in again.shapley.items():
        if abs(recorded.shapley.get(name, math.inf) - value) > tolerance:
            problems.append(f"ideal reference Shapley value of {name}: recorded {recorded.shapley.get(name)}, "
                            f"recomputed {value:.8g}")  # fmt: skip
    return problems


def compare(record: ReportRecord | Mapping, explanation: Explanation, top_k: int = TOP_K) -> list[str]:
    """Differences between a recorded decision and a fresh explanation, beyond the record's tolerances."""
    record = record if isinstance(record, ReportRecord) else ReportRecord.from_dict(record)
    tolerances: Tolerances = record.tolerances
    problems = []
    prediction = record.prediction
    if explanation.prediction != prediction.index:
        problems.append(f"prediction: recorded {prediction.class_name!r}, re-run gives {explanation.predicted_class!r}")
    for name, p in zip(explanation.class_names, explanation.probabilities):
        recorded = prediction.probabilities.get(name)
        if recorded is None or abs(recorded - p) > tolerances.probability:
            problems.append(f"P({name}): recorded {recorded}, re-run gives {p:.8g}")
    attribution = record.attribution
    for name, value in zip(explanation.shapley.modality_names, explanation.shapley.values.tolist()):
        recorded = attribution.shapley.get(name)
        if recorded is None or abs(recorded - value) > tolerances.shapley:
            problems.append(f"Shapley value of {name}: recorded {recorded}, re-run gives {value:.8g} "
                            f"(tolerance {tolerances.shapley:g})")  # fmt: skip
    for i, m in enumerate(explanation.attribution.modalities):
        fresh = {tuple(s.index): s.score for s in top_features(explanation.attribution, i, k=top_k)}
        for feature in attribution.top_features.get(m.name, ()):
            score = float(explanation.attribution.maps[i][feature.index])
            if abs(score - feature.score) > tolerances.feature_score:
                problems.append(f"top feature {m.name} / {feature.name}: recorded {feature.score:.8g}, "
                                f"re-run gives {score:.8g} (tolerance {tolerances.feature_score:g})")  # fmt: skip
            elif feature.index not in fresh and len(fresh) >= top_k:
                smallest = min(abs(v) for v in fresh.values())
                if abs(score) + tolerances.feature_score < smallest:
                    problems.append(f"top feature {m.name} / {feature.name} is no longer among the top {top_k}")
    return problems
