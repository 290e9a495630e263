"""One case, fully explained: prediction, the solve's path, Captum attributions,
modality Shapley values, the model's own gate signal, and how far to trust them.

    explanation = explain_case(model, dataset.case("insp-0042")[0])
    json.dumps(explanation.to_dict())
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from deq_core.explain.attribution import (
    COMPLETENESS_TOLERANCE,
    DEFAULT_STEPS,
    Attribution,
    BaselineChoice,
    SolveSummary,
    case_batch,
    evaluation_mode,
    integrated_gradients,
    summarise_solves,
)
from deq_core.engine.adapter import trust_for
from deq_core.engine.protocol import is_equilibrium
from deq_core.engine.config import SolverSettings
from deq_core.engine.model import EquilibriumModel, FusionModel
from deq_core.explain.shapley import ModalityShapley, modality_shapley
from deq_core.explain.stability import Anchor, Stability, case_stability
from deq_core.engine.trajectory import Trajectory, trace

STABILITY_STARTS = 8  # starting points of the uniqueness check an explanation runs (zero, class equilibria, noise)
JUMP_SHARE = 0.3  # one path step carrying this share of the output change is a jump, not a slope
CROSS_CHECK_TOLERANCE = 1e-4  # FeatureAblation vs coalition values, in probability


@dataclass(frozen=True)
class Reliability:
    """How far to trust one explanation.

    Attributes:
        converged: the case's own equilibrium solve met its tolerance.
        status: that solve's status (``"converged"``, ``"max_iter"``, ``"diverged"``, or
            ``"feed-forward"`` for models without a solve).
        iterations: iterations of that solve (0 for feed-forward models).
        final_relative_residual: ||f(z*) - z*|| / ||f(z*)|| of the returned state.
        ig_delta: Captum's convergence delta of the integrated gradients.
        ig_relative_delta: |delta| / |F(x) - F(baseline)|.
        ig_complete: ig_relative_delta within 1%.
        solves_converged: every solve behind the explanation converged (case,
            baseline, integration path, modality coalitions).
        reliable: no warnings.
        warnings: plain-language reasons for caution.
    """

    converged: bool
    status: str
    iterations: int
    final_relative_residual: float | None
    ig_delta: float
    ig_relative_delta: float
    ig_complete: bool
    solves_converged: bool
    reliable: bool
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "converged": self.converged,
            "status": self.status,
            "iterations": self.iterations,
            "final_relative_residual": self.final_relative_residual,
            "ig_delta": self.ig_delta,
            "ig_relative_delta": self.ig_relative_delta if math.isfinite(self.ig_relative_delta) else None,
            "ig_complete": self.ig_complete,
            "solves_converged": self.solves_converged,
            "reliable": self.reliable,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Explanation:
    """Everything the app and reports show about one case (N modalities, C classes, T iterations).

    Attributes:
        modality_names, class_names: the model's.
        prediction: predicted class index; ``probabilities``: ``(C,)`` floats.
        target: the class explained (the prediction unless asked otherwise).
        texts: raw text of the text modalities, for display.
        trajectory: the solve, iteration by iteration (None for feed-forward models).
        gate_share: ``(T, N)`` share of the fused state each modality supports, per iteration.
        lock_in_iteration: first iteration after which the predicted class never changes.
        attribution: Integrated Gradients over all modalities.
        shapley: exact modality Shapley values of the target probability.
        reliability: solver residuals, IG delta, the ``reliable`` flag and warnings.
        seconds: wall time of the explanation.
        stability: the fixed point's local stability and uniqueness (DEQ models; None
            for models that decide from no fixed point, or when not asked for).
    """

    modality_names: tuple[str, ...]
    class_names: tuple[str, ...]
    prediction: int
    probabilities: tuple[float, ...]
    target: int
    texts: Mapping[str, str]
    trajectory: Trajectory | None
    gate_share: torch.Tensor | None
    lock_in_iteration: int | None
    attribution: Attribution
    shapley: ModalityShapley
    reliability: Reliability
    seconds: float
    stability: Stability | None = None

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.prediction]

    @property
    def reliable(self) -> bool:
        return self.reliability.reliable

    def to_dict(self) -> dict:
        """Plain lists, floats, strings and bools: ``json.dumps`` takes it as is.

        The trajectory keeps its per-iteration probabilities, residuals and gate
        shares; the raw d-wide states and gates stay out (they are the app's to plot
        from the object, not a report's to store).
        """
        trajectory = None
        if self.trajectory is not None:
            t = self.trajectory
            trajectory = {
                "iterations": t.iterations,
                "status": t.status,
                "best_iteration": t.best_iteration,
                "relative_residuals": t.relative_residuals.tolist(),
                "absolute_residuals": t.absolute_residuals.tolist(),
                "probabilities": t.probabilities.tolist(),
                "predictions": t.predictions.tolist(),
            }
        return {
            "modalities": list(self.modality_names),
            "classes": list(self.class_names),
            "prediction": self.prediction,
            "predicted_class": self.predicted_class,
            "probabilities": list(self.probabilities),
            "target": self.target,
            "target_class": self.class_names[self.target],
            "texts": dict(self.texts),
            "trajectory": trajectory,
            "gate_share": None if self.gate_share is None else self.gate_share.tolist(),
            "lock_in_iteration": self.lock_in_iteration,
            "attribution": self.attribution.to_dict(),
            "shapley": self.shapley.to_dict(),
            "reliability": self.reliability.to_dict(),
            "stability": None if self.stability is None else self.stability.to_dict(),
            "seconds": self.seconds,
        }


def _one_case(model: FusionModel, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Accept one case with or without its batch dimension of 1 (``deq_core.case.batch_of_one``)."""
    from deq_core.case import batch_of_one

    shaped = [torch.as_tensor(x) for x in inputs]
    first = model.config.modalities[0]
    if shaped and shaped[0].dim() == len(first.shape) + 1 and len(shaped[0]) != 1:
        raise ValueError(f"explain_case takes one case, got a batch of {len(shaped[0])}")
    return case_batch(model, batch_of_one(model.config.modalities, shaped))


def explain_case(
    model: FusionModel,
    inputs: Sequence[torch.Tensor],
    texts: Mapping[str, str] | None = None,
    target: int | None = None,
    n_steps: int = DEFAULT_STEPS,
    baseline: BaselineChoice = None,
    internal_batch_size: int | None = None,
    cross_check: bool = True,
    solver: SolverSettings | None = None,
    stability_starts: int = STABILITY_STARTS,
    anchors: Sequence[Anchor] = (),
) -> Explanation:
    """Explain one case.

    Args:
        model: a trained fusion model (run in eval mode for the call).
        inputs: one tensor per modality, ``(1, *shape)`` or ``(*shape)``.
        texts: raw text per text modality name, shown next to the token scores.
        target: class to explain; None: the predicted class.
        n_steps, baseline, internal_batch_size: Integrated Gradients settings
            (see ``attribution.integrated_gradients``).
        cross_check: run Captum's FeatureAblation beside the exact Shapley values.
        solver: equilibrium solver settings; default the model's own.
        stability_starts: starting points of the uniqueness check (0: no stability
            check); only DEQ models (``architecture == "deq"``) get one.
        anchors: typical equilibria of the classes to start from (``class_anchors``);
            without them the starts are zero and noise.
    """
    (explanation,) = explain_targets(
        model, inputs, [target], texts=texts, n_steps=n_steps, baseline=baseline,
        internal_batch_size=internal_batch_size, cross_check=cross_check, solver=solver,
        stability_starts=stability_starts, anchors=anchors,
    )  # fmt: skip
    return explanation


def explain_targets(
    model: FusionModel,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[int | None],
    texts: Mapping[str, str] | None = None,
    n_steps: int = DEFAULT_STEPS,
    baseline: BaselineChoice = None,
    internal_batch_size: int | None = None,
    cross_check: bool = True,
    solver: SolverSettings | None = None,
    stability_starts: int = STABILITY_STARTS,
    anchors: Sequence[Anchor] = (),
) -> list[Explanation]:
    """One case explained for each class in ``targets`` (None: the predicted class), in that order.

    What does not depend on the class is done once: the case's solve, the fixed point's
    stability, and the 2^M coalition solves of the Shapley values (all targets' rows in one
    batch; the solver stops per row, so each row is the single-target computation). Only
    Integrated Gradients, whose path is placed by the target's output, runs per class. Each
    result equals ``explain_case`` with that target (tests/explain/test_explanation.py);
    ``seconds`` is the shared work's time plus that class's own. Arguments as ``explain_case``.
    """
    start = time.perf_counter()
    config = model.config
    if not targets:
        raise ValueError("explain_targets needs at least one target")
    with evaluation_mode(model):
        x = _one_case(model, inputs)
        trajectory = None
        with torch.no_grad():
            if is_equilibrium(model):
                output, (trajectory,) = trace(model, x, solver=solver)
            else:
                output = model.run(x, solver=solver)
        probabilities = torch.softmax(output.logits.double(), dim=-1)[0].cpu()
        prediction = int(probabilities.argmax())
        chosen = [prediction if t is None else int(t) for t in targets]
        attributions, own_seconds = [], []
        for target in chosen:  # first, as explain_case always did (the order of the calls is kept)
            began = time.perf_counter()
            (attribution,) = integrated_gradients(
                model, x, target, baseline, n_steps=n_steps, internal_batch_size=internal_batch_size, solver=solver
            )
            attributions.append(attribution)
            own_seconds.append(time.perf_counter() - began)
        rows = len(chosen)
        batch = x if rows == 1 else tuple(xi.expand(rows, *xi.shape[1:]).contiguous() for xi in x)
        shapleys = modality_shapley(model, batch, chosen, cross_check=cross_check, solver=solver)
        stability = None
        if stability_starts > 0 and config.architecture == "deq" and isinstance(model, EquilibriumModel):
            stability = case_stability(model, x, stability_starts, anchors, solver)
    shared = time.perf_counter() - start - sum(own_seconds)
    case_solve = summarise_solves([output.solve]) if output.solve is not None else None
    return [
        Explanation(
            modality_names=config.modality_names,
            class_names=config.class_names,
            prediction=prediction,
            probabilities=tuple(probabilities.tolist()),
            target=target,
            texts=dict(texts or {}),
            trajectory=trajectory,
            gate_share=trajectory.gate_share() if trajectory is not None and trajectory.has_gates else None,
            lock_in_iteration=trajectory.lock_in_iteration if trajectory is not None else None,
            attribution=attribution,
            shapley=shapley,
            reliability=assess(case_solve, attribution, shapley, tolerance=(solver or config.solver).tol,
                               stability=stability),  # fmt: skip
            seconds=shared + seconds,
            stability=stability,
        )
        for target, attribution, shapley, seconds in zip(chosen, attributions, shapleys, own_seconds)
    ]


def assess(
    case_solve: SolveSummary | None, attribution: Attribution, shapley: ModalityShapley, tolerance: float,
    stability: Stability | None = None,
) -> Reliability:
    """The reliability verdict and its plain-language warnings (``stability``'s among them: a radius >= 1 or a
    second equilibrium makes the decision, and so every explanation of it, depend on the solver's start)."""
    warnings = []
    if case_solve is not None and not case_solve.converged:
        warnings.append(
            f"The model's equilibrium for this case did not settle ({_status(case_solve.status)} after "
            f"{case_solve.iterations} iterations, relative residual {case_solve.relative_residual:.1e} above "
            f"the tolerance {tolerance:.0e}): the prediction itself is unsteady, and so is every explanation of it."
        )
    baseline = attribution.baseline_solve
    if baseline is not None and not baseline.converged:
        warnings.append(
            f"The equilibrium at the attribution baseline did not settle ({_status(baseline.status)}, relative "
            f"residual {baseline.relative_residual:.1e}): the output there, and the completeness check, "
            "are approximate."
        )
    path = attribution.path_solve
    if path is not None and not path.converged:
        warnings.append(
            f"{path.unconverged} of the {path.solves} equilibrium solves along the attribution path did not settle "
            f"(worst relative residual {path.relative_residual:.1e}): the feature attributions are approximate."
        )
    coalitions = shapley.coalition_solve
    if coalitions is not None and not coalitions.converged:
        warnings.append(
            f"{coalitions.unconverged} of the {coalitions.solves} solves with modalities left out did not settle "
            f"(worst relative residual {coalitions.relative_residual:.1e}): the modality contributions are approximate."
        )
    if not attribution.complete:
        total, change = sum(attribution.totals), attribution.output_change
        message = (
            f"The feature attributions add up to {total:.3g} while the {attribution.output} changed by {change:.3g} "
            f"from the baseline (off by {_percent(attribution.relative_delta)}, more than "
            f"{COMPLETENESS_TOLERANCE:.0%}): "
        )
        if attribution.largest_path_step > JUMP_SHARE:
            message += (
                f"the output changes abruptly on the way from the baseline (one of the "
                f"{len(attribution.path_values) - 1} path steps carries {_percent(attribution.largest_path_step)} "
                "of the change): steeper than the integration resolves, or a switch between equilibria, which no "
                "gradient accounts for. Rely on the modality contributions more than on the per-feature maps."
            )
        else:
            message += f"raise the number of integration steps (now {attribution.n_steps})."
        warnings.append(message)
    if shapley.ablation_max_abs_diff is not None and shapley.ablation_max_abs_diff > CROSS_CHECK_TOLERANCE:
        warnings.append(
            f"Captum's modality ablation disagrees with the Shapley coalition values by "
            f"{shapley.ablation_max_abs_diff:.1e} in probability: the modality contributions are suspect."
        )
    if stability is not None:
        warnings += stability.warnings()
    solves_converged = attribution.solves_converged and (coalitions is None or coalitions.converged)
    solves_converged = solves_converged and (case_solve is None or case_solve.converged)
    return Reliability(
        converged=case_solve is None or case_solve.converged,
        status="feed-forward" if case_solve is None else case_solve.status,
        iterations=0 if case_solve is None else case_solve.iterations,
        final_relative_residual=None if case_solve is None else case_solve.relative_residual,
        ig_delta=attribution.convergence_delta,
        ig_relative_delta=attribution.relative_delta,
        ig_complete=attribution.complete,
        solves_converged=solves_converged,
        reliable=not warnings,
        warnings=tuple(warnings),
    )


def _status(status: str) -> str:
    return {"max_iter": "it ran out of iterations", "diverged": "it diverged"}.get(status, status)


def _percent(share: float) -> str:
    return "an unbounded share" if not math.isfinite(share) else f"{100 * share:.0f}%"


# --------------------------------------------------------------------------- CLI


def _class_index(target: str | None, class_names: Sequence[str]) -> int | None:
    """``--target``: a class name or index; None: the prediction."""
    if target is None:
        return None
    if target in class_names:
        return list(class_names).index(target)
    try:
        index = int(target)
    except ValueError:
        raise ValueError(f"target {target!r} is neither a class ({', '.join(class_names)}) nor an index") from None
    if not 0 <= index < len(class_names):
        raise ValueError(f"target index {index} is out of range for {len(class_names)} classes")
    return index


def format_explanation(explanation: Explanation, case_id: str, label: str | None = None) -> str:
    """The decision, how far to trust it and each modality's share of it, as a few lines of text."""
    r = explanation.reliability
    target = explanation.class_names[explanation.target]
    lines = [
        f"case {case_id}" + (f" (label: {label})" if label is not None else ""),
        f"decision: {explanation.predicted_class} (p = {explanation.probabilities[explanation.prediction]:.3f})"
        + ("" if explanation.target == explanation.prediction else f"; explained class: {target}"),
    ]
    solve = (
        "feed-forward (no solve)" if r.status == "feed-forward"
        else f"{r.status} after {r.iterations} iterations, relative residual {r.final_relative_residual:.1e}"
    )  # fmt: skip
    ig = "n/a" if not math.isfinite(r.ig_relative_delta) else f"{100 * r.ig_relative_delta:.1f}%"
    lines.append(f"reliability: {'reliable' if r.reliable else 'NOT reliable'}; solve {solve}; "
                 f"integrated gradients off by {ig}")  # fmt: skip
    lines += [f"  warning: {w}" for w in r.warnings]
    if explanation.stability is not None:
        lines.append("equilibrium: " + "; ".join(line.removeprefix("warning: ") for line in explanation.stability.verdict()[1]))
    s = explanation.shapley
    width = max(len("modality"), *(len(n) for n in s.modality_names))
    lines += ["", f"{'modality':<{width}}  shapley (p({target}))"]
    lines += [f"{n:<{width}}  {v:+.4f}" for n, v in zip(s.modality_names, s.values.tolist())]
    lines.append(f"{'sum':<{width}}  {float(s.values.sum()):+.4f}  = p(all) {s.full_value:.4f} - p(none) {s.empty_value:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "deq-lens explain") -> int:
    """``deq-lens explain``: one case of a split explained, as a table or as ``Explanation.to_dict()`` JSON."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from deq_core.data import load_dataset
    from deq_core.engine.checkpoint import ModelLoadError
    from deq_core.lens import Lens

    parser = argparse.ArgumentParser(prog=prog, description="Explain one case: decision, reliability, modality Shapley values.")
    parser.add_argument("--model", required=True, type=Path, help="model folder")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--case", required=True, help="case id")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    parser.add_argument("--target", default=None, help="class name or index to explain (default: the prediction)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integrated Gradients steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print Explanation.to_dict() as one JSON object")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}")
        lens = Lens.open(args.model, device=args.device, trust_code=trust_for(args.trust_code, args.model))
        data = load_dataset(args.data or lens.config.dataset, args.split, modalities=lens.config.modalities)
        if args.case not in data.ids:
            raise ValueError(f"{data.name}/{args.split} has no case {args.case!r} (e.g. {data.ids[0]!r})")
        case = lens.case(args.case, data=data)
        label = case.label
        explanation = lens.explain(case, target=_class_index(args.target, lens.class_names), n_steps=args.steps)
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(explanation.to_dict()))
    else:
        print(format_explanation(explanation, args.case, data.class_names[label]))
    return 0
