"""The report record: a typed, frozen view of ``report.json``.

``ReportRecord.to_dict()`` is the JSON a report writes, key for key and in the same
order (the record's hash is taken over it, so it must never drift), and
``ReportRecord.from_dict()`` reads one back, checking every field and naming the
first bad one in a ValueError. Everything that reads a record (the page, the
summary, the log, verification, the CLI) reads these attributes, never string
keys, so a renamed field fails in one place instead of six.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deq_core.audit.hashing import record_sha256, unembed_tensor
from deq_core.audit.signing import ALGORITHM, Checkpoint, SigningKey, report_signature_payload, signature_valid
from deq_core.engine.config import SolverSettings
from deq_core.explain.corrupt import CorruptionSet

FORMAT = "deq-fusion-lens/decision-report"
VERSION = 1
# Re-running on the same kind of device reproduces the numbers bit for bit; these
# tolerances absorb a different thread count or BLAS build, not a different model.
TOLERANCES = {"probability": 1e-6, "shapley": 1e-5, "feature_score": 1e-5}
TOP_K = 10


# --------------------------------------------------------------------------- reading checked fields


def _path(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def _bad(path: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"report record field {path!r}: expected {expected}, got {type(value).__name__} {value!r:.60}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mapping(value: Any, path: str, keys: Sequence[str] = (), optional: Sequence[str] = ()) -> Mapping:
    """``value`` as an object with exactly ``keys`` (plus any of ``optional``); no keys given: any keys."""
    if not isinstance(value, Mapping):
        raise _bad(path, "an object", value)
    if keys:
        missing = [k for k in keys if k not in value]
        if missing:
            raise ValueError(f"report record field {_path(path, missing[0])!r} is missing")
        unknown = [k for k in value if k not in keys and k not in optional]
        if unknown:
            raise ValueError(f"report record field {_path(path, unknown[0])!r} is not a field of a report")
    return value


def _check(value: Any, path: str, test: Callable[[Any], bool], expected: str, nullable: bool = False) -> Any:
    if (value is None and nullable) or (value is not None and test(value)):
        return value
    raise _bad(path, expected + (" or null" if nullable else ""), value)


def _str(data: Mapping, key: str, path: str, nullable: bool = False) -> str | None:
    return _check(data[key], _path(path, key), lambda v: isinstance(v, str), "a string", nullable)


def _int(data: Mapping, key: str, path: str, nullable: bool = False) -> int | None:
    return _check(data[key], _path(path, key), _is_int, "an integer", nullable)


def _num(data: Mapping, key: str, path: str, nullable: bool = False) -> float | None:
    return _check(data[key], _path(path, key), _is_number, "a number", nullable)


def _bool(data: Mapping, key: str, path: str) -> bool:
    return _check(data[key], _path(path, key), lambda v: isinstance(v, bool), "true or false")


def _list(value: Any, path: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise _bad(path, "a list", value)
    return list(value)


def _numbers(value: Any, path: str) -> tuple[float, ...]:
    return tuple(_check(v, _path(path, i), _is_number, "a number") for i, v in enumerate(_list(value, path)))


def _matrix(value: Any, path: str) -> tuple[tuple[float, ...], ...]:
    return tuple(_numbers(row, _path(path, i)) for i, row in enumerate(_list(value, path)))


def _strings(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_check(v, _path(path, i), lambda s: isinstance(s, str), "a string") for i, v in enumerate(_list(value, path)))


def _str_map(value: Any, path: str) -> dict[str, str]:
    data = _mapping(value, path)
    return {k: _check(v, _path(path, k), lambda s: isinstance(s, str), "a string") for k, v in data.items()}


def _num_map(value: Any, path: str) -> dict[str, float]:
    data = _mapping(value, path)
    return {k: _check(v, _path(path, k), _is_number, "a number") for k, v in data.items()}


# --------------------------------------------------------------------------- the parts of a record


@dataclass(frozen=True)
class ModelInfo:
    """The model a decision came from: its folder and the SHA-256 of each of its files."""

    name: str
    folder: str
    architecture: str
    checksum: str
    files: dict[str, str]

    def to_dict(self) -> dict:
        return {"name": self.name, "folder": self.folder, "architecture": self.architecture,
                "checksum": self.checksum, "files": dict(self.files)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: str = "model") -> "ModelInfo":
        d = _mapping(data, path, ("name", "folder", "architecture", "checksum", "files"))
        return cls(_str(d, "name", path), _str(d, "folder", path), _str(d, "architecture", path),
                   _str(d, "checksum", path), _str_map(d["files"], _path(path, "files")))  # fmt: skip


@dataclass(frozen=True)
class EmbeddedInput:
    """One modality of the case as given: its raw bytes (base64) and their hash."""

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    base64: str

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "shape": list(self.shape),
                "sha256": self.sha256, "base64": self.base64}  # fmt: skip

    def tensor(self) -> torch.Tensor:
        """The input ``(*shape)``; ValueError when the bytes are unreadable or do not match the hash."""
        try:
            return unembed_tensor(self.to_dict())
        except (KeyError, TypeError) as error:  # an unknown dtype, a shape the bytes do not fill
            raise ValueError(str(error)) from error

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "EmbeddedInput":
        d = _mapping(data, path, ("name", "kind", "dtype", "shape", "sha256", "base64"))
        shape = tuple(_check(v, _path(_path(path, "shape"), i), _is_int, "an integer")
                      for i, v in enumerate(_list(d["shape"], _path(path, "shape"))))  # fmt: skip
        return cls(_str(d, "name", path), _str(d, "kind", path), _str(d, "dtype", path), shape,
                   _str(d, "sha256", path), _str(d, "base64", path))  # fmt: skip


@dataclass(frozen=True)
class RecordedInputs:
    """The case before any corruption: one embedded tensor per modality, and the raw texts."""

    modalities: tuple[EmbeddedInput, ...]
    texts: dict[str, str]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def to_dict(self) -> dict:
        return {"modalities": [m.to_dict() for m in self.modalities], "texts": dict(self.texts)}

    @classmethod
    def from_dict(cls, data: Any, path: str = "inputs") -> "RecordedInputs":
        d = _mapping(data, path, ("modalities", "texts"))
        where = _path(path, "modalities")
        modalities = tuple(EmbeddedInput.from_dict(m, _path(where, i)) for i, m in enumerate(_list(d["modalities"], where)))
        return cls(modalities, _str_map(d["texts"], _path(path, "texts")))


@dataclass(frozen=True)
class CorruptionRecord:
    """The corruption applied before the decision: its spec, the spec's hash, and what the model saw."""

    spec: CorruptionSet
    sha256: str
    description: tuple[str, ...]
    model_inputs_sha256: dict[str, str]

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "sha256": self.sha256, "description": list(self.description),
                "model_inputs_sha256": dict(self.model_inputs_sha256)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: str = "corruption") -> "CorruptionRecord":
        d = _mapping(data, path, ("spec", "sha256", "description", "model_inputs_sha256"))
        try:
            spec = CorruptionSet.from_dict(_mapping(d["spec"], _path(path, "spec")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"report record field {_path(path, 'spec')!r}: not a corruption set ({error})") from error
        return cls(spec, _str(d, "sha256", path), _strings(d["description"], _path(path, "description")),
                   _str_map(d["model_inputs_sha256"], _path(path, "model_inputs_sha256")))  # fmt: skip


@dataclass(frozen=True)
class RecordedSettings:
    """The explanation settings as recorded: ``ReportSettings`` with the solver resolved.

    ``solver`` is the solver that ran; ``solver_is_models_own`` says whether it was the
    model's own (then a replay uses the model's, whatever it is now).
    """

    n_steps: int
    baseline: str | None
    target: int | None
    cross_check: bool
    top_k: int
    seed: int
    solver: SolverSettings
    solver_is_models_own: bool

    def to_dict(self) -> dict:
        return {
            "n_steps": self.n_steps,
            "baseline": self.baseline,
            "target": self.target,
            "cross_check": self.cross_check,
            "top_k": self.top_k,
            "seed": self.seed,
            "solver": dataclasses.asdict(self.solver),
            "solver_is_models_own": self.solver_is_models_own,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "settings") -> "RecordedSettings":
        keys = ("n_steps", "baseline", "target", "cross_check", "top_k", "seed", "solver", "solver_is_models_own")
        d = _mapping(data, path, keys)
        try:
            solver = SolverSettings(**_mapping(d["solver"], _path(path, "solver")))
        except (TypeError, ValueError) as error:
            raise ValueError(f"report record field {_path(path, 'solver')!r}: not solver settings ({error})") from error
        return cls(_int(d, "n_steps", path), _str(d, "baseline", path, nullable=True), _int(d, "target", path, nullable=True),
                   _bool(d, "cross_check", path), _int(d, "top_k", path), _int(d, "seed", path), solver,
                   _bool(d, "solver_is_models_own", path))  # fmt: skip


@dataclass(frozen=True)
class EnvironmentRecord:
    """Where the decision ran: device, library versions, threads."""

    device: str
    python: str
    torch: str
    captum: str
    numpy: str
    deq_core: str
    platform: str
    torch_threads: int

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Any, path: str = "environment") -> "EnvironmentRecord":
        names = [f.name for f in dataclasses.fields(cls)]
        d = _mapping(data, path, names)
        return cls(*[_str(d, n, path) for n in names[:-1]], _int(d, "torch_threads", path))


@dataclass(frozen=True)
class PredictionRecord:
    """The decision: class index and name (``"class"`` in JSON), every class's probability, the true class."""

    index: int
    class_name: str
    probabilities: dict[str, float]
    label: str | None

    @property
    def confidence(self) -> float:
        """The probability of the decided class."""
        return self.probabilities[self.class_name]

    def to_dict(self) -> dict:
        return {"index": self.index, "class": self.class_name, "probabilities": dict(self.probabilities), "label": self.label}

    @classmethod
    def from_dict(cls, data: Any, path: str = "prediction") -> "PredictionRecord":
        d = _mapping(data, path, ("index", "class", "probabilities", "label"))
        probabilities = _num_map(d["probabilities"], _path(path, "probabilities"))
        name = _str(d, "class", path)
        if name not in probabilities:
            raise ValueError(f"report record field {_path(path, 'class')!r}: {name!r} is not one of the classes in "
                             f"{_path(path, 'probabilities')!r}")  # fmt: skip
        return cls(_int(d, "index", path), name, probabilities, _str(d, "label", path, nullable=True))


@dataclass(frozen=True)
class TrajectoryRecord:
    """The equilibrium search of a DEQ-type model: residual and class probabilities per iteration."""

    iterations: int
    status: str
    converged: bool
    best_iteration: int
    lock_in_iteration: int | None
    relative_residuals: tuple[float, ...]
    probabilities: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict:
        return {
            "iterations": self.iterations,
            "status": self.status,
            "converged": self.converged,
            "best_iteration": self.best_iteration,
            "lock_in_iteration": self.lock_in_iteration,
            "relative_residuals": list(self.relative_residuals),
            "probabilities": [list(row) for row in self.probabilities],
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "trajectory") -> "TrajectoryRecord":
        keys = ("iterations", "status", "converged", "best_iteration", "lock_in_iteration", "relative_residuals", "probabilities")
        d = _mapping(data, path, keys)
        return cls(_int(d, "iterations", path), _str(d, "status", path), _bool(d, "converged", path),
                   _int(d, "best_iteration", path), _int(d, "lock_in_iteration", path, nullable=True),
                   _numbers(d["relative_residuals"], _path(path, "relative_residuals")),
                   _matrix(d["probabilities"], _path(path, "probabilities")))  # fmt: skip


@dataclass(frozen=True)
class FeatureRecord:
    """One of the strongest Integrated Gradients features of a modality."""

    name: str
    index: tuple[int, ...]
    score: float

    def to_dict(self) -> dict:
        return {"name": self.name, "index": list(self.index), "score": self.score}

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "FeatureRecord":
        d = _mapping(data, path, ("name", "index", "score"))
        index = tuple(_check(v, _path(_path(path, "index"), i), _is_int, "an integer")
                      for i, v in enumerate(_list(d["index"], _path(path, "index"))))  # fmt: skip
        return cls(_str(d, "name", path), index, _num(d, "score", path))


@dataclass(frozen=True)
class AttributionRecord:
    """Why: modality Shapley values of the explained class, and Integrated Gradients totals and top features."""

    target: int
    target_class: str
    shapley: dict[str, float]
    shapley_interactions: tuple[tuple[float, ...], ...]
    full_value: float
    empty_value: float
    ig_output: str
    ig_totals: dict[str, float]
    ig_method: str
    ig_baselines: dict[str, str]
    top_features: dict[str, tuple[FeatureRecord, ...]]

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "target_class": self.target_class,
            "shapley": dict(self.shapley),
            "shapley_interactions": [list(row) for row in self.shapley_interactions],
            "full_value": self.full_value,
            "empty_value": self.empty_value,
            "ig_output": self.ig_output,
            "ig_totals": dict(self.ig_totals),
            "ig_method": self.ig_method,
            "ig_baselines": dict(self.ig_baselines),
            "top_features": {name: [f.to_dict() for f in features] for name, features in self.top_features.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "attribution") -> "AttributionRecord":
        keys = ("target", "target_class", "shapley", "shapley_interactions", "full_value", "empty_value", "ig_output",
                "ig_totals", "ig_method", "ig_baselines", "top_features")  # fmt: skip
        d = _mapping(data, path, keys)
        where = _path(path, "top_features")
        top = {
            name: tuple(FeatureRecord.from_dict(f, _path(_path(where, name), i)) for i, f in enumerate(_list(features, _path(where, name))))
            for name, features in _mapping(d["top_features"], where).items()
        }
        return cls(_int(d, "target", path), _str(d, "target_class", path), _num_map(d["shapley"], _path(path, "shapley")),
                   _matrix(d["shapley_interactions"], _path(path, "shapley_interactions")), _num(d, "full_value", path),
                   _num(d, "empty_value", path), _str(d, "ig_output", path), _num_map(d["ig_totals"], _path(path, "ig_totals")),
                   _str(d, "ig_method", path), _str_map(d["ig_baselines"], _path(path, "ig_baselines")), top)  # fmt: skip


@dataclass(frozen=True)
class ReliabilityRecord:
    """How far to trust the explanation (``Reliability``, with non-finite figures as null)."""

    converged: bool
    status: str
    iterations: int
    final_relative_residual: float | None
    ig_delta: float | None
    ig_relative_delta: float | None
    ig_complete: bool
    solves_converged: bool
    reliable: bool
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: Any, path: str = "reliability") -> "ReliabilityRecord":
        d = _mapping(data, path, [f.name for f in dataclasses.fields(cls)])
        return cls(_bool(d, "converged", path), _str(d, "status", path), _int(d, "iterations", path),
                   _num(d, "final_relative_residual", path, nullable=True), _num(d, "ig_delta", path, nullable=True),
                   _num(d, "ig_relative_delta", path, nullable=True), _bool(d, "ig_complete", path),
                   _bool(d, "solves_converged", path), _bool(d, "reliable", path),
                   _strings(d["warnings"], _path(path, "warnings")))  # fmt: skip


@dataclass(frozen=True)
class Tolerances:
    """How far a re-run may differ from the record and still verify."""

    probability: float = TOLERANCES["probability"]
    shapley: float = TOLERANCES["shapley"]
    feature_score: float = TOLERANCES["feature_score"]

    def to_dict(self) -> dict:
        return {"probability": self.probability, "shapley": self.shapley, "feature_score": self.feature_score}

    @classmethod
    def from_dict(cls, data: Any, path: str = "tolerances") -> "Tolerances":
        d = _mapping(data, path, ("probability", "shapley", "feature_score"))
        return cls(_num(d, "probability", path), _num(d, "shapley", path), _num(d, "feature_score", path))


@dataclass(frozen=True)
class ReferenceRecord:
    """A dataset's reference decision for the case (the inspection data's ideal classifier) beside the model's."""

    label: str
    shows: dict[str, str]
    probabilities: dict[str, float]
    target_class: str
    shapley: dict[str, float]
    sentence: str

    def to_dict(self) -> dict:
        return {"label": self.label, "shows": dict(self.shows), "probabilities": dict(self.probabilities),
                "target_class": self.target_class, "shapley": dict(self.shapley), "sentence": self.sentence}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: str = "ideal_reference") -> "ReferenceRecord":
        d = _mapping(data, path, ("label", "shows", "probabilities", "target_class", "shapley", "sentence"))
        return cls(_str(d, "label", path), _str_map(d["shows"], _path(path, "shows")),
                   _num_map(d["probabilities"], _path(path, "probabilities")), _str(d, "target_class", path),
                   _num_map(d["shapley"], _path(path, "shapley")), _str(d, "sentence", path))  # fmt: skip


@dataclass(frozen=True)
class AnchorRecord:
    """A starting point of the uniqueness check: a class's typical equilibrium (a test case's z*), embedded."""

    class_name: str
    case_id: str
    state: dict[str, Any]  # ``embed_tensor`` of z: dtype, shape, sha256, base64

    def to_dict(self) -> dict:
        return {"class": self.class_name, "case_id": self.case_id, "state": dict(self.state)}

    def tensor(self) -> torch.Tensor:
        """The state ``(*state)``; ValueError when its bytes are unreadable or do not match their hash."""
        try:
            return unembed_tensor(self.state)
        except (KeyError, TypeError) as error:
            raise ValueError(str(error)) from error

    @classmethod
    def from_dict(cls, data: Any, path: str) -> "AnchorRecord":
        d = _mapping(data, path, ("class", "case_id", "state"))
        state = _mapping(d["state"], _path(path, "state"), ("dtype", "shape", "sha256", "base64"))
        return cls(_str(d, "class", path), _str(d, "case_id", path), dict(state))


@dataclass(frozen=True)
class StabilityRecord:
    """How far the decision's fixed point can be trusted (``deq_core.explain.stability.Stability``).

    ``spectral_radius`` >= 1 (not locally stable) or ``n_equilibria`` > 1 come with a
    warning in ``reliability.warnings``. ``anchors`` are the class equilibria used as
    starts, embedded so that ``verify`` re-runs the check from the record alone.
    """

    spectral_radius: float
    stable: bool
    contraction_rate: float | None
    iterations_to_tol: float | None
    amplification_bound: float | None
    gradient_amplification: float | None
    unique: bool
    decision_unique: bool
    n_equilibria: int
    starts: tuple[str, ...]
    start_decisions: tuple[str, ...]
    start_converged: tuple[bool, ...]
    distances: tuple[float | None, ...]
    anchors: tuple[AnchorRecord, ...]

    def to_dict(self) -> dict:
        return {
            "spectral_radius": self.spectral_radius, "stable": self.stable, "contraction_rate": self.contraction_rate,
            "iterations_to_tol": self.iterations_to_tol, "amplification_bound": self.amplification_bound,
            "gradient_amplification": self.gradient_amplification, "unique": self.unique,
            "decision_unique": self.decision_unique, "n_equilibria": self.n_equilibria, "starts": list(self.starts),
            "start_decisions": list(self.start_decisions), "start_converged": list(self.start_converged),
            "distances": list(self.distances), "anchors": [a.to_dict() for a in self.anchors],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: str = "stability") -> "StabilityRecord":
        keys = ("spectral_radius", "stable", "contraction_rate", "iterations_to_tol", "amplification_bound",
                "gradient_amplification", "unique", "decision_unique", "n_equilibria", "starts", "start_decisions",
                "start_converged", "distances", "anchors")  # fmt: skip
        d = _mapping(data, path, keys)
        converged = tuple(_check(v, _path(_path(path, "start_converged"), i), lambda b: isinstance(b, bool), "true or false")
                          for i, v in enumerate(_list(d["start_converged"], _path(path, "start_converged"))))  # fmt: skip
        distances = tuple(_check(v, _path(_path(path, "distances"), i), _is_number, "a number", nullable=True)
                          for i, v in enumerate(_list(d["distances"], _path(path, "distances"))))  # fmt: skip
        where = _path(path, "anchors")
        record = cls(_num(d, "spectral_radius", path), _bool(d, "stable", path),
                     _num(d, "contraction_rate", path, nullable=True), _num(d, "iterations_to_tol", path, nullable=True),
                     _num(d, "amplification_bound", path, nullable=True),
                     _num(d, "gradient_amplification", path, nullable=True), _bool(d, "unique", path),
                     _bool(d, "decision_unique", path), _int(d, "n_equilibria", path),
                     _strings(d["starts"], _path(path, "starts")), _strings(d["start_decisions"], _path(path, "start_decisions")),
                     converged, distances,
                     tuple(AnchorRecord.from_dict(a, _path(where, i)) for i, a in enumerate(_list(d["anchors"], where))))  # fmt: skip
        lengths = {len(record.starts), len(record.start_decisions), len(record.start_converged), len(record.distances)}
        if len(lengths) != 1:
            raise ValueError(f"report record field {path!r}: starts, start_decisions, start_converged and distances "
                             "differ in length")  # fmt: skip
        return record


@dataclass(frozen=True)
class EdgeRecord:
    """The decision as an exported model made it (``deq_core.edge``): which file, K, precision, what it said.

    Optional, like ``stability``: a report made without an exported model has no
    ``edge`` key, and older reports verify as before. ``file`` is where the .onnx was
    when the report was made (``verify`` can be pointed elsewhere); ``sha256`` is what
    it must hash to. ``probabilities`` are onnxruntime's on the inputs the model saw
    (after any corruption); ``agrees`` says whether its decision is the full model's.
    """

    file: str
    sha256: str
    steps: int
    precision: str
    class_name: str
    probabilities: dict[str, float]
    agrees: bool

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "steps": self.steps, "precision": self.precision,
                "class": self.class_name, "probabilities": dict(self.probabilities), "agrees": self.agrees}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: str = "edge") -> "EdgeRecord":
        d = _mapping(data, path, ("file", "sha256", "steps", "precision", "class", "probabilities", "agrees"))
        probabilities = _num_map(d["probabilities"], _path(path, "probabilities"))
        name = _str(d, "class", path)
        if name not in probabilities:
            raise ValueError(f"report record field {_path(path, 'class')!r}: {name!r} is not one of the classes in "
                             f"{_path(path, 'probabilities')!r}")  # fmt: skip
        return cls(_str(d, "file", path), _str(d, "sha256", path), _int(d, "steps", path), _str(d, "precision", path),
                   name, probabilities, _bool(d, "agrees", path))  # fmt: skip


@dataclass(frozen=True)
class SignatureRecord:
    """Who issued the report: the deployment key's signature over the report's hash and the log's head after it.

    ``checkpoint.count`` is the report's entry in the audit log (its id) and
    ``checkpoint.head_hash`` that entry's hash; the same signed checkpoint is a row of
    the log, so the report is also a copy of the log's head kept outside it.
    """

    public_key: str
    checkpoint: Checkpoint
    value: str
    algorithm: str = ALGORITHM

    def to_dict(self) -> dict:
        return {"algorithm": self.algorithm, "public_key": self.public_key, "checkpoint": self.checkpoint.to_dict(),
                "value": self.value}  # fmt: skip

    def valid_for(self, report_sha256: str) -> bool:
        """Whether the signature is ``public_key``'s over ``report_sha256`` and the checkpoint."""
        return self.algorithm == ALGORITHM and signature_valid(
            self.public_key, report_signature_payload(report_sha256, self.checkpoint), self.value)

    @classmethod
    def sign(cls, key: SigningKey, report_sha256: str, checkpoint: Checkpoint) -> "SignatureRecord":
        return cls(key.public_key, checkpoint, key.sign(report_signature_payload(report_sha256, checkpoint)))

    @classmethod
    def from_dict(cls, data: Any, path: str = "signature") -> "SignatureRecord":
        d = _mapping(data, path, ("algorithm", "public_key", "checkpoint", "value"))
        try:
            checkpoint = Checkpoint.from_dict(d["checkpoint"])
        except ValueError as error:
            raise ValueError(f"report record field {_path(path, 'checkpoint')!r}: {error}") from error
        return cls(_str(d, "public_key", path), checkpoint, _str(d, "value", path), _str(d, "algorithm", path))


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class ReportRecord:
    """One decision report's record (``report.json``); ``report_sha256`` is the hash of all the rest.

    ``corruption`` and ``trajectory`` are None where there is none (an unaltered case, a
    feed-forward model); ``ideal_reference`` is None, and absent from the JSON, where the
    case's dataset has no reference for it; ``stability`` is None, and absent, for a model
    that decides from no fixed point (and in reports made before it was recorded); ``edge`` is None,
    and absent, unless the decision was also made by an exported model (``EdgeRecord``); ``signature`` is None, and absent, until the
    report is issued (recorded in the audit log and signed: ``deq_core.audit.report.issue``).
    """

    format: str
    version: int
    created_at: str
    case_id: str
    source: dict[str, Any]
    model: ModelInfo
    inputs: RecordedInputs
    corruption: CorruptionRecord | None
    settings: RecordedSettings
    environment: EnvironmentRecord
    prediction: PredictionRecord
    trajectory: TrajectoryRecord | None
    attribution: AttributionRecord
    reliability: ReliabilityRecord
    tolerances: Tolerances
    ideal_reference: ReferenceRecord | None = None
    stability: StabilityRecord | None = None
    edge: EdgeRecord | None = None
    report_sha256: str = ""
    signature: SignatureRecord | None = None

    def to_dict(self) -> dict:
        """The JSON record: the keys, their order and their values every report has written."""
        record = {
            "format": self.format,
            "version": self.version,
            "created_at": self.created_at,
            "case_id": self.case_id,
            "source": dict(self.source),
            "model": self.model.to_dict(),
            "inputs": self.inputs.to_dict(),
            "corruption": None if self.corruption is None else self.corruption.to_dict(),
            "settings": self.settings.to_dict(),
            "environment": self.environment.to_dict(),
            "prediction": self.prediction.to_dict(),
            "trajectory": None if self.trajectory is None else self.trajectory.to_dict(),
            "attribution": self.attribution.to_dict(),
            "reliability": self.reliability.to_dict(),
            "tolerances": self.tolerances.to_dict(),
        }
        if self.ideal_reference is not None:
            record["ideal_reference"] = self.ideal_reference.to_dict()
        if self.stability is not None:
            record["stability"] = self.stability.to_dict()
        if self.edge is not None:
            record["edge"] = self.edge.to_dict()
        record["report_sha256"] = self.report_sha256
        if self.signature is not None:
            record["signature"] = self.signature.to_dict()
        return record

    def content_sha256(self) -> str:
        """The hash of this record's content (what ``report_sha256`` should be)."""
        return record_sha256(self.to_dict())

    def sealed(self) -> "ReportRecord":
        """This record carrying its own hash (and no signature: a changed record needs a new one)."""
        return dataclasses.replace(self, report_sha256=self.content_sha256(), signature=None)

    def signed(self, key: SigningKey, checkpoint: Checkpoint) -> "ReportRecord":
        """This (sealed) record signed by ``key``, as the report of the log's entry ``checkpoint.count``."""
        return dataclasses.replace(self, signature=SignatureRecord.sign(key, self.report_sha256, checkpoint))

    @classmethod
    def from_dict(cls, data: Any) -> "ReportRecord":
        """Read a record back; ValueError naming the first missing, unknown or ill-typed field."""
        keys = ("format", "version", "created_at", "case_id", "source", "model", "inputs", "corruption", "settings",
                "environment", "prediction", "trajectory", "attribution", "reliability", "tolerances", "report_sha256")  # fmt: skip
        d = _mapping(data, "", keys, optional=("ideal_reference", "stability", "edge", "signature"))
        if d["format"] != FORMAT:
            raise ValueError(f"report record field 'format': {d['format']!r} is not {FORMAT!r}")
        if d["version"] != VERSION or not _is_int(d["version"]):
            raise ValueError(f"report record field 'version': {d['version']!r}; this reader knows version {VERSION}")
        return cls(
            format=d["format"],
            version=d["version"],
            created_at=_str(d, "created_at", ""),
            case_id=_str(d, "case_id", ""),
            source=dict(_mapping(d["source"], "source")),
            model=ModelInfo.from_dict(d["model"]),
            inputs=RecordedInputs.from_dict(d["inputs"]),
            corruption=None if d["corruption"] is None else CorruptionRecord.from_dict(d["corruption"]),
            settings=RecordedSettings.from_dict(d["settings"]),
            environment=EnvironmentRecord.from_dict(d["environment"]),
            prediction=PredictionRecord.from_dict(d["prediction"]),
            trajectory=None if d["trajectory"] is None else TrajectoryRecord.from_dict(d["trajectory"]),
            attribution=AttributionRecord.from_dict(d["attribution"]),
            reliability=ReliabilityRecord.from_dict(d["reliability"]),
            tolerances=Tolerances.from_dict(d["tolerances"]),
            ideal_reference=ReferenceRecord.from_dict(d["ideal_reference"]) if "ideal_reference" in d else None,
            stability=StabilityRecord.from_dict(d["stability"]) if "stability" in d else None,
            edge=EdgeRecord.from_dict(d["edge"]) if "edge" in d else None,
            report_sha256=_str(d, "report_sha256", ""),
            signature=SignatureRecord.from_dict(d["signature"]) if "signature" in d else None,
        )


def as_record(record: "ReportRecord | Mapping") -> ReportRecord:
    """``record`` as a ``ReportRecord`` (a JSON mapping is read with ``from_dict``)."""
    return record if isinstance(record, ReportRecord) else ReportRecord.from_dict(record)
