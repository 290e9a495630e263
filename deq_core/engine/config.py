"""Configuration dataclasses of a model; they round-trip through config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from deq_core.engine.encoders import EncoderSettings
from deq_core.engine.implicit import BackwardSettings
from deq_core.engine.modality import Modality, Range, check_modality_data, check_strings, show
from deq_core.engine.solvers import METHODS, SOLVER_OPTIONS, STOP_MODES

ARCHITECTURES = ("deq", "weight_tied", "early", "late")
GRADIENTS = ("implicit", "phantom")

# --------------------------------------------------------------------------- limits of a config file
# A config read from a model folder is checked against these before anything is built
# (``check_config_limits``): each number sizes a tensor or a loop, and a folder under the
# models root must not be able to ask the server for 256 GB or a week of solving. Configs
# built in code are not checked (benchmarks force tol=1e-30 to run every iteration).
# Every shipped model (width 128, 55 iterations, memory 6, 10 unroll steps) is far inside.
_TOL = Range(1e-12, 1.0, integer=False, why=(
    "the state is float32, whose residual stops falling near 1e-7; a smaller tolerance only means "
    "'always run to max_iter', and below 1e-12 it can only be a mistake"))  # fmt: skip
# Broyden's work per case grows with the square of its iterations: 1000 of them took 27 s for
# 32 inspection cases on one core (an evaluation of the 300-case split past 4 minutes).
_ITERATIONS = Range(1, 500, why="9 times the trained 55; the most the app's Tuning page offers, the reference solve takes 200")
CONFIG_LIMITS: dict[str, Range] = {
    "width": Range(1, 1024),  # the update holds 2 N d^2 weights: 128 MB at d = 1024, N = 16
    "groups": Range(1, 1024),
    "unroll_steps": Range(1, 500),
    "encoder.channels": Range(2, 512),  # the image encoder's first layer has channels // 2
    "encoder.embedding_dim": Range(1, 1024),
    "encoder.dropout": Range(0.0, 1.0, integer=False),
    "encoder.vector_hidden": Range(0, 8192),
    "solver.tol": _TOL,
    "solver.max_iter": _ITERATIONS,
    "solver.memory": Range(1, 100),  # Anderson keeps memory past states per case
    "solver.beta": Range(0.0, 1.0, integer=False, low_open=True),  # share of the extrapolated step taken
    "solver.lam": Range(0.0, 1.0, integer=False),  # relative to the squared residual; 1 already averages
    "solver.damping": Range(0.0, 1.0, integer=False, low_open=True),  # 0 would never move the iterate
    "solver.phantom_steps": Range(1, 1000),
    "solver.backward.tol": _TOL,
    "solver.backward.max_iter": _ITERATIONS,
}
TEXT_FIELDS = ("architecture", "dataset", "normal_class", "solver.method", "solver.stop_mode", "solver.gradient",
               "solver.backward.method", "solver.backward.stop_mode", "encoder.image_pooling")  # fmt: skip
MAX_TEXT_CHARS = 4096  # a dataset may be named by its folder's path
MODALITY_COUNT = Range(1, 16)
CLASS_COUNT = Range(2, 1000)
# Per case, a solve keeps max_iter states (the recorded trajectory; Broyden's two low-rank
# factors), Anderson memory of them, an unroll unroll_steps of them, each (N + 1) x width
# floats: 2 MB of float32, 1 GB for an evaluation batch of 256 cases under Broyden.
MAX_SOLVER_HISTORY = 1 << 19


def _section(data: dict, path: str) -> dict:
    """The nested object at ``path`` ("solver.backward"), {} where absent."""
    node: object = data
    for part in path.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            raise ValueError(f"{path} = {show(node)} must be an object")
    return node


def _lookup(data: dict, field: str) -> tuple[bool, object]:
    section, _, name = field.rpartition(".")
    node = _section(data, section) if section else data
    return name in node, node.get(name)


def check_config_limits(data: object) -> None:
    """Refuse a parsed config.json whose types or sizes no model should have, before it is built.

    Raises ``ValueError`` naming the field, its value and the allowed range, for every
    number out of range at once (see
    ``CONFIG_LIMITS``, ``modality.SHAPE_LIMITS``); what is left (known names, divisibility,
    unknown keys) is checked by the dataclasses themselves.
    """
    if not isinstance(data, dict):
        raise ValueError(f"the config must be a JSON object, got {type(data).__name__} {show(data)}")
    for field in TEXT_FIELDS:
        present, value = _lookup(data, field)
        if present and not (value is None and field == "normal_class"):
            if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
                raise ValueError(f"{field} = {show(value)} must be a string of at most {MAX_TEXT_CHARS} characters")
    for required in ("architecture", "modalities", "class_names"):
        if required not in data:
            raise ValueError(f"{required} is missing (a config needs architecture, modalities and class_names)")
    problems = []  # every number out of range at once: one edit fixes the file
    for field, allowed in CONFIG_LIMITS.items():
        present, value = _lookup(data, field)
        try:
            if present:
                allowed.check(field, value)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("; ".join(problems))
    modalities = data["modalities"]
    if not isinstance(modalities, list):
        raise ValueError(f"modalities = {show(modalities)} must be a list")
    if not MODALITY_COUNT.low <= len(modalities) <= MODALITY_COUNT.high:
        raise ValueError(f"modalities: {len(modalities)} entries, outside the allowed range {MODALITY_COUNT}")
    for i, modality in enumerate(modalities):
        check_modality_data(modality, f"modalities[{i}]")
    check_strings("class_names", data["class_names"], CLASS_COUNT)
    _check_solver_history(data, len(modalities))


def _check_solver_history(data: dict, n_modalities: int) -> None:
    width = data.get("width", ModelConfig.__dataclass_fields__["width"].default)
    state = (n_modalities + 1) * width
    defaults, backward = SolverSettings(), BackwardSettings()
    for field, default in (("solver.max_iter", defaults.max_iter), ("solver.memory", defaults.memory),
                           ("solver.backward.max_iter", backward.max_iter),
                           ("unroll_steps", ModelConfig.__dataclass_fields__["unroll_steps"].default)):  # fmt: skip
        present, steps = _lookup(data, field)
        steps = steps if present else default
        if steps * state > MAX_SOLVER_HISTORY:
            raise ValueError(
                f"{field} x state size ({steps} x {n_modalities + 1} x {width} = {steps * state}) is over "
                f"{MAX_SOLVER_HISTORY} floats per case: a solve keeps that many states"
            )


@dataclass(frozen=True)
class SolverSettings:
    """Forward solver and gradient settings of a DEQ (the reference values of docs/model.md).

    ``lam`` is relative to the newest squared residual in Anderson's window (see
    ``solvers._anderson``); ``tol`` applies to the residual chosen by ``stop_mode``.
    """

    method: str = "anderson"
    tol: float = 1e-4
    stop_mode: str = "rel"
    max_iter: int = 55
    memory: int = 6
    beta: float = 1.0
    lam: float = 1e-4
    damping: float = 1.0
    gradient: str = "implicit"
    phantom_steps: int = 5
    backward: BackwardSettings = field(default_factory=BackwardSettings)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"solver method {self.method!r} is not one of {METHODS}")
        if self.stop_mode not in STOP_MODES:
            raise ValueError(f"stop_mode {self.stop_mode!r} is not one of {STOP_MODES}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient {self.gradient!r} is not one of {GRADIENTS}")
        if not (self.tol > 0 and self.max_iter >= 1 and self.memory >= 1):
            raise ValueError("tol must be positive, max_iter and memory at least 1")
        if isinstance(self.backward, dict):
            object.__setattr__(self, "backward", BackwardSettings(**self.backward))

    def options(self) -> dict[str, str | float | int]:
        """Keyword arguments for ``solvers.solve``: the common ones and the method's own.

        Only the method's own options (``solvers.SOLVER_OPTIONS``): ``solve`` refuses an
        option its method does not take, and the others were never read (``damping``
        still sets the phantom gradient's steps, outside the solve).
        """
        common = {"method": self.method, "tol": self.tol, "stop_mode": self.stop_mode, "max_iter": self.max_iter}
        return common | {name: getattr(self, name) for name in SOLVER_OPTIONS[self.method]}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's modules (weights live elsewhere)."""

    architecture: str
    modalities: tuple[Modality, ...]
    class_names: tuple[str, ...]
    width: int = 128
    groups: int = 4
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    solver: SolverSettings = field(default_factory=SolverSettings)
    unroll_steps: int = 10
    dataset: str = ""
    normal_class: str | None = None

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is not one of {ARCHITECTURES}")
        if not self.modalities:
            raise ValueError("a model needs at least one modality")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        if len(self.class_names) < 2:
            raise ValueError("a classifier needs at least two classes")
        if self.width % self.groups:
            raise ValueError(f"width {self.width} must be divisible by groups {self.groups}")
        if self.normal_class is not None and self.normal_class not in self.class_names:
            raise ValueError(f"normal_class {self.normal_class!r} is not a class name")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def describe_encoders(self, brief: bool = False) -> str:
        """Each modality's encoder in a few words: ``"photo: CNN, global pooling; sensors: 1-D CNN; note: embeddings"``.

        Models of one dataset compare on equal terms only when they read the inputs with
        the same encoders; the image encoder's pooling is the one setting that differs
        between shipped models, so the Overview and the model card name it. ``brief``:
        the image encoder's pooling alone (``"global"``; ``"photo: global; ..."`` for
        several images), for a table column; the whole description without an image input.
        """
        images = [m.name for m in self.modalities if m.kind == "image"]
        if brief and images:
            pooling = {"grid": "grid 4x4", "global": "global"}[self.encoder.image_pooling]
            return pooling if len(images) == 1 else "; ".join(f"{name}: {pooling}" for name in images)
        image = {"grid": "CNN, 4x4 grid pooling", "global": "CNN, global pooling"}[self.encoder.image_pooling]
        vector = "MLP" if self.encoder.vector_hidden else "linear"
        words = {"image": image, "timeseries": "1-D CNN", "text": "embeddings", "vector": vector}
        return "; ".join(f"{m.name}: {words.get(m.kind, m.kind)}" for m in self.modalities)

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "modalities": [m.to_dict() for m in self.modalities],
            "class_names": list(self.class_names),
            "width": self.width,
            "groups": self.groups,
            "encoder": dataclasses.asdict(self.encoder),
            "solver": dataclasses.asdict(self.solver),
            "unroll_steps": self.unroll_steps,
            "dataset": self.dataset,
            "normal_class": self.normal_class,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"config: unknown keys {sorted(unknown)}")
        values = dict(data)
        values["modalities"] = tuple(Modality.from_dict(m) for m in data["modalities"])
        values["class_names"] = tuple(data["class_names"])
        if "encoder" in data:
            values["encoder"] = EncoderSettings(**data["encoder"])
        if "solver" in data:
            solver = dict(data["solver"])
            solver["backward"] = BackwardSettings(**solver.get("backward", {}))
            values["solver"] = SolverSettings(**solver)
        return cls(**values)

    def replace(self, **changes: object) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
