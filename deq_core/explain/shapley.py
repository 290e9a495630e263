"""Exact Shapley values of the modalities: how much each modality moves the prediction.

The players are the M modalities; a coalition S keeps the modalities in S and
replaces every other one by its training mean (``absent_input``). The value of a
coalition is the target class's probability, v(S) = p(target | S present),
because probabilities are what users read; the values then add up to
p(full case) - p(every modality absent) (efficiency). All 2^M coalitions of a
case are evaluated in ONE batched forward; the solver stops per sample, so the
rows do not influence each other.

Captum's ``FeatureAblation`` with one mask id per modality and the same
replacement is run as an independent cross-check of the coalition bookkeeping:
its attribution of modality i must equal v(all) - v(all without i).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import torch
from captum.attr import FeatureAblation

from deq_core.explain.attribution import SolveSummary, case_batch, evaluation_mode, summarise_solves, target_classes
from deq_core.case import absent_input as absent
from deq_core.engine.config import SolverSettings
from deq_core.engine.modality import Inputs
from deq_core.engine.model import FusionModel

MAX_MODALITIES = 12  # 2^12 = 4096 rows per case: beyond that exact enumeration stops being cheap
VALUE = "probability"


def absent_input(model: FusionModel, modality: int, x: torch.Tensor) -> torch.Tensor:
    """Modality ``modality`` of the cases ``x: (b, *shape)`` made absent: the training mean, broadcast.

    The one rule (``deq_core.case.absent_input``), which the "drop" corruption, uploads
    with a missing input and the training-mean IG baseline follow too.
    """
    return absent(model.input_means()[modality], x)  # text: zeros, all padding


def coalition_masks(n_modalities: int) -> torch.Tensor:
    """``(2^M, M)`` bool: row s keeps modality i where bit i of s is set (row 0: none, last row: all)."""
    if not 1 <= n_modalities <= MAX_MODALITIES:
        raise ValueError(f"exact modality Shapley values need 1..{MAX_MODALITIES} modalities, got {n_modalities}")
    rows = torch.arange(2**n_modalities)
    return (rows[:, None] >> torch.arange(n_modalities)) & 1 == 1


def coalition_inputs(model: FusionModel, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """The inputs of every coalition of every case: ``(b * 2^M, *shape)`` per modality, case-major."""
    x = case_batch(model, inputs)
    masks = coalition_masks(model.n_modalities).to(x[0].device)
    k = masks.shape[0]
    result = []
    for i, xi in enumerate(x):
        present = xi.unsqueeze(1).expand(-1, k, *xi.shape[1:])
        absent = absent_input(model, i, xi).unsqueeze(1).expand_as(present)
        keep = masks[:, i].view(1, k, *([1] * (xi.dim() - 1)))
        result.append(torch.where(keep, present, absent).reshape(-1, *xi.shape[1:]))
    return tuple(result)


def coalition_features(model: FusionModel, features: torch.Tensor, absent_features: torch.Tensor) -> torch.Tensor:
    """``coalition_inputs`` at the encoders' output: ``(b * 2^M, N, d)`` from the cases' ``(b, N, d)``
    features and the absent inputs' ``(1, N, d)``; row s of a case keeps modality i's features where
    bit i of s is set. Equal to encoding ``coalition_inputs`` when feature i depends on input i alone."""
    b, n, d = features.shape
    masks = coalition_masks(model.n_modalities).to(features.device)
    k = masks.shape[0]
    keep = masks.view(1, k, n, 1)
    present = features.unsqueeze(1).expand(b, k, n, d)
    return torch.where(keep, present, absent_features.unsqueeze(1).expand(b, k, n, d)).reshape(b * k, n, d)


@lru_cache(maxsize=MAX_MODALITIES)
def shapley_weights(n_modalities: int) -> torch.Tensor:
    """``(2^M, M)`` float64 W with values = v @ W: phi_i = sum_S |S|!(M-|S|-1)!/M! [v(S+i) - v(S)].

    Cached (every case of a batch uses it): read it, do not modify it.
    """
    masks = coalition_masks(n_modalities)
    m = n_modalities
    weights = torch.zeros(2**m, m, dtype=torch.float64)
    for s, row in enumerate(masks.tolist()):
        size = sum(row)
        for i in range(m):
            if row[i]:
                continue
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            weights[s | (1 << i), i] += w
            weights[s, i] -= w
    return weights


@lru_cache(maxsize=MAX_MODALITIES)
def interaction_weights(n_modalities: int) -> torch.Tensor:
    """``(2^M, M, M)`` float64 W with interactions = v @ W (Grabisch's Shapley interaction index).

    I_ij = sum_{S without i, j} |S|!(M-|S|-2)!/(M-1)! [v(S+ij) - v(S+i) - v(S+j) + v(S)]; the diagonal is 0.
    Cached like ``shapley_weights``: read it, do not modify it.
    """
    masks = coalition_masks(n_modalities)
    m = n_modalities
    weights = torch.zeros(2**m, m, m, dtype=torch.float64)
    for i, j in combinations(range(m), 2):
        for s, row in enumerate(masks.tolist()):
            if row[i] or row[j]:
                continue
            size = sum(row)
            w = math.factorial(size) * math.factorial(m - size - 2) / math.factorial(m - 1)
            for coalition, sign in ((s | 1 << i | 1 << j, 1), (s | 1 << i, -1), (s | 1 << j, -1), (s, 1)):
                weights[coalition, i, j] += sign * w
                weights[coalition, j, i] += sign * w
    return weights


@dataclass(frozen=True)
class ModalityShapley:
    """Exact modality Shapley values of one case (M modalities).

    Attributes:
        modality_names: the players, in model order.
        class_names: the C classes.
        target: class whose probability is the coalition value.
        values: ``(M,)`` Shapley value per modality; they sum to ``full_value - empty_value``.
        interactions: ``(M, M)`` symmetric Shapley interaction indices, zero diagonal:
            > 0 where two modalities together do more than each alone.
        coalition_values: ``(2^M,)`` v(S), coalition s keeps modality i where bit i is set.
        full_value: v(all modalities), the target probability of the case itself.
        empty_value: v(no modality), every input at its training mean.
        ablation: ``(M,)`` Captum FeatureAblation per modality, v(all) - v(all without i);
            None when the cross-check was skipped.
        ablation_max_abs_diff: largest |ablation - the same from coalition_values|.
        coalition_solve: the 2^M equilibrium solves (worst of them); None for feed-forward models.
    """

    modality_names: tuple[str, ...]
    class_names: tuple[str, ...]
    target: int
    values: torch.Tensor
    interactions: torch.Tensor
    coalition_values: torch.Tensor
    full_value: float
    empty_value: float
    ablation: torch.Tensor | None
    ablation_max_abs_diff: float | None
    coalition_solve: SolveSummary | None
    value: str = VALUE

    @classmethod
    def from_coalition_values(
        cls,
        coalition_values: torch.Tensor,
        modality_names: Sequence[str],
        class_names: Sequence[str],
        target: int,
        **extras: torch.Tensor | float | SolveSummary | None,
    ) -> ModalityShapley:
        """Shapley values and interactions of one case from its ``(2^M,)`` coalition values v(S).

        For any value function, not only a model's (e.g. an ideal classifier's posteriors);
        ``extras`` fills ``ablation``, ``ablation_max_abs_diff`` and ``coalition_solve``.
        """
        m = len(modality_names)
        values = coalition_values.double().cpu()
        if values.shape != (2**m,):
            raise ValueError(f"{m} modalities need {2**m} coalition values, got shape {tuple(values.shape)}")
        extras = {"ablation": None, "ablation_max_abs_diff": None, "coalition_solve": None, **extras}
        return cls(
            modality_names=tuple(modality_names),
            class_names=tuple(class_names),
            target=int(target),
            values=(values @ shapley_weights(m)).float(),
            interactions=torch.einsum("s,sij->ij", values, interaction_weights(m)).float(),
            coalition_values=values.float(),
            full_value=float(values[-1]),
            empty_value=float(values[0]),
            **extras,
        )

    def without(self, modality: int) -> float:
        """v(all modalities but ``modality``): the target probability when it alone is dropped."""
        return float(self.coalition_values[(2 ** len(self.modality_names) - 1) ^ (1 << modality)])

    @property
    def efficiency_gap(self) -> float:
        """sum(values) - (full - empty); zero up to rounding for exact Shapley values."""
        return float(self.values.sum()) - (self.full_value - self.empty_value)

    def to_dict(self) -> dict:
        return {
            "modalities": list(self.modality_names),
            "target": self.target,
            "target_name": self.class_names[self.target],
            "value": self.value,
            "values": dict(zip(self.modality_names, self.values.tolist())),
            "interactions": self.interactions.tolist(),
            "coalition_values": self.coalition_values.tolist(),
            "full_value": self.full_value,
            "empty_value": self.empty_value,
            "ablation": None if self.ablation is None else dict(zip(self.modality_names, self.ablation.tolist())),
            "ablation_max_abs_diff": self.ablation_max_abs_diff,
            "coalition_solve": None if self.coalition_solve is None else self.coalition_solve.to_dict(),
        }


def modality_shapley(
    model: FusionModel,
    inputs: Inputs,
    target: int | Sequence[int] | torch.Tensor | None = None,
    cross_check: bool = True,
    solver: SolverSettings | None = None,
    features: torch.Tensor | None = None,
) -> list[ModalityShapley]:
    """Exact modality Shapley values and interactions of each case.

    Args:
        model: any fusion model; run in eval mode for the call.
        inputs: raw inputs, one tensor per modality, ``(b, *modality.shape)``.
        target: class per case (one int for all); None: each case's predicted class
            (read from the all-present coalition, so no extra forward is needed).
        cross_check: also run Captum's FeatureAblation (one more batched forward).
        solver: equilibrium solver settings; default the model's own.
        features: the cases' encoder features ``(b, N, d)`` (``model.encode(inputs)``),
            already computed: the coalitions and the cross-check are then built from
            them and from the absent inputs' features (``coalition_features``), so no
            encoder runs again (a batch audit's largest saving). Only for the
            project's own models, whose modality i's features depend on input i alone.

    Returns:
        One ``ModalityShapley`` per case. All b * 2^M coalitions run as one batch.
    """
    config = model.config
    m = model.n_modalities
    k = 2**m
    with evaluation_mode(model), torch.no_grad():
        x = case_batch(model, inputs)
        b = x[0].shape[0]
        if features is None:
            out = model.run(coalition_inputs(model, x), solver=solver)
        else:
            absent_features = model.encode([absent_input(model, i, xi[:1]) for i, xi in enumerate(x)])
            out = model.run(x, solver=solver, features=coalition_features(model, features, absent_features))
        probabilities = torch.softmax(out.logits.double(), dim=-1).reshape(b, k, -1).cpu()
        targets = (
            probabilities[:, -1].argmax(dim=1) if target is None else target_classes(target, b, len(config.class_names))
        )
        values = probabilities.gather(2, targets[:, None, None].expand(b, k, 1))[..., 0]  # (b, 2^M)
        if not cross_check:
            ablation = None
        elif features is None:
            ablation = _feature_ablation(model, x, targets, solver)
        else:
            ablation = _feature_ablation_on_features(model, x, features, absent_features, targets, solver)

    everything = k - 1
    results = []
    for case in range(b):
        own = None
        gap = None
        if ablation is not None:
            own = ablation[case]
            without = torch.tensor([everything ^ (1 << i) for i in range(m)])
            from_coalitions = values[case, everything] - values[case, without]
            gap = float((own - from_coalitions).abs().max())
        results.append(
            ModalityShapley.from_coalition_values(
                values[case],
                config.modality_names,
                config.class_names,
                int(targets[case]),
                ablation=None if own is None else own.float(),
                ablation_max_abs_diff=gap,
                coalition_solve=(
                    summarise_solves([out.solve], [torch.arange(case * k, (case + 1) * k)]) if out.solve else None
                ),
            )
        )
    return results


def _feature_ablation(
    model: FusionModel, x: Inputs, targets: torch.Tensor, solver: SolverSettings | None
) -> torch.Tensor:
    """``(b, M)`` Captum FeatureAblation, one feature id per modality, baseline = the absent input."""

    def probability(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model.run(inputs, solver=solver).logits.double(), dim=-1)

    masks = tuple(torch.full((1, *xi.shape[1:]), i, dtype=torch.long, device=xi.device) for i, xi in enumerate(x))
    baselines = tuple(absent_input(model, i, xi[:1]) for i, xi in enumerate(x))
    attributions = FeatureAblation(probability).attribute(
        x,
        baselines=baselines,
        target=targets.tolist(),
        feature_mask=masks,
        perturbations_per_eval=len(x),
    )
    # Every element of modality i carries modality i's attribution; read one per modality.
    return torch.stack([a.reshape(a.shape[0], -1)[:, 0].double().cpu() for a in attributions], dim=1)


def _feature_ablation_on_features(model: FusionModel, x: Inputs, features: torch.Tensor, absent_features: torch.Tensor,
                                  targets: torch.Tensor, solver: SolverSettings | None) -> torch.Tensor:  # fmt: skip
    """``_feature_ablation`` with Captum ablating the encoders' output, modality i's feature row at a time, towards
    the absent inputs' features: the same cross-check of the coalition bookkeeping without re-running the encoders."""

    def probability(feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model.run(x, solver=solver, features=feats).logits.double(), dim=-1)

    n = features.shape[1]
    mask = torch.arange(n, device=features.device).view(1, n, 1).expand(1, n, features.shape[2])
    attributions = FeatureAblation(probability).attribute(
        features, baselines=absent_features, target=targets.tolist(), feature_mask=mask, perturbations_per_eval=n
    )
    return attributions[:, :, 0].double().cpu()
