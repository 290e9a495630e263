"""The DEQ fusion model (Ni et al., 2023) and its baselines behind one interface.

Every model takes a tuple of raw modality inputs, in the order of
``config.modalities``, and offers:

* ``forward(*inputs) -> logits``: what Captum calls;
* ``run(inputs, record=..., solver=...) -> FusionOutput``: logits plus, for the
  equilibrium models, the ``SolveResult`` (and a Jacobian penalty when training).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deq_core.engine.config import ModelConfig, SolverSettings
from deq_core.engine.encoders import build_encoder
from deq_core.engine.modality import Inputs
from deq_core.engine.implicit import attach_implicit_gradient, attach_phantom_gradient, jacobian_frobenius_estimate
from deq_core.engine.solvers import SolveResult, solve, unrolled_result


@dataclass(frozen=True)
class FusionOutput:
    """Result of ``FusionModel.run``.

    Attributes:
        logits: ``(batch, classes)``.
        solve: the equilibrium solve (DEQ) or the unroll's residuals (weight-tied); None otherwise.
        jacobian_penalty: Hutchinson estimate of ||J_f(z*)||_F^2 / dim, when asked for.
        fused: ``(batch, d)`` the representation the head read (z*_fuse for the DEQ).
    """

    logits: torch.Tensor
    solve: SolveResult | None
    jacobian_penalty: torch.Tensor | None
    fused: torch.Tensor


def _group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GroupNorm over the last dimension, per sample (and per modality for ``(b, N, d)``).

    torch's fused kernel does the normalisation (about 7x faster than spelling it
    out); the affine part is applied here because it is per modality.
    """
    shape = x.shape
    normed = F.group_norm(x.reshape(-1, shape[-1]), groups, eps=1e-5).reshape(shape)
    return normed * weight + bias


class FusionUpdate(nn.Module):
    """The DEQ fusion update f(z; x) of docs/model.md, for N modalities of width d.

    State ``z: (batch, N + 1, d)``: rows 0..N-1 are the per-modality states z_i,
    row N is the fused state z_fuse. Per-modality layers are stored as stacked
    ``(N, d, d)`` tensors so all branches run as one batched matmul.
    """

    def __init__(self, n_modalities: int, width: int, groups: int = 4):
        super().__init__()
        n, d = n_modalities, width
        self.n_modalities, self.width, self.groups = n, d, groups
        bound = 1 / math.sqrt(d)
        self.branch_in = nn.Parameter(torch.empty(n, d, d).uniform_(-bound, bound))  # W1_i
        self.branch_in_bias = nn.Parameter(torch.zeros(n, d))  # c1_i
        self.branch_out = nn.Parameter(torch.empty(n, d, d).uniform_(-bound, bound))  # W2_i
        self.branch_out_bias = nn.Parameter(torch.zeros(n, d))  # c2_i
        for name in ("norm1", "norm2", "norm3"):
            self.register_parameter(f"{name}_weight", nn.Parameter(torch.ones(n, d)))
            self.register_parameter(f"{name}_bias", nn.Parameter(torch.zeros(n, d)))
        self.injection_weight = nn.Parameter(torch.ones(n))  # w_i
        self.injection_bias = nn.Parameter(torch.zeros(()))  # b
        self.gate = nn.Linear(d, d)  # W_g, c_g: shared by all modalities, no squashing
        self.fuse = nn.Linear(d, d)  # W_f, c_f
        self.fuse_norm_weight = nn.Parameter(torch.ones(d))
        self.fuse_norm_bias = nn.Parameter(torch.zeros(d))
        self._start_contractive()

    @torch.no_grad()
    def _start_contractive(self) -> None:
        # Deviation from a default init, not from the equations: with unit GroupNorm
        # gains and full-size W2, W_f the untrained f is expansive (spectral radius
        # about 1.3), the first solves never converge and the implicit gradients are
        # meaningless. Half gains on the outputs and W2, W_f at 0.3 give a
        # contraction (about 10 Anderson steps) from the first batch on.
        self.norm3_weight.fill_(0.5)
        self.fuse_norm_weight.fill_(0.5)
        self.branch_out.mul_(0.3)
        self.fuse.weight.mul_(0.3)

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        """x_fuse = sum_i w_i x_i + b, computed once per sample. ``x: (b, N, d) -> (b, d)``."""
        return torch.einsum("bnd,n->bd", x, self.injection_weight) + self.injection_bias

    def _per_modality(self, weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # (b, N, d) x (N, d, d) -> (b, N, d), one matmul per modality.
        return torch.baddbmm(bias[:, None, :], z.transpose(0, 1), weight.transpose(1, 2)).transpose(0, 1)

    def forward(
        self, z: torch.Tensor, x: torch.Tensor, x_fuse: torch.Tensor, return_parts: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One update. ``z: (b, N+1, d)``, ``x: (b, N, d)``, ``x_fuse: (b, d)``.

        With ``return_parts`` also returns the gates alpha_i and purified terms
        z'_i, both ``(b, N, d)``.
        """
        n, g = self.n_modalities, self.groups
        z_modal, z_fuse = z[:, :n], z[:, n]
        h = torch.relu(_group_norm(self._per_modality(self.branch_in, self.branch_in_bias, z_modal), g,
                                   self.norm1_weight, self.norm1_bias))  # fmt: skip
        u = _group_norm(self._per_modality(self.branch_out, self.branch_out_bias, h) + x, g,
                        self.norm2_weight, self.norm2_bias)  # fmt: skip
        f_modal = _group_norm(torch.relu(u + z_modal), g, self.norm3_weight, self.norm3_bias)
        # "Purify, then combine": gates from the NEW branch outputs of this same call.
        gates = self.gate(f_modal + z_fuse[:, None])
        purified = gates * z_fuse[:, None]
        f_fuse = _group_norm(torch.relu(self.fuse(purified.sum(dim=1)) + x_fuse), g,
                             self.fuse_norm_weight, self.fuse_norm_bias)  # fmt: skip
        out = torch.cat([f_modal, f_fuse[:, None]], dim=1)
        if return_parts:
            return out, gates, purified
        return out


class BoundUpdate:
    """f(z) = update(z; x) with the cases' injection bound: what the solvers iterate.

    ``rows(index)`` is the same f for some of the cases, which lets a batched solver
    stop evaluating cases that have converged (see ``solvers._Flat``).
    """

    def __init__(self, update: FusionUpdate, x: torch.Tensor, x_fuse: torch.Tensor):
        self.update, self.x, self.x_fuse = update, x, x_fuse

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.update(z, self.x, self.x_fuse)

    def rows(self, index: torch.Tensor) -> BoundUpdate:
        return BoundUpdate(self.update, self.x[index], self.x_fuse[index])


class FusionModel(nn.Module):
    """Shared parts: one encoder per modality (by kind) and a linear head on width d."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(build_encoder(m, config.width, config.encoder) for m in config.modalities)
        self.head = nn.Linear(config.width, len(config.class_names))

    @property
    def n_modalities(self) -> int:
        return len(self.config.modalities)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def fit_statistics(self, inputs: Inputs) -> None:
        """Set each encoder's standardisation from training inputs."""
        for encoder, x in zip(self.encoders, inputs):
            encoder.fit_statistics(x.to(self.device))

    def checkpoint_encoders(self, on: bool = True) -> None:
        """Recompute convolutional encoders' activations in the backward instead of saving them.

        A training-time memory switch (the gradients do not change); training turns it on.
        """
        for encoder in self.encoders:
            encoder.checkpoint_activations = on and encoder.checkpointable

    def input_means(self) -> tuple[torch.Tensor, ...]:
        """Training-mean input of each modality, ``(*shape)``; zeros (padding) for text."""
        return tuple(e.input_mean for e in self.encoders)

    def encode(self, inputs: Inputs, features: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, N, d)`` features of the raw inputs.

        ``features``, if given, are those features already computed (a robustness sweep
        re-encodes only the modality it corrupted) and are returned as they are.
        """
        if features is not None:
            return features
        if len(inputs) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} inputs ({self.config.modality_names}), got {len(inputs)}")
        return torch.stack([encoder(x) for encoder, x in zip(self.encoders, inputs)], dim=1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(inputs).logits

    def run(
        self,
        inputs: Inputs,
        record: bool = False,
        solver: SolverSettings | None = None,
        jacobian_probes: int = 0,
        features: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Logits and, for equilibrium models, the solve; ``features`` as in ``encode``."""
        raise NotImplementedError


class EquilibriumModel(FusionModel):
    """Models whose fused state comes from iterating the fusion update f."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.update = FusionUpdate(self.n_modalities, config.width, config.groups)

    def bind(self, inputs: Inputs, features: torch.Tensor | None = None) -> tuple[BoundUpdate, torch.Tensor]:
        """Encode once and return ``(f, z0)``: the update with its injection bound, and the zero start."""
        x = self.encode(inputs, features)
        x_fuse = self.update.inject(x)
        z0 = x.new_zeros(x.shape[0], self.n_modalities + 1, self.config.width)
        return BoundUpdate(self.update, x, x_fuse), z0

    def parts(self, inputs: Inputs, states: torch.Tensor,
              features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Evaluate f at given states of the same cases.

        Args:
            inputs: the cases' raw inputs, batch b.
            states: ``(steps, b, N+1, d)`` iterates, e.g. ``SolveResult.states``.
            features: the cases' features, already computed (as ``encode``).

        Returns:
            ``(f(states), gates, purified)`` with shapes ``(steps, b, N+1, d)``,
            ``(steps, b, N, d)``, ``(steps, b, N, d)``.
        """
        steps, batch = states.shape[:2]
        x = self.encode(inputs, features)
        x_fuse = self.update.inject(x)
        repeat = lambda t: t.unsqueeze(0).expand(steps, *t.shape).reshape(steps * batch, *t.shape[1:])  # noqa: E731
        out, gates, purified = self.update(
            states.to(x.device).reshape(steps * batch, *states.shape[2:]), repeat(x), repeat(x_fuse), return_parts=True
        )
        unflat = lambda t: t.reshape(steps, batch, *t.shape[1:])  # noqa: E731
        return unflat(out), unflat(gates), unflat(purified)


class DEQFusion(EquilibriumModel):
    """Deep equilibrium fusion: the head reads z*_fuse of the fixed point z* = f(z*; x)."""

    def run(
        self,
        inputs: Inputs,
        record: bool = False,
        solver: SolverSettings | None = None,
        jacobian_probes: int = 0,
        features: torch.Tensor | None = None,
    ) -> FusionOutput:
        settings = solver or self.config.solver
        f, z0 = self.bind(inputs, features)
        return solve_equilibrium(f, z0, self.head, self.n_modalities, settings, self.training, record, jacobian_probes)


def solve_equilibrium(f, z0: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], n_modalities: int,
                      settings: SolverSettings, training: bool, record: bool = False,
                      jacobian_probes: int = 0) -> FusionOutput:  # fmt: skip
    """Solve z* = f(z*), attach the gradient ``settings`` asks for, and read the fused row with ``head``.

    Shared by ``DEQFusion`` and a user's ``AdaptedDEQ``, so both decide from the same
    solve, gradient and one extra evaluation of f: the lens treats them alike.
    """
    with torch.no_grad():
        # Training keeps every case in every f-evaluation (bit-reproducible retraining);
        # inference lets converged cases leave the batch.
        result = solve(f, z0, record=record, compact=not training, **settings.options())
    penalty = None
    if torch.is_grad_enabled():
        if settings.gradient == "implicit":
            z = attach_implicit_gradient(f, result.z, settings.backward)
        else:
            z = attach_phantom_gradient(f, result.z, settings.phantom_steps, settings.damping)
        if jacobian_probes:
            z_in = result.z.detach().requires_grad_()
            penalty = jacobian_frobenius_estimate(f(z_in), z_in, probes=jacobian_probes)
    else:
        z = f(result.z)  # the same one extra evaluation as the gradient path, so outputs agree
    fused = z[:, n_modalities]
    return FusionOutput(head(fused), result, penalty, fused)


class WeightTiedFusion(EquilibriumModel):
    """Ablation: the same f applied ``unroll_steps`` times from zero, back-propagated through the unroll."""

    def run(
        self,
        inputs: Inputs,
        record: bool = False,
        solver: SolverSettings | None = None,
        jacobian_probes: int = 0,
        features: torch.Tensor | None = None,
    ) -> FusionOutput:
        settings = solver or self.config.solver
        f, z0 = self.bind(inputs, features)
        z, states = _unroll(f, z0, self.config.unroll_steps)
        result = unrolled_result(states, settings.tol, settings.stop_mode, record=record)
        fused = z[:, self.n_modalities]
        return FusionOutput(self.head(fused), result, None, fused)


def _unroll(f, z0: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    states = [z0]
    for _ in range(steps):
        states.append(f(states[-1]))
    return states[-1], states


class EarlyFusion(FusionModel):
    """Concatenate the encoded features, then an MLP to width d, then the head."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        d = config.width
        self.mix = nn.Sequential(nn.Linear(self.n_modalities * d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())

    def run(
        self,
        inputs: Inputs,
        record: bool = False,
        solver: SolverSettings | None = None,
        jacobian_probes: int = 0,
        features: torch.Tensor | None = None,
    ) -> FusionOutput:
        fused = self.mix(self.encode(inputs, features).flatten(1))
        return FusionOutput(self.head(fused), None, None, fused)


class LateFusion(FusionModel):
    """A head per modality on its own features; the logits are averaged."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.modality_heads = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(config.width, len(config.class_names))) for _ in config.modalities
        )
        del self.head  # each modality has its own
        self.register_module("head", None)

    @property
    def device(self) -> torch.device:
        return self.modality_heads[0][1].weight.device

    def modality_logits(self, inputs: Inputs, features: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, N, classes)``: what each modality alone says."""
        x = self.encode(inputs, features)
        return torch.stack([head(x[:, i]) for i, head in enumerate(self.modality_heads)], dim=1)

    def run(
        self,
        inputs: Inputs,
        record: bool = False,
        solver: SolverSettings | None = None,
        jacobian_probes: int = 0,
        features: torch.Tensor | None = None,
    ) -> FusionOutput:
        per_modality = self.modality_logits(inputs, features)
        return FusionOutput(per_modality.mean(dim=1), None, None, per_modality.flatten(1))


MODELS: dict[str, type[FusionModel]] = {
    "deq": DEQFusion,
    "weight_tied": WeightTiedFusion,
    "early": EarlyFusion,
    "late": LateFusion,
}


def build_model(config: ModelConfig) -> FusionModel:
    """A freshly initialised model of ``config.architecture``."""
    return MODELS[config.architecture](config)
