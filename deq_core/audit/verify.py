"""Verification: re-run a report's decision from its record alone and compare, trusting nothing it says of itself.

``verify_report`` checks that the report was issued (signed by a deployment key the
audit log knows, and recorded as that log's entry), then the record's hash, the
model files' and embedded inputs' hashes, the texts against the embedded tokens,
the case against its dataset row (inputs, texts, label) where it is one, replays
any corruption, re-explains the case with the recorded settings and compares every
field a re-run reproduces, within tolerances fixed here (``TOLERANCES``), never
the report's own. What cannot be recomputed is listed in ``unchecked``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from deq_core.audit.hashing import json_sha256, record_sha256, tensor_sha256
from deq_core.audit.log import AuditLog
from deq_core.audit.record import TOP_K, ReportRecord, Tolerances
from deq_core.audit.report import (
    ReportSettings,
    attribution_record,
    corruption_record,
    edge_record,
    model_inputs,
    prediction_record,
    reference_record,
    reliability_record,
    run_explanation,
    stability_record,
    trajectory_record,
)
from deq_core.data.references import dataset_reference, reference_provider
from deq_core.engine.adapter import TrustCode
from deq_core.engine.checkpoint import ModelLoadError, load_model, model_checksum, sha256_file
from deq_core.engine.model import FusionModel
from deq_core.engine.text import tokenize
from deq_core.explain.attribution import top_features
from deq_core.explain.explanation import Explanation
from deq_core.explain.stability import Anchor

# The verifier's tolerances: a report states the ones it was made with, but a report
# that could loosen its own check would check nothing.
TOLERANCES = Tolerances()
FIGURE_TOLERANCE = 1e-5  # other re-run figures (residuals, IG totals and deltas), relative above 1
MAX_FIELD_PROBLEMS = 20
# A recorded start must lie this close (relative) to its class equilibrium recomputed the same way
# (the same batched solve): room for another thread count or BLAS build, not for another state.
ANCHOR_DISTANCE = 1e-5


@dataclass(frozen=True)
class ReportVerification:
    """What ``verify_report`` found: ``ok`` when ``problems`` is empty; ``checked`` names each check made.

    ``unchecked`` names what the record says that nothing here can recompute (the
    environment, a label of a case that is not a dataset row, ...): those rest on the
    signature alone.
    """

    ok: bool
    problems: tuple[str, ...]
    checked: tuple[str, ...]
    unchecked: tuple[str, ...] = ()


def verify_report(record: ReportRecord | Mapping, model_folder: str | Path | None = None,
                  log: AuditLog | str | None = None, trust_code: TrustCode = False,
                  edge_file: str | Path | None = None) -> ReportVerification:  # fmt: skip
    """Re-run the decision from the record alone and compare; the report must have been issued into ``log``.

    ``record``: the JSON as read (its hash is checked over exactly that content) or a
    ``ReportRecord``. ``log``: the audit log (or its URL) that must hold the report;
    None: the default log (``$DEQ_LENS_AUDIT_DB`` or ``.cache/audit.sqlite``).
    ``trust_code``: the model is a user's own (``adapter.json``) and its code may be run.
    ``edge_file``: where the exported model a report names is now (default: the path recorded).
    """
    raw = record.to_dict() if isinstance(record, ReportRecord) else record
    problems: list[str] = []
    checked: list[str] = []
    unchecked: list[str] = ["environment (where it ran)", "model name and folder (where the files were)"]
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
    problems += issue_problems(record, log if isinstance(log, AuditLog) else AuditLog(log))
    checked.append("signature and audit log entry")
    if record.tolerances != TOLERANCES:
        problems.append(f"tolerances: the report states {record.tolerances.to_dict()}, which are not the verifier's "
                        f"{TOLERANCES.to_dict()} (a report cannot loosen its own check)")  # fmt: skip
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
        return ReportVerification(False, tuple(problems), tuple(checked), tuple(unchecked))
    checked.append("input hashes")
    try:
        model = load_model(folder, device="cpu", verify_checksums=False, trust_code=trust_code)
    except (ModelLoadError, OSError) as error:
        problems.append(f"model cannot be loaded: {error}")
        return ReportVerification(False, tuple(problems), tuple(checked), tuple(unchecked))
    problems += _model_problems(record, model, folder)
    problems += _input_problems(record, model, original)
    checked.append("texts against the embedded tokens")
    label, row_problems, row_note = _dataset_row(record, model, original)
    problems += row_problems
    (checked if row_note is None else unchecked).append(row_note or "case and label against the dataset row")
    recorded_corruption = record.corruption
    corruption = None if recorded_corruption is None else recorded_corruption.spec
    if corruption is not None and json_sha256(corruption.to_dict()) != recorded_corruption.sha256:
        problems.append("corruption spec does not match its SHA-256")
    settings = ReportSettings.from_recorded(record.settings)
    if record.settings.solver_is_models_own and record.settings.solver != model.config.solver:
        problems.append("settings.solver: recorded as the model's own, but the model's own solver is another")
    seen = model_inputs(model, original, record.case_id, corruption)
    if corruption is not None:
        for m, x in zip(model.config.modalities, seen):
            if tensor_sha256(x[0]) != recorded_corruption.model_inputs_sha256.get(m.name):
                problems.append(f"corrupted input {m.name}: replaying the corruption gives different values")
        again = corruption_record(model, corruption, seen).to_dict()
        problems += _differences("corruption", recorded_corruption.to_dict(), again)
    anchors, anchor_problems = _recorded_anchors(record, model)
    problems += anchor_problems
    starts = 0 if record.stability is None else len(record.stability.starts)
    if record.stability is None and model.config.architecture == "deq":
        unchecked.append("stability of the equilibrium (the report predates its record)")
    explanation = run_explanation(model, seen, record.inputs.texts, settings, anchors, starts)
    problems += compare(record, explanation, settings.top_k)
    problems += _rerun_field_problems(record, model, explanation, label, settings.top_k)
    checked.append("re-run: prediction, probabilities, trajectory, Shapley values, IG, top features, reliability"
                   + (", stability and uniqueness" if record.stability is not None else ""))
    if record.stability is not None and record.stability.anchors:
        problems += _anchor_origin_problems(record, model, anchors)
        checked.append("stability starts against the model's class equilibria")
    if record.ideal_reference is not None:
        problems += _compare_reference(record, model.config.dataset, seen, explanation.target)
        checked.append("ideal classifier reference")
    if record.edge is not None:
        edge_problems, note = _edge_problems(record, model, seen, explanation, edge_file)
        problems += edge_problems
        (checked if note is None else unchecked).append(note or "exported model: file hash, K, precision, "
                                                        "re-run with onnxruntime")  # fmt: skip
    return ReportVerification(not problems, tuple(problems), tuple(checked), tuple(unchecked))


# --------------------------------------------------------------------------- issued: signature and log


def issue_problems(record: ReportRecord, log: AuditLog) -> list[str]:
    """Whether ``record`` was issued: signed by a key ``log`` knows, and recorded as ``log``'s entry.

    The signature covers the report's hash and the log's head just after its
    entry; the entry must carry that hash, that case, model and decision, and the
    log's own checkpoint for it must be the very one the report carries.
    """
    signature = record.signature
    if signature is None:
        return ["signature: the report is not signed (it was never issued into an audit log)"]
    if not signature.valid_for(record.report_sha256):
        return ["signature: it does not verify against the report's content (the report was edited or the "
                "signature forged)"]  # fmt: skip
    checkpoint = signature.checkpoint
    if not checkpoint.valid() or checkpoint.public_key != signature.public_key:
        return ["signature: the log checkpoint the report carries is not signed by the report's key"]
    problems = []
    if signature.public_key not in log.public_keys():
        problems.append(f"signature: the key {signature.public_key[:16]}... is not a key of the audit log {log.url} "
                        "(the report was signed elsewhere)")  # fmt: skip
    entry = log.entry(checkpoint.count)
    if entry is None:
        return problems + [f"audit log: {log.url} has no entry {checkpoint.count}, the entry this report was issued as"]
    expected = {"report_sha256": record.report_sha256, "case_id": record.case_id,
                "model_checksum": record.model.checksum, "prediction": record.prediction.class_name,
                "entry_hash": checkpoint.head_hash}  # fmt: skip
    for name, value in expected.items():
        if getattr(entry, name) != value:
            problems.append(f"audit log entry {entry.id}: its {name} is {getattr(entry, name)[:40]!r}, the report's "
                            f"is {value[:40]!r} (the report is not the one recorded)")  # fmt: skip
    logged = log.checkpoint(checkpoint.count)
    if logged is None or logged.signature != checkpoint.signature:
        problems.append(f"audit log: its checkpoint {checkpoint.count} is not the one the report carries")
    if not _not_after(record.created_at, entry.created_at):
        problems.append(f"created_at: {record.created_at!r} is not before its log entry's time {entry.created_at!r}")
    chain = log.verify()
    if not chain.ok:
        problems.append(f"audit log: the log fails its own check ({chain.problems[0]})")
    return problems


def _not_after(created_at: str, logged_at: str) -> bool:
    try:
        return datetime.fromisoformat(created_at) <= datetime.fromisoformat(logged_at)
    except ValueError:
        return False


# --------------------------------------------------------------------------- what the record says of model and inputs


def _model_problems(record: ReportRecord, model: FusionModel, folder: Path) -> list[str]:
    problems = []
    if model.config.architecture != record.model.architecture:
        problems.append(f"model.architecture: recorded {record.model.architecture!r}, the model is "
                        f"{model.config.architecture!r}")  # fmt: skip
    if model_checksum(folder) != record.model.checksum:
        problems.append("model.checksum: the model folder's checksum is not the recorded one")
    return problems


def _input_problems(record: ReportRecord, model: FusionModel, original: Sequence[torch.Tensor]) -> list[str]:
    """Modalities as the model has them, and each text shown as exactly the text its tokens are."""
    problems = []
    modalities = model.config.modalities
    recorded = record.inputs.modalities
    if [(m.name, m.kind) for m in recorded] != [(m.name, m.kind) for m in modalities]:
        return [f"inputs: recorded modalities {[m.name for m in recorded]} are not the model's "
                f"{[m.name for m in modalities]}"]  # fmt: skip
    by_name = {m.name: (m, x) for m, x in zip(modalities, original)}
    for name, text in record.inputs.texts.items():
        if name not in by_name or by_name[name][0].kind != "text":
            problems.append(f"inputs.texts.{name}: the model has no text input {name!r}")
            continue
        modality, tokens = by_name[name]
        expected = tokenize(text, modality.vocabulary, modality.shape[0])
        if tokens.reshape(-1).tolist() != expected:
            problems.append(f"inputs.texts.{name}: the text shown is not the text the model read (its tokens differ)")
    return problems


def _dataset_row(record: ReportRecord, model: FusionModel, original: Sequence[torch.Tensor]):
    """(label index or None, problems, note): a case from a dataset split must be that split's row, label included.

    ``note`` is what could not be checked (a case that names no dataset row, or whose
    dataset cannot be read here), else None.
    """
    names = model.config.class_names
    recorded_label = record.prediction.label
    label = None if recorded_label is None or recorded_label not in names else names.index(recorded_label)
    dataset, split = record.source.get("dataset"), record.source.get("split")
    if not isinstance(dataset, str) or not isinstance(split, str):
        return label, [], ("label (the case names no dataset row)" if recorded_label is not None else
                           "case origin (not a dataset row: an upload or a case built in code)")  # fmt: skip
    from deq_core.data import load_dataset

    try:
        data = load_dataset(dataset, split, modalities=model.config.modalities)
    except (OSError, ValueError, KeyError) as error:
        return label, [], f"case and label against the dataset {dataset!r} (it cannot be read here: {error})"
    if record.case_id not in data.ids:
        return label, [f"source: {dataset}/{split} has no case {record.case_id!r}"], None
    inputs, true_label = data.case(record.case_id)
    row = data.ids.index(record.case_id)
    problems = [f"inputs.{m.name}: not the dataset's {record.case_id} ({dataset}/{split})"
                for m, x, y in zip(model.config.modalities, original, inputs)
                if tensor_sha256(x.reshape(m.shape)) != tensor_sha256(y.reshape(m.shape))]  # fmt: skip
    texts = {k: v[row] for k, v in data.texts.items()}
    if record.inputs.texts != texts:
        problems.append(f"inputs.texts: not the dataset's texts of {record.case_id}")
    truth = None if true_label is None else names[int(true_label)]
    if recorded_label != truth:
        problems.append(f"prediction.label: recorded {recorded_label!r}, the dataset says {truth!r}")
    return (None if true_label is None else int(true_label)), problems, None


# --------------------------------------------------------------------------- the re-run


def _close(a: Any, b: Any, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _tolerance(path: str) -> float:
    if "probabilities" in path:
        return TOLERANCES.probability
    if any(part in path for part in ("shapley", "full_value", "empty_value")):
        return TOLERANCES.shapley
    return FIGURE_TOLERANCE


def _differences(path: str, recorded: Any, fresh: Any) -> list[str]:
    """Every place ``recorded`` and ``fresh`` (JSON values) differ, numbers within ``_tolerance(path)``."""
    if isinstance(recorded, Mapping) and isinstance(fresh, Mapping):
        if set(recorded) != set(fresh):
            return [f"{path}: recorded keys {sorted(recorded)}, re-run gives {sorted(fresh)}"]
        return [p for k in recorded for p in _differences(f"{path}.{k}", recorded[k], fresh[k])]
    if isinstance(recorded, (list, tuple)) and isinstance(fresh, (list, tuple)):
        if len(recorded) != len(fresh):
            return [f"{path}: recorded {len(recorded)} values, re-run gives {len(fresh)}"]
        return [p for i, (a, b) in enumerate(zip(recorded, fresh)) for p in _differences(f"{path}[{i}]", a, b)]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (recorded, fresh))
    if numbers and not (isinstance(recorded, int) and isinstance(fresh, int)):
        if not _close(recorded, fresh, _tolerance(path)):
            return [f"{path}: recorded {recorded!r}, re-run gives {fresh!r}"]
        return []
    return [] if recorded == fresh else [f"{path}: recorded {recorded!r:.80}, re-run gives {fresh!r:.80}"]


def _rerun_field_problems(record: ReportRecord, model: FusionModel, explanation: Explanation, label: int | None,
                          top_k: int) -> list[str]:  # fmt: skip
    """Every recorded field the re-run reproduces, rebuilt by the report's own builders and compared."""
    config = model.config
    problems = _differences("prediction", record.prediction.to_dict(), prediction_record(explanation, config, label).to_dict())
    fresh_trajectory = trajectory_record(explanation)
    problems += _differences("trajectory", None if record.trajectory is None else record.trajectory.to_dict(),
                             None if fresh_trajectory is None else fresh_trajectory.to_dict())  # fmt: skip
    recorded, fresh = record.attribution.to_dict(), attribution_record(explanation, config, top_k).to_dict()
    recorded.pop("top_features"), fresh.pop("top_features")  # scores compared in ``compare``; ties may reorder
    problems += _differences("attribution", recorded, fresh)
    problems += _differences("reliability", record.reliability.to_dict(), reliability_record(explanation).to_dict())
    fresh_stability = stability_record(explanation)
    recorded_stability = None if record.stability is None else record.stability.to_dict()
    if recorded_stability is not None and fresh_stability is not None:
        # the anchors are inputs of the check, read back from the record and checked on their own
        recorded_stability.pop("anchors")
        fresh_stability = fresh_stability.to_dict()
        fresh_stability.pop("anchors")
        problems += _differences("stability", recorded_stability, fresh_stability)
    elif (recorded_stability is None) != (fresh_stability is None):
        problems.append("stability: " + ("recorded, but the re-run has none" if fresh_stability is None
                                         else "the re-run has one, the record none"))  # fmt: skip
    problems = list(dict.fromkeys(problems))  # ``compare`` names some of these in its own words
    if len(problems) > MAX_FIELD_PROBLEMS:
        problems = problems[:MAX_FIELD_PROBLEMS] + [f"... and {len(problems) - MAX_FIELD_PROBLEMS} more differences"]
    return problems


def _edge_problems(record: ReportRecord, model: FusionModel, seen: Sequence[torch.Tensor], explanation: Explanation,
                   edge_file: str | Path | None) -> tuple[list[str], str | None]:  # fmt: skip
    """The exported model the report names, re-run on the inputs the model saw: ``(problems, unchecked note)``.

    A file that hashes otherwise than recorded (swapped, re-exported, edited) is a
    problem and is not run; without onnxruntime the re-run is named as unchecked.
    """
    from deq_core.edge import missing_runtime, sha256

    edge = record.edge
    path = Path(edge_file or edge.file)
    if not path.is_file():
        return [f"edge: the exported model {path} is missing"], None
    actual = sha256(path)
    if actual != edge.sha256:
        return [f"edge: {path} hashes to {actual[:16]}..., the report recorded {edge.sha256[:16]}... "
                "(the .onnx file was swapped or changed)"], None  # fmt: skip
    hint = missing_runtime()
    if hint:
        return [], f"exported model's decision (not re-run: {hint})"
    try:
        fresh = edge_record(path, seen, model.config, record.model.checksum, explanation.predicted_class)
    except ValueError as error:
        return [f"edge: {error}"], None
    recorded = edge.to_dict()
    fresh_dict = fresh.to_dict()
    recorded.pop("file"), fresh_dict.pop("file")
    return _differences("edge", recorded, fresh_dict), None


def _recorded_anchors(record: ReportRecord, model: FusionModel) -> tuple[tuple[Anchor, ...], list[str]]:
    """The stability check's class equilibria as the record embeds them (the starts ``verify`` re-runs from)."""
    if record.stability is None:
        return (), []
    names, anchors, problems = model.config.class_names, [], []
    for i, anchor in enumerate(record.stability.anchors):
        if anchor.class_name not in names:
            problems.append(f"stability.anchors[{i}]: {anchor.class_name!r} is not a class of the model")
            continue
        try:
            anchors.append(Anchor(names.index(anchor.class_name), anchor.case_id, anchor.tensor()))
        except ValueError as error:
            problems.append(f"stability.anchors[{i}]: unreadable ({error})")
    return tuple(anchors), problems


def _anchor_origin_problems(record: ReportRecord, model: FusionModel, anchors: Sequence[Anchor]) -> list[str]:
    """Each recorded start state must be the class equilibrium ``Lens.stability_anchors`` picks, recomputed here.

    A report whose starts were made up would still re-run the same; this recomputes the
    classes' typical equilibria from the model's test split (one batched solve per class,
    as ``class_anchors`` does) and compares case and state (where the dataset can be read).
    """
    from deq_core.data import load_dataset
    from deq_core.explain.stability import class_anchors

    try:
        data = load_dataset(model.config.dataset, "test", modalities=model.config.modalities)
    except (OSError, ValueError, KeyError) as error:
        return [f"stability.anchors: the model's dataset cannot be read to check them ({error})"]
    settings = ReportSettings.from_recorded(record.settings).solver
    fresh = {a.class_index: a for a in class_anchors(model, data, solver=settings)}
    problems = []
    for anchor in anchors:
        name = model.config.class_names[anchor.class_index]
        again = fresh.get(anchor.class_index)
        if again is None or again.case_id != anchor.case_id:
            problems.append(f"stability.anchors: the start named {anchor.case_id} is not the typical equilibrium of "
                            f"{name!r} (that is {None if again is None else again.case_id})")  # fmt: skip
            continue
        distance = float((again.z - anchor.z).norm() / again.z.norm().clamp_min(1e-30))
        if distance > ANCHOR_DISTANCE:
            problems.append(f"stability.anchors: the start named {anchor.case_id} is not that case's equilibrium "
                            f"(relative distance {distance:.1e})")  # fmt: skip
    return problems


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
    tolerance = TOLERANCES.shapley
    for name, value in again.shapley.items():
        if abs(recorded.shapley.get(name, math.inf) - value) > tolerance:
            problems.append(f"ideal reference Shapley value of {name}: recorded {recorded.shapley.get(name)}, "
                            f"recomputed {value:.8g}")  # fmt: skip
    problems += _differences("ideal_reference.probabilities", recorded.probabilities, again.probabilities)
    return problems


def compare(record: ReportRecord | Mapping, explanation: Explanation, top_k: int = TOP_K) -> list[str]:
    """Differences between a recorded decision and a fresh explanation, beyond the verifier's tolerances."""
    record = record if isinstance(record, ReportRecord) else ReportRecord.from_dict(record)
    tolerances = TOLERANCES
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
        fresh = {tuple(s.index): s for s in top_features(explanation.attribution, i, k=top_k)}
        for feature in attribution.top_features.get(m.name, ()):
            if len(feature.index) != explanation.attribution.maps[i].dim() or any(
                    not 0 <= j < n for j, n in zip(feature.index, explanation.attribution.maps[i].shape)):
                problems.append(f"top feature {m.name} / {feature.name}: index {list(feature.index)} is not a feature")
                continue
            score = float(explanation.attribution.maps[i][feature.index])
            if abs(score - feature.score) > tolerances.feature_score:
                problems.append(f"top feature {m.name} / {feature.name}: recorded {feature.score:.8g}, "
                                f"re-run gives {score:.8g} (tolerance {tolerances.feature_score:g})")  # fmt: skip
            elif feature.index in fresh and fresh[feature.index].name != feature.name:
                problems.append(f"top feature {m.name} / {feature.name}: the feature at {list(feature.index)} is "
                                f"{fresh[feature.index].name!r}")  # fmt: skip
            elif feature.index not in fresh and len(fresh) >= top_k:
                smallest = min(abs(s.score) for s in fresh.values())
                if abs(score) + tolerances.feature_score < smallest:
                    problems.append(f"top feature {m.name} / {feature.name} is no longer among the top {top_k}")
        if len(attribution.top_features.get(m.name, ())) != len(fresh):
            problems.append(f"top features of {m.name}: recorded {len(attribution.top_features.get(m.name, ()))}, "
                            f"re-run gives {len(fresh)}")  # fmt: skip
    return problems
