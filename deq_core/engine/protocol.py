"""What the Lens needs of a model: a small protocol, not our classes.

``deq_core.Lens`` and everything behind it (solves, trajectories, attributions,
Shapley values, corruptions, tuning, reports) reach a model only through these
members, so a model built elsewhere can stand behind the same lens once it is
wrapped to provide them. Our own ``FusionModel`` classes satisfy them as they are.

State layout of an equilibrium model: ``z`` is ``(batch, N + 1, d)``; rows ``0..N-1``
are the per-modality states in the config's modality order, row ``N`` is the fused
state the head reads. The solve starts at ``z0`` (zeros for our DEQs).

A model of your own stands behind the lens through ``deq_core.engine.adapter``: you give
``encode(inputs) -> (b, N, d)``, ``f(z, features) -> z``, ``head(fused) -> logits`` and,
optionally, ``gates(z, features) -> (gates, purified)``; ``AdaptedDEQ`` turns them into
this protocol (its ``run`` solves your f with the lens's solvers). Modalities (name, kind,
shape), class names and the solver settings come from the folder's ``config.json``; the
weights' checksum is ``checkpoint.model_checksum`` over weights, config, adapter.json and the code files.
``is_equilibrium`` and ``has_gates`` say which views a model supports; a view that needs
gates the adapter lacks says so (``Trajectory.has_gates``) instead of failing.
``deq_core.testing.check_adapter`` checks a model against these assumptions.
See docs/own-model.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from deq_core.engine.modality import Inputs, Modality


class ConfigLike(Protocol):
    """The parts of a model's config the lens reads."""

    architecture: str
    dataset: str
    modalities: tuple[Modality, ...]
    class_names: tuple[str, ...]
    solver: Any  # deq_core.SolverSettings: the model's own solver settings

    @property
    def modality_names(self) -> tuple[str, ...]: ...


@runtime_checkable
class LensModel(Protocol):
    """A fusion model the lens can decide, explain and corrupt with.

    Members:
        config: modalities (name, kind, shape), class names, dataset, solver settings.
        device: where its parameters live.
        n_modalities: ``len(config.modalities)``.
        input_means(): the training mean of each modality, ``(*shape)``; what "absent" means.
        encode(inputs): ``(batch, N, d)`` features of the raw inputs (one tensor per modality).
        run(inputs, record=False, solver=None): the decision, a ``FusionOutput`` with ``logits``
            ``(batch, C)`` and, for equilibrium models, the ``solve`` (``SolveResult``).
    """

    config: ConfigLike
    n_modalities: int

    @property
    def device(self) -> torch.device: ...

    def input_means(self) -> tuple[torch.Tensor, ...]: ...

    def encode(self, inputs: Inputs, features: torch.Tensor | None = None) -> torch.Tensor: ...

    def run(self, inputs: Inputs, record: bool = False, solver: Any = None, jacobian_probes: int = 0,
            features: torch.Tensor | None = None) -> Any: ...  # fmt: skip

    def eval(self) -> Any: ...


@runtime_checkable
class EquilibriumLensModel(LensModel, Protocol):
    """A model that decides from a fixed point z* = f(z*; x): what the trajectory, gate and tuning views need.

    Members:
        bind(inputs): ``(f, z0)``: the update with the cases' injection bound (``f(z)``, and
            ``f.rows(index)`` for the same f on some of the cases), and the start state.
        parts(inputs, states): ``(f(states), gates, purified)`` at given iterates, for the
            per-iteration gate view (``(steps, b, N+1, d)``, ``(steps, b, N, d)`` twice).
    """

    def bind(self, inputs: Inputs, features: torch.Tensor | None = None) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]: ...

    def parts(self, inputs: Inputs, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def missing_members(model: object, protocol: type = LensModel) -> Sequence[str]:
    """The protocol members ``model`` lacks (empty when it conforms); names a view cannot offer."""
    names = [n for n in ("config", "n_modalities", "device", "input_means", "encode", "run", "eval")]
    if protocol is EquilibriumLensModel:
        names += ["bind", "parts"]
    return [n for n in names if not hasattr(model, n)]


def is_equilibrium(model: object) -> bool:
    """Whether ``model`` decides from a fixed point the lens can trace (``bind`` and ``parts``), ours or an adapter."""
    return callable(getattr(model, "bind", None)) and callable(getattr(model, "parts", None))


def has_gates(model: object) -> bool:
    """Whether the per-iteration gates and purified terms are real (an adapter may not provide them)."""
    return is_equilibrium(model) and getattr(model, "has_gates", True)
