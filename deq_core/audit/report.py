"""Decision reports: one case's decision, its explanation and everything needed to re-run it.

A report is a JSON record (hashes of the model files, of every input and of the
corruption spec; solver settings, seeds, device and library versions; the
prediction, trajectory, attributions and reliability figures; the inputs
themselves, base64 of their raw bytes; and the record's own SHA-256) plus a
self-contained HTML page for people (Plotly inlined, readable offline, printable).

This module builds and writes reports and issues them (``issue``: recorded in the
``AuditLog``, signed with the deployment key, written without a half-written or
unlogged file ever appearing under the final names); ``deq_core.audit.verify``
re-runs a decision from the record alone, and ``python -m deq_core.audit``
(``deq_core.audit.cli``) does both from the shell.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from deq_core.case import batch_of_one

from deq_core.audit.hashing import embed_tensor, json_sha256, tensor_sha256
from deq_core.audit.html import PLOTLY_JS, plain_summary, plotly_script, render_html
from deq_core.audit.log import AuditLog
from deq_core.audit.record import (
    FORMAT,
    TOLERANCES,
    TOP_K,
    VERSION,
    AttributionRecord,
    CorruptionRecord,
    EmbeddedInput,
    EnvironmentRecord,
    FeatureRecord,
    ModelInfo,
    PredictionRecord,
    RecordedInputs,
    RecordedSettings,
    ReferenceRecord,
    ReliabilityRecord,
    ReportRecord,
    AnchorRecord,
    EdgeRecord,
    StabilityRecord,
    Tolerances,
    TrajectoryRecord,
)
from deq_core.data.references import Reference, dataset_reference
from deq_core.engine.checkpoint import model_checksum, model_files
from deq_core.engine.config import ModelConfig, SolverSettings
from deq_core.engine.model import FusionModel
from deq_core.explain.attribution import DEFAULT_STEPS, top_features
from deq_core.explain.corrupt import CorruptionSet, InputReference, apply
from deq_core.explain.explanation import STABILITY_STARTS, Explanation, explain_case
from deq_core.explain.stability import Anchor

JSON_NAME = "report.json"
HTML_NAME = "report.html"
CLAIM_NAME = ".report.claim"  # present while a report is being issued into a folder, and after a run was killed doing so


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

    def recorded(self, model: FusionModel) -> RecordedSettings:
        """These settings as a report records them: the solver that runs on ``model`` resolved."""
        return RecordedSettings(self.n_steps, self.baseline, self.target, self.cross_check, self.top_k, self.seed,
                                self.solver or model.config.solver, self.solver is None)  # fmt: skip

    @classmethod
    def from_recorded(cls, recorded: RecordedSettings) -> "ReportSettings":
        """The settings to replay: a model's own solver stays the model's own."""
        solver = None if recorded.solver_is_models_own else recorded.solver
        return cls(recorded.n_steps, recorded.baseline, recorded.target, recorded.cross_check, recorded.top_k,
                   recorded.seed, solver)  # fmt: skip

    def to_dict(self, model: FusionModel) -> dict:
        return self.recorded(model).to_dict()

    @classmethod
    def from_dict(cls, data: Mapping) -> "ReportSettings":
        return cls.from_recorded(RecordedSettings.from_dict(data))


@dataclass(frozen=True)
class DecisionReport:
    """One decision report: ``data`` (the typed record, carrying its own hash), its ``html`` page and the explanation.

    ``record`` is ``data`` as JSON-ready dicts (a fresh copy each time: edit it freely).
    """

    data: ReportRecord
    html: str
    explanation: Explanation

    @property
    def record(self) -> dict:
        return self.data.to_dict()

    @property
    def sha256(self) -> str:
        return self.data.report_sha256

    @property
    def case_id(self) -> str:
        return self.data.case_id

    @property
    def predicted_class(self) -> str:
        return self.data.prediction.class_name

    def json_text(self) -> str:
        return json.dumps(self.record, indent=1, sort_keys=True) + "\n"

    def write(self, folder: str | Path, scripts: str | Path | None = None) -> tuple[Path, Path]:
        """Write ``report.html`` then ``report.json`` into ``folder``; returns both paths.

        The page reads plotly.js from ``plotly.min.js`` in ``scripts`` (default ``folder``;
        a batch passes the parent, so its reports share one copy), written there first if
        it is not there yet. Each file is written under a temporary name, flushed to disk
        and renamed, so a file under its final name is always whole; ``report.json`` comes
        last, so a ``report.json`` present means its page is too. A ``report.json`` of
        another report already there is not overwritten (FileExistsError).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, html_path = folder / JSON_NAME, folder / HTML_NAME
        existing = _report_sha256_at(json_path)
        if existing is not None and existing != self.sha256:
            raise FileExistsError(f"{json_path} holds another report ({existing[:16]}...); refusing to overwrite it")
        script = write_plotly_js(Path(scripts) if scripts is not None else folder)
        relative = Path(os.path.relpath(script, folder)).as_posix()
        write_atomically(html_path, render_html(self.data, plotly_js=relative))
        write_atomically(json_path, self.json_text())
        return json_path, html_path


def _report_sha256_at(path: Path) -> str | None:
    """The ``report_sha256`` of the report at ``path``; None where there is no file; "?" where it is not a report."""
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("report_sha256")
    except (OSError, ValueError, AttributeError):
        return "?"
    return value if isinstance(value, str) else "?"


def write_plotly_js(folder: Path) -> Path:
    """``folder/plotly.min.js``, the script the reports written there (or below) read; written once, atomically."""
    path = folder / PLOTLY_JS
    script = plotly_script()
    folder.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.stat().st_size != len(script.encode("utf-8")):
        write_atomically(path, script)
    return path


def write_atomically(path: Path, content: str) -> None:
    """``content`` at ``path``, never half-written: a temporary file beside it, fsync'd, then renamed over it."""
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(staging, 0o644)  # mkstemp makes it private to the user; a report is for reading
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def environment(model: FusionModel) -> EnvironmentRecord:
    """Where the decision runs: what a re-run on other hardware or libraries may differ by."""
    import captum

    from deq_core import __version__  # at call time: the package may import this module while it initialises

    return EnvironmentRecord(
        device=str(model.device),
        python=platform.python_version(),
        torch=torch.__version__,
        captum=captum.__version__,
        numpy=np.__version__,
        deq_core=__version__,
        platform=platform.platform(),
        torch_threads=torch.get_num_threads(),
    )


def run_explanation(model: FusionModel, inputs: Sequence[torch.Tensor], texts, settings: ReportSettings,
                    anchors: Sequence[Anchor] = (), stability_starts: int = STABILITY_STARTS) -> Explanation:  # fmt: skip
    """The explanation a report records; ``verify`` calls it again, so both seed and configure it identically.

    ``anchors``, ``stability_starts``: the stability check's class equilibria and number
    of starts (``verify`` passes the recorded ones; 0 starts for a report without one).
    """
    torch.manual_seed(settings.seed)
    return explain_case(model, [x.to(model.device) for x in inputs], texts=texts, target=settings.target,
                        n_steps=settings.n_steps, baseline=settings.baseline, cross_check=settings.cross_check,
                        solver=settings.solver, stability_starts=stability_starts, anchors=anchors)  # fmt: skip


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
    anchors: Sequence[Anchor] = (),
    edge: str | Path | None = None,
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
        anchors: the classes' typical equilibria the stability check starts from
            (``Lens.stability_anchors``); recorded, so ``verify`` starts from the same.
        edge: an .onnx file exported from this model (``deq_core.edge``) that also decided
            the case: its hash, K, precision and decision are recorded (``EdgeRecord``) and
            ``verify`` re-runs it with onnxruntime.
    """
    settings = settings or ReportSettings()
    folder = Path(model_folder)
    config = model.config
    original = batch_of_one(model.config.modalities, inputs)
    seen = model_inputs(model, original, case_id, corruption)
    if explanation is None:
        explanation = run_explanation(model, seen, texts, settings, anchors)
    record = ReportRecord(
        format=FORMAT,
        version=VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        case_id=case_id,
        source=dict(source or {}),
        model=ModelInfo(folder.name, str(folder.resolve()), config.architecture, model_checksum(folder),
                        model_files(folder)),  # fmt: skip
        inputs=RecordedInputs(
            tuple(EmbeddedInput(m.name, m.kind, **_embedded(x[0])) for m, x in zip(config.modalities, original)),
            dict(texts or {}),
        ),
        corruption=corruption_record(model, corruption, seen),
        settings=settings.recorded(model),
        environment=environment(model),
        prediction=prediction_record(explanation, config, label),
        trajectory=trajectory_record(explanation),
        attribution=attribution_record(explanation, config, settings.top_k),
        reliability=reliability_record(explanation),
        tolerances=Tolerances(**TOLERANCES),
    )
    reference = dataset_reference(config.dataset, case_id, seen, texts or {}, explanation.target, config.modality_names)
    if reference is not None:  # e.g. a generated inspection case, unaltered: the ground truth is known
        record = dataclasses.replace(record, ideal_reference=reference_record(reference, record.attribution.shapley))
    if explanation.stability is not None:
        record = dataclasses.replace(record, stability=stability_record(explanation))
    if edge is not None:
        record = dataclasses.replace(record, edge=edge_record(edge, seen, config, record.model.checksum,
                                                              explanation.predicted_class))  # fmt: skip
    record = record.sealed()
    return DecisionReport(data=record, html=render_html(record), explanation=explanation)


def _embedded(tensor: torch.Tensor) -> dict:
    data = embed_tensor(tensor)
    return {**data, "shape": tuple(data["shape"])}


def prediction_record(explanation: Explanation, config: ModelConfig, label: int | None) -> PredictionRecord:
    """The decision as recorded (``verify`` rebuilds it from a re-run the same way)."""
    return PredictionRecord(explanation.prediction, explanation.predicted_class,
                            dict(zip(config.class_names, explanation.probabilities)),
                            None if label is None else config.class_names[label])  # fmt: skip


def edge_decision(path: str | Path, seen: Sequence[torch.Tensor], config: ModelConfig,
                  checksum: str) -> tuple[dict, dict[str, float]]:  # fmt: skip
    """``(metadata, probabilities by class)`` of the exported model at ``path`` on one case.

    Refuses (ValueError) a file that was not exported from the model with ``checksum``:
    a report must not say that another model's file decided like this one.
    """
    from deq_core.edge import read_metadata, run_onnx, session

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}")
    meta = read_metadata(path)
    if meta.get("model_checksum") != checksum:
        raise ValueError(f"{path} was not exported from this model (its metadata names checksum "
                         f"{str(meta.get('model_checksum'))[:12]}..., the model is {checksum[:12]}...)")  # fmt: skip
    probabilities, _ = run_onnx(session(path), seen)
    return meta, dict(zip(config.class_names, (float(p) for p in probabilities[0])))


def edge_record(path: str | Path, seen: Sequence[torch.Tensor], config: ModelConfig, checksum: str,
                full_class: str) -> EdgeRecord:  # fmt: skip
    """The exported model's decision of the case, as recorded (``verify`` rebuilds it the same way)."""
    from deq_core.edge import sha256

    meta, probabilities = edge_decision(path, seen, config, checksum)
    decided = max(probabilities, key=probabilities.get)
    return EdgeRecord(str(Path(path).resolve()), sha256(path), int(meta["steps"]), meta["precision"], decided,
                      probabilities, decided == full_class)  # fmt: skip


def stability_record(explanation: Explanation) -> StabilityRecord | None:
    """The fixed point's stability and uniqueness as recorded, with the class equilibria it started from."""
    found = explanation.stability
    if found is None:
        return None
    local, unique, names = found.local, found.uniqueness, found.class_names
    return StabilityRecord(
        spectral_radius=float(local.spectral_radius), stable=local.stable,
        contraction_rate=_finite(local.contraction_rate), iterations_to_tol=_finite(local.iterations_to_tol),
        amplification_bound=_finite(local.amplification_bound),
        gradient_amplification=_finite(local.gradient_amplification), unique=unique.unique,
        decision_unique=unique.decision_unique, n_equilibria=unique.n_equilibria, starts=tuple(unique.starts),
        start_decisions=tuple(names[d] for d in unique.decisions), start_converged=tuple(unique.converged),
        distances=tuple(_finite(float(d)) for d in unique.distances),
        anchors=tuple(AnchorRecord(names[a.class_index], a.case_id, embed_tensor(a.z)) for a in found.anchors),
    )  # fmt: skip


def reliability_record(explanation: Explanation) -> ReliabilityRecord:
    """The reliability figures as recorded: non-finite ones as null."""
    return ReliabilityRecord.from_dict({
        **explanation.reliability.to_dict(),
        "ig_delta": _finite(explanation.reliability.ig_delta),
        "final_relative_residual": _finite(explanation.reliability.final_relative_residual),
    })  # fmt: skip


def corruption_record(model: FusionModel, corruption: CorruptionSet | None, seen: Sequence[torch.Tensor]) -> CorruptionRecord | None:
    if corruption is None or len(corruption) == 0:
        return None
    return CorruptionRecord(
        spec=corruption,
        sha256=json_sha256(corruption.to_dict()),
        description=tuple(s.describe() for s in corruption),
        model_inputs_sha256={m.name: tensor_sha256(x[0]) for m, x in zip(model.config.modalities, seen)},
    )


def trajectory_record(explanation: Explanation) -> TrajectoryRecord | None:
    trajectory = explanation.trajectory
    if trajectory is None:
        return None
    return TrajectoryRecord(
        iterations=trajectory.iterations,
        status=trajectory.status,
        converged=trajectory.converged,
        best_iteration=trajectory.best_iteration,
        lock_in_iteration=explanation.lock_in_iteration,
        relative_residuals=tuple(trajectory.relative_residuals.tolist()),
        probabilities=tuple(tuple(row) for row in trajectory.probabilities.tolist()),
    )


def attribution_record(explanation: Explanation, config: ModelConfig, top_k: int) -> AttributionRecord:
    shapley, attribution = explanation.shapley, explanation.attribution
    return AttributionRecord(
        target=explanation.target,
        target_class=config.class_names[explanation.target],
        shapley=dict(zip(shapley.modality_names, shapley.values.tolist())),
        shapley_interactions=tuple(tuple(row) for row in shapley.interactions.tolist()),
        full_value=shapley.full_value,
        empty_value=shapley.empty_value,
        ig_output=attribution.output,
        ig_totals=dict(zip(attribution.modality_names, attribution.totals)),
        ig_method=attribution.method,
        ig_baselines=dict(zip(attribution.modality_names, attribution.baselines)),
        top_features={
            m.name: tuple(FeatureRecord(s.name, tuple(s.index), s.score) for s in top_features(attribution, i, k=top_k))
            for i, m in enumerate(config.modalities)
        },
    )


def reference_record(reference: Reference, model_values: Mapping[str, float]) -> ReferenceRecord:
    """The reference classifier's view of the case, and the sentence comparing it with the model's values."""
    shapley = reference.shapley
    return ReferenceRecord(
        label=reference.label,
        shows=dict(reference.shows),
        probabilities=dict(zip(shapley.class_names, reference.probabilities.tolist())),
        target_class=shapley.class_names[shapley.target],
        shapley=dict(zip(shapley.modality_names, shapley.values.tolist())),
        sentence=reference.sentence(model_values),
    )


def log_report(report: DecisionReport, log: AuditLog, report_path: str | Path = "", source: str = "cli"):
    """Append one report to the audit log; returns the ``AuditEntry`` (carrying the signed checkpoint after it).

    ``issue`` is the way to hand a report out (logged, signed, written); this alone
    records an event about a report already issued (the app's downloads).
    """
    record = report.data
    return log.append(
        model_name=record.model.name,
        model_checksum=record.model.checksum,
        case_id=record.case_id,
        prediction=record.prediction.class_name,
        report_sha256=report.sha256,
        report_path=str(report_path),
        summary={
            "probability": record.prediction.confidence,
            "label": record.prediction.label,
            "reliable": record.reliability.reliable,
            "converged": record.reliability.converged,
            "corruption": list(record.corruption.description) if record.corruption is not None else None,
            "plain": plain_summary(record),
        },
        source=source,
    )


# --------------------------------------------------------------------------- issuing: log, sign, write


def claim_folder(folder: Path, report: DecisionReport) -> Path:
    """Reserve ``folder`` for ``report``: a claim file made exclusively, refused if another report is or was there.

    The claim stays if the run is killed before the report is written, so a log
    entry without its file is explained (``verify-log --files``: "not written"),
    and no later run can write another report where that entry points.
    """
    folder.mkdir(parents=True, exist_ok=True)
    claim = folder / CLAIM_NAME
    try:
        handle = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FileExistsError(f"{folder} is being written by another run, or a run was stopped while writing there "
                              f"({claim}); write the report into another folder") from None  # fmt: skip
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump({"report_sha256": report.sha256, "case_id": report.case_id, "pid": os.getpid()}, out)
    if (folder / JSON_NAME).exists():
        claim.unlink()
        raise FileExistsError(f"{folder / JSON_NAME} already holds a report; write the report into another folder")
    return claim


def read_claim(folder: Path) -> dict | None:
    """The claim a run left in ``folder`` (``claim_folder``), or None."""
    try:
        data = json.loads((folder / CLAIM_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def issue(report: DecisionReport, log: AuditLog, folder: str | Path | None = None, source: str = "cli",
          scripts: str | Path | None = None) -> DecisionReport:  # fmt: skip
    """Hand a report out: record it in ``log``, sign it with the log's key, and write it into ``folder``.

    The order makes a kill at any moment leave the folder and the log agreeing:
    the folder is claimed first (nothing logged yet); the log entry is committed
    (with its signed checkpoint); the signed files are written under temporary names
    and renamed (``report.json`` last); the claim is removed. So every
    ``report.json`` on disk is in the log, and a log entry without its file still
    has the claim beside where the file should be ("not written").

    Returns the signed report (``folder`` None: logged and signed, not written).
    ``scripts``: where the page's plotly.min.js goes (``DecisionReport.write``).
    """
    folder = None if folder is None else Path(folder)
    claim = None if folder is None else claim_folder(folder, report)
    try:
        entry = log_report(report, log, "" if folder is None else (folder / JSON_NAME).resolve(), source=source)
    except BaseException:
        if claim is not None:
            claim.unlink(missing_ok=True)  # nothing was logged: the folder is free again
        raise
    signed = dataclasses.replace(report, data=report.data.signed(log.signing_key, entry.checkpoint))
    if folder is not None:
        signed.write(folder, scripts)
        claim.unlink()
    return signed
