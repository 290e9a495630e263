"""One flat record per case, computed for a whole chunk of cases at once.

The equilibrium solve, the Integrated Gradients path and the 2^M Shapley coalitions
of every case in a chunk run as single batched calls (``trace``,
``integrated_gradients``, ``modality_shapley`` all take a batch); the results are
assembled into the same ``Explanation`` that ``explain_case`` builds for one case,
so ``Lens.report(case, explanation=...)`` can issue a verifiable report from it
without recomputing. Stability (spectral radius, uniqueness) is per case, as
``Lens.stability`` computes it (its anchors are cached once per model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from deq_core.case import Case, Provenance

DEFAULT_STARTS = 8


@dataclass(frozen=True)
class RecordOptions:
    """What each case's record holds and how it is computed.

    Attributes:
        n_steps: Integrated Gradients steps (the reports' default).
        cross_check: Captum FeatureAblation beside the Shapley values (a reliability flag).
        ig: compute Integrated Gradients at all (off: decision + Shapley only).
        stability_starts: starts of the uniqueness check; 0: no stability columns.
        top_features: per-modality top-k IG features as a JSON column; 0: none.
        ig_rows: Captum's internal batch size for IG: a chunk of 32 cases at 128 steps is
            4,096 path rows, 4.7 GB at once; 256 rows keep a worker near 0.5 GB and run as
            fast (the attributions equal within the batch-invariance tolerance).
    """

    n_steps: int = 0  # 0: attribution.DEFAULT_STEPS
    cross_check: bool = True
    ig: bool = True
    stability_starts: int = DEFAULT_STARTS
    top_features: int = 0
    ig_rows: int = 256  # IG path rows per forward/backward pass (memory; the attributions do not depend on it)

    def resolved_steps(self) -> int:
        from deq_core.explain.attribution import DEFAULT_STEPS

        return self.n_steps or DEFAULT_STEPS


def explain_chunk(model, inputs: Sequence[torch.Tensor], texts: Sequence[Mapping[str, str]],
                  options: RecordOptions, share_features: bool = True) -> list:  # fmt: skip
    """``explain_case`` for each case of a chunk, with every solve batched across the chunk.

    Returns one ``Explanation`` per case (``attribution`` None when ``options.ig`` is off).
    ``share_features``: encode the cases once for the trace, the coalitions and the
    cross-check (False: each step encodes its own inputs, as ``explain_case`` does).
    """
    from deq_core.engine.model import EquilibriumModel, FusionModel
    from deq_core.engine.trajectory import trace
    from deq_core.explain.attribution import case_batch, evaluation_mode, integrated_gradients, summarise_solves
    from deq_core.explain.explanation import Explanation, assess
    from deq_core.explain.shapley import modality_shapley

    started = time.perf_counter()
    config = model.config
    with evaluation_mode(model):
        x = case_batch(model, [t.to(model.device) for t in inputs])
        b = x[0].shape[0]
        trajectories: list = [None] * b
        with torch.no_grad():
            # The cases are encoded once, and the trace, the 2^M coalitions and the cross-check reuse the
            # features (the encoders are most of a case's cost without IG). The project's own models only:
            # an adapter's encode is not promised to keep each modality's features to its own input.
            features = model.encode(x) if share_features and isinstance(model, FusionModel) else None
            if isinstance(model, EquilibriumModel):
                output, trajectories = trace(model, x, features=features)
            else:
                output = model.run(x, features=features)
        probabilities = torch.softmax(output.logits.double(), dim=-1).cpu()
        targets = probabilities.argmax(dim=1)
        attributions = (integrated_gradients(model, x, targets, None, n_steps=options.resolved_steps(),
                                             internal_batch_size=options.ig_rows)
                        if options.ig else [None] * b)  # fmt: skip
        shapleys = modality_shapley(model, x, targets, cross_check=options.cross_check, features=features)
    seconds = (time.perf_counter() - started) / b
    out = []
    for i in range(b):
        solve = summarise_solves([output.solve], [torch.tensor([i])]) if output.solve is not None else None
        trajectory = trajectories[i]
        attribution = attributions[i]
        out.append(Explanation(
            modality_names=config.modality_names, class_names=config.class_names,
            prediction=int(targets[i]), probabilities=tuple(probabilities[i].tolist()), target=int(targets[i]),
            texts=dict(texts[i]), trajectory=trajectory,
            gate_share=trajectory.gate_share() if trajectory is not None and trajectory.has_gates else None,
            lock_in_iteration=trajectory.lock_in_iteration if trajectory is not None else None,
            attribution=attribution, shapley=shapleys[i],
            reliability=assess(solve, attribution, shapleys[i], tolerance=config.solver.tol) if attribution is not None
            else _reliability_without_ig(solve, shapleys[i], config.solver.tol),
            seconds=seconds,
        ))  # fmt: skip
    return out


def _reliability_without_ig(solve, shapley, tolerance: float):
    """The reliability verdict when no IG was computed: the solve and Shapley checks alone."""
    from deq_core.explain.explanation import CROSS_CHECK_TOLERANCE, Reliability

    warnings = []
    if solve is not None and not solve.converged:
        warnings.append(f"The model's equilibrium for this case did not settle ({solve.status}, relative residual "
                        f"{solve.relative_residual:.1e} above the tolerance {tolerance:.0e}).")  # fmt: skip
    coalitions = shapley.coalition_solve
    if coalitions is not None and not coalitions.converged:
        warnings.append(f"{coalitions.unconverged} of the {coalitions.solves} solves with modalities left out did not "
                        "settle: the modality contributions are approximate.")  # fmt: skip
    if shapley.ablation_max_abs_diff is not None and shapley.ablation_max_abs_diff > CROSS_CHECK_TOLERANCE:
        warnings.append("Captum's modality ablation disagrees with the Shapley coalition values.")
    converged = solve is None or solve.converged
    return Reliability(converged=converged, status="feed-forward" if solve is None else solve.status,
                       iterations=0 if solve is None else solve.iterations,
                       final_relative_residual=None if solve is None else solve.relative_residual,
                       ig_delta=math.nan, ig_relative_delta=math.nan, ig_complete=False,
                       solves_converged=converged and (coalitions is None or coalitions.converged),
                       reliable=not warnings, warnings=tuple(warnings))  # fmt: skip


def chunk_cases(modalities, inputs: Sequence[torch.Tensor], ids: Sequence[str], labels: Sequence[int | None],
                texts: Sequence[Mapping[str, str]], dataset: str) -> list[Case]:  # fmt: skip
    """The chunk's rows as ``Case`` objects (for stability and reports)."""
    return [Case.from_inputs(modalities, [x[i : i + 1] for x in inputs], ids[i], label=labels[i], texts=texts[i],
                             provenance=Provenance("dataset", dataset=dataset, split="all", row=None))
            for i in range(len(ids))]  # fmt: skip


def _num(value) -> float | None:
    value = None if value is None else float(value)
    return value if value is None or math.isfinite(value) else None


def case_record(explanation, case_id: str, label: int | None, stability=None, top_features: int = 0) -> dict:
    """The flat record of one explained case: one Parquet row (plain scalars and strings).

    Columns: decision and probabilities; solve status, iterations and residual; Shapley
    value per modality for the decided class and each pairwise interaction; IG totals;
    reliability flags; spectral radius and uniqueness of the fixed point.
    """
    e, r, s = explanation, explanation.reliability, explanation.shapley
    classes, names = e.class_names, e.modality_names
    row: dict = {
        "case_id": case_id,
        "label": None if label is None else classes[int(label)],
        "decision": classes[e.prediction],
        "confidence": float(e.probabilities[e.prediction]),
        **{f"p_{c}": float(p) for c, p in zip(classes, e.probabilities)},
        "status": str(r.status),
        "converged": bool(r.converged),
        "iterations": int(r.iterations),
        "final_residual": _num(r.final_relative_residual),
        **{f"shapley_{n}": float(v) for n, v in zip(names, s.values.tolist())},
        "shapley_empty": float(s.empty_value),
    }
    inter = s.interactions
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            row[f"interaction_{names[i]}_{names[j]}"] = float(inter[i, j])
    row["max_abs_interaction"] = float(inter.abs().max()) if len(names) > 1 else 0.0
    a = e.attribution
    for k, n in enumerate(names):
        row[f"ig_{n}"] = None if a is None else float(a.totals[k])
    row["ig_relative_delta"] = None if a is None else _num(r.ig_relative_delta)
    row["ig_complete"] = None if a is None else bool(r.ig_complete)
    row["solves_converged"] = bool(r.solves_converged)
    row["reliable"] = bool(r.reliable)
    row["warnings"] = " | ".join(r.warnings)
    row["spectral_radius"] = None if stability is None else _num(stability.local.spectral_radius)
    row["unique"] = None if stability is None else bool(stability.uniqueness.unique and stability.uniqueness.decision_unique)
    row["n_equilibria"] = None if stability is None else int(stability.uniqueness.n_equilibria)
    if top_features and a is not None:
        from deq_core.explain.attribution import top_features as top

        row["top_features"] = json.dumps({n: [[f.name, float(f.score)] for f in top(a, n, top_features)] for n in names})
    row["record_sha256"] = record_sha256(row)
    return row


def record_sha256(row: Mapping) -> str:
    """A case record's identity in the audit log (canonical JSON of its fields, sha256 excluded)."""
    fields = {k: v for k, v in row.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def chunk_records(lens, inputs: Sequence[torch.Tensor], ids: Sequence[str], labels: Sequence[int | None],
                  texts: Sequence[Mapping[str, str]], options: RecordOptions, dataset: str = "folder",
                  keep_explanations: bool = False):  # fmt: skip
    """Records of one chunk (and, with ``keep_explanations``, the cases and explanations, for reports)."""
    with lens.lock:
        explanations = explain_chunk(lens.model, inputs, texts, options)
    cases = chunk_cases(lens.modalities, inputs, ids, labels, texts, dataset)
    stable = options.stability_starts > 0 and lens.equilibrium and lens.config.architecture == "deq"
    rows, kept = [], []
    for case, explanation, label in zip(cases, explanations, labels):
        stability = lens.stability(case, starts=options.stability_starts) if stable else None
        explanation = with_stability(explanation, stability)
        rows.append(case_record(explanation, case.key, label, stability, options.top_features))
        kept.append(explanation)
    return (rows, cases, kept) if keep_explanations else rows


def with_stability(explanation, stability):
    """``explanation`` with its fixed point's stability attached and its warnings in the reliability verdict,
    as ``explain_case`` assesses them (last, after the solve and attribution warnings)."""
    if stability is None:
        return explanation
    extra = tuple(stability.warnings())
    reliability = dataclasses.replace(explanation.reliability, warnings=explanation.reliability.warnings + extra,
                                      reliable=explanation.reliability.reliable and not extra)  # fmt: skip
    return dataclasses.replace(explanation, stability=stability, reliability=reliability)


def reports_reuse_records(options: RecordOptions) -> bool:
    """Whether a chunk's explanations are those a default decision report records (``ReportSettings()``,
    ``STABILITY_STARTS`` starts), so ``--reports`` can issue them instead of explaining every case again."""
    from deq_core.audit.report import ReportSettings
    from deq_core.explain.explanation import STABILITY_STARTS

    settings = ReportSettings()
    return (options.ig and options.cross_check == settings.cross_check and options.resolved_steps() == settings.n_steps
            and options.stability_starts == STABILITY_STARTS)  # fmt: skip


def chunk_reports(lens, cases: Sequence[Case], explanations: Sequence, source: Mapping) -> list:
    """The chunk's decision reports built from its explanations (``Lens.report(explanation=...)``: nothing is
    recomputed); the driver signs, logs and writes them. ``verify`` re-runs each case alone: the batched
    numbers equal one-at-a-time ones within the batch-invariance tolerance, well inside its own."""
    return [lens.report(case, explanation=e, source=dict(source)) for case, e in zip(cases, explanations)]


def one_at_a_time_records(lens, cases: Sequence[Case], options: RecordOptions) -> list[dict]:
    """Today's path, case by case: ``Lens.explain`` (with IG), or the same solves and coalitions for a batch of
    one (without IG); the reference of the batch-invariance test and of the benchmark."""
    stable = options.stability_starts > 0 and lens.equilibrium and lens.config.architecture == "deq"
    rows = []
    for case in cases:
        if options.ig:
            explanation = lens.explain(case, n_steps=options.resolved_steps(), cross_check=options.cross_check)
        else:  # explain_case's steps without IG: each encodes its own inputs
            with lens.lock:
                (explanation,) = explain_chunk(lens.model, case.inputs, [case.texts], options, share_features=False)
        stability = lens.stability(case, starts=options.stability_starts) if stable else None
        if not options.ig:  # Lens.explain has assessed its own stability already
            explanation = with_stability(explanation, stability)
        rows.append(case_record(explanation, case.key, case.label, stability, options.top_features))
    return rows
