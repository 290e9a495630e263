"""The path a solve took, case by case, with the model's own per-iteration signals."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deq_core.engine.protocol import is_equilibrium
from deq_core.engine.config import SolverSettings
from deq_core.engine.modality import Inputs
from deq_core.engine.model import EquilibriumModel, FusionModel, FusionOutput
from deq_core.engine.solvers import SolveStatus


@dataclass(frozen=True)
class Trajectory:
    """One case's solve, iteration by iteration (T = iterations the case used).

    Attributes:
        modality_names: the N modalities, in state order.
        class_names: the C classes.
        states: ``(T, N+1, d)`` iterate z_k; row N is the fused state.
        gates: ``(T, N, d)`` fusion gates alpha_i computed in f(z_k).
        purified: ``(T, N, d)`` purified terms z'_i = alpha_i * z_fuse in f(z_k).
        probabilities: ``(T, C)`` class probabilities the head gives for f(z_k).
        absolute_residuals: ``(T,)`` ||f(z_k) - z_k||.
        relative_residuals: ``(T,)`` ||f(z_k) - z_k|| / ||f(z_k)||.
        status: how the solve ended (a ``SolveStatus``, equal to its string).
        best_iteration: the iterate the model decided from.
    """

    modality_names: tuple[str, ...]
    class_names: tuple[str, ...]
    states: torch.Tensor
    gates: torch.Tensor
    purified: torch.Tensor
    probabilities: torch.Tensor
    absolute_residuals: torch.Tensor
    relative_residuals: torch.Tensor
    status: SolveStatus
    best_iteration: int

    @property
    def iterations(self) -> int:
        return self.states.shape[0]

    @property
    def converged(self) -> bool:
        return self.status == SolveStatus.CONVERGED

    @property
    def predictions(self) -> torch.Tensor:
        """``(T,)`` class index predicted at each iteration."""
        return self.probabilities.argmax(dim=1)

    @property
    def lock_in_iteration(self) -> int:
        """First iteration after which the predicted class never changes again."""
        predictions = self.predictions
        changed = (predictions != predictions[-1]).nonzero()
        return int(changed[-1]) + 1 if len(changed) else 0

    @property
    def has_gates(self) -> bool:
        """Whether the gates are the model's own (an adapter without ``gates`` records NaN): the gate view's to say."""
        return bool(torch.isfinite(self.gates).all())

    def gate_share(self) -> torch.Tensor:
        """``(T, N)`` share of the fused state each modality supports: ||z'_i|| / sum_j ||z'_j||.

        All zeros at iteration 0, where the fused state is still the zero start.
        """
        norms = self.purified.norm(dim=2)
        return norms / norms.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def state_change(self) -> torch.Tensor:
        """``(T-1, N+1)`` size of each part's step ||z_{k+1} - z_k||, modalities then fused."""
        return (self.states[1:] - self.states[:-1]).norm(dim=2)


@torch.no_grad()
def trace(
    model: FusionModel, inputs: Inputs, solver: SolverSettings | None = None, features: torch.Tensor | None = None
) -> tuple[FusionOutput, list[Trajectory]]:
    """Solve with recording and return the output and one ``Trajectory`` per case.

    The per-iteration gates, purified terms and probabilities are recomputed from
    the recorded iterates in one batched f evaluation, so the solver stays generic.
    ``features``: the cases' encoder features, already computed (``model.encode``);
    None: encoded here.
    """
    if not is_equilibrium(model):
        raise TypeError(f"a {model.config.architecture!r} model has no equilibrium to trace")
    output = model.run(inputs, record=True, solver=solver, features=features)
    # An adapter's parts() takes no features: they are passed only when there are some.
    given = {} if features is None else {"features": features}
    images, gates, purified = model.parts(inputs, output.solve.states, **given)
    result = output.solve
    states = result.states  # (steps, batch, N+1, d) on the CPU
    probabilities = torch.softmax(model.head(images[:, :, model.n_modalities]), dim=-1).cpu()
    gates, purified = gates.cpu(), purified.cpu()
    config = model.config
    trajectories = []
    for i, steps in enumerate(result.iterations.tolist()):
        trajectories.append(
            Trajectory(
                modality_names=config.modality_names,
                class_names=config.class_names,
                states=states[:steps, i].clone(),
                gates=gates[:steps, i].clone(),
                purified=purified[:steps, i].clone(),
                probabilities=probabilities[:steps, i].clone(),
                absolute_residuals=result.absolute_residuals[i],
                relative_residuals=result.relative_residuals[i],
                status=result.status[i],
                best_iteration=int(result.best_iteration[i]),
            )
        )
    return output, trajectories
