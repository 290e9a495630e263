"""Configuration dataclasses of a model; they round-trip through config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from deq_core.engine.encoders import EncoderSettings
from deq_core.engine.implicit import BackwardSettings
from deq_core.engine.modality import Modality
from deq_core.engine.solvers import METHODS, SOLVER_OPTIONS, STOP_MODES

ARCHITECTURES = ("deq", "weight_tied", "early", "late")
GRADIENTS = ("implicit", "phantom")


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
