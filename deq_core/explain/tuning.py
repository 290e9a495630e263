"""Convergence tuning: how loose can the solver be before decisions change?

A looser tolerance or a smaller iteration budget makes the DEQ cheaper; it is only
safe while the decisions stay those of a tightly solved reference. This module
measures that trade-off on one case, on a whole split, over a tolerance sweep, and
against the weight-tied ablation at equal compute (the same number of f
evaluations). Pure torch and numpy; the app and the tests call it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deq_core.engine.adapter import trust_for
from deq_core.engine.protocol import is_equilibrium
from deq_core.engine.config import SolverSettings
from deq_core.data import MultimodalDataset
from deq_core.evaluate import predict
from deq_core.engine.model import EquilibriumModel, FusionModel
from deq_core.engine.trajectory import Trajectory, trace

# The reference the decisions are compared with: two orders of magnitude below the
# default tolerance, with room to get there (docs/model.md's reference traces pass 1e-4 after ~50 steps).
REFERENCE_TOL = 1e-6
REFERENCE_MAX_ITER = 200
DEFAULT_TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
LATENCY_CASES = 20

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


def reference_settings(settings: SolverSettings, tol: float = REFERENCE_TOL, max_iter: int = REFERENCE_MAX_ITER) -> SolverSettings:
    """The tight-tolerance version of ``settings`` (same solver), never looser than ``settings`` itself."""
    return dataclasses.replace(settings, tol=min(tol, settings.tol), max_iter=max(max_iter, settings.max_iter))


def reference_for(settings: SolverSettings, tolerances: Sequence[float] = DEFAULT_TOLERANCES) -> SolverSettings:
    """The one tight reference of ``settings``: what both the assessment and the sweep compare with.

    Tighter than every tolerance the sweep tries and than ``settings`` itself, with the
    same solver; so a split's reference decisions are computed once per model and solver.
    """
    return reference_settings(settings, tol=min(REFERENCE_TOL, *tolerances))


def count_flips(reference: np.ndarray, predicted: np.ndarray) -> int:
    """Number of decisions that differ from the reference's. Both ``(n,)`` class indices."""
    reference, predicted = np.asarray(reference), np.asarray(predicted)
    if reference.shape != predicted.shape:
        raise ValueError(f"reference {reference.shape} and predicted {predicted.shape} differ in shape")
    return int((reference != predicted).sum())


def _require_equilibrium(model: FusionModel) -> None:
    if not is_equilibrium(model):
        raise TypeError(f"a {model.config.architecture!r} model has no solver to tune")


def _synchronise(model: FusionModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


@torch.no_grad()
def case_latency_ms(model: FusionModel, inputs: Sequence[torch.Tensor], settings: SolverSettings | None = None, repeats: int = 3) -> float:
    """Median wall time in ms of one case's prediction (batch of one), after one warm-up call."""
    inputs = [x.to(model.device) for x in inputs]
    model.run(inputs, solver=settings)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(inputs, solver=settings)
        _synchronise(model)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


@torch.no_grad()
def split_latency_ms(model: FusionModel, data: MultimodalDataset, settings: SolverSettings | None = None, cases: int = LATENCY_CASES) -> float:
    """Median single-case latency in ms over ``cases`` evenly spaced cases of ``data``."""
    rows = np.unique(np.linspace(0, len(data) - 1, min(cases, len(data))).astype(int))
    model.run([x[:1].to(model.device) for x in data.inputs], solver=settings)  # warm-up
    times = []
    for row in rows:
        inputs = [x[row : row + 1].to(model.device) for x in data.inputs]
        start = time.perf_counter()
        model.run(inputs, solver=settings)
        _synchronise(model)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


@dataclass(frozen=True)
class CaseTuning:
    """One case solved with the chosen settings and with the tight reference.

    Attributes:
        settings: the settings under test.
        reference: the tight-tolerance settings compared against.
        trajectory: the solve under ``settings``.
        reference_trajectory: the solve under ``reference``.
        predicted: class index decided under ``settings`` (from the returned iterate).
        reference_predicted: class index decided under ``reference``.
        probabilities: ``(C,)`` class probabilities under ``settings``.
        latency_ms: median wall time of the case under ``settings``.
    """

    settings: SolverSettings
    reference: SolverSettings
    trajectory: Trajectory
    reference_trajectory: Trajectory
    predicted: int
    reference_predicted: int
    probabilities: np.ndarray
    latency_ms: float

    @property
    def flipped(self) -> bool:
        return self.predicted != self.reference_predicted

    @property
    def iterations(self) -> int:
        return self.trajectory.iterations

    @property
    def final_relative_residual(self) -> float:
        return float(self.trajectory.relative_residuals[self.trajectory.best_iteration])


def tune_case(model: FusionModel, inputs: Sequence[torch.Tensor], settings: SolverSettings, reference: SolverSettings | None = None) -> CaseTuning:
    """Solve one case (``inputs``: one tensor per modality, batch 1) under ``settings`` and the reference."""
    _require_equilibrium(model)
    reference = reference or reference_settings(settings)
    inputs = [x.to(model.device) for x in inputs]
    output, (trajectory,) = trace(model, inputs, settings)
    reference_output, (reference_trajectory,) = trace(model, inputs, reference)
    probabilities = torch.softmax(output.logits, dim=1)[0].cpu().numpy()
    return CaseTuning(
        settings=settings,
        reference=reference,
        trajectory=trajectory,
        reference_trajectory=reference_trajectory,
        predicted=int(probabilities.argmax()),
        reference_predicted=int(reference_output.logits.argmax(dim=1)[0]),
        probabilities=probabilities,
        latency_ms=case_latency_ms(model, inputs, settings),
    )


@dataclass(frozen=True)
class SettingsReport:
    """A whole split solved with one set of solver settings, judged against the reference decisions.

    Attributes:
        settings: the solver settings used.
        n: cases.
        accuracy: share of cases decided correctly.
        flips: decisions that differ from the tight-tolerance reference.
        iterations_mean, iterations_p95: f evaluations per case the solver used.
        converged_fraction: share of cases whose solve met the tolerance.
        latency_ms: median single-case wall time (batch of one).
        seconds: wall time of the whole split, batched.
        predicted: ``(n,)`` decided class indices.
        iterations: ``(n,)`` solver iterations per case.
    """

    settings: SolverSettings
    n: int
    accuracy: float
    flips: int
    iterations_mean: float
    iterations_p95: float
    converged_fraction: float
    latency_ms: float
    seconds: float
    predicted: np.ndarray
    iterations: np.ndarray

    @property
    def flip_rate(self) -> float:
        return self.flips / self.n if self.n else 0.0

    def row(self) -> dict:
        """A flat record for a table."""
        return {
            "method": self.settings.method,
            "tolerance": self.settings.tol,
            "stop_mode": self.settings.stop_mode,
            "max_iter": self.settings.max_iter,
            "accuracy": self.accuracy,
            "flips": self.flips,
            "flip_rate": self.flip_rate,
            "iterations_mean": self.iterations_mean,
            "iterations_p95": self.iterations_p95,
            "converged_fraction": self.converged_fraction,
            "latency_ms": self.latency_ms,
            "seconds": self.seconds,
        }


def reference_decisions(model: FusionModel, data: MultimodalDataset, reference: SolverSettings) -> np.ndarray:
    """``(n,)`` class indices decided under the tight reference settings."""
    _require_equilibrium(model)
    return predict(model, data, reference).predicted


def assess_settings(
    model: FusionModel,
    data: MultimodalDataset,
    settings: SolverSettings,
    reference_predicted: np.ndarray,
    latency_cases: int = LATENCY_CASES,
) -> SettingsReport:
    """Solve the whole split with ``settings``; count flips against ``reference_predicted``."""
    _require_equilibrium(model)
    start = time.perf_counter()
    p = predict(model, data, settings)
    _synchronise(model)
    seconds = time.perf_counter() - start
    iterations = p.iterations.astype(float)
    return SettingsReport(
        settings=settings,
        n=len(data),
        accuracy=float(p.correct.mean()),
        flips=count_flips(reference_predicted, p.predicted),
        iterations_mean=float(iterations.mean()),
        iterations_p95=float(np.percentile(iterations, 95)),
        converged_fraction=float(np.mean([s == "converged" for s in p.status])),
        latency_ms=split_latency_ms(model, data, settings, latency_cases) if latency_cases else float("nan"),
        seconds=seconds,
        predicted=p.predicted,
        iterations=p.iterations,
    )


def recommend_tolerance(reports: Sequence[SettingsReport]) -> float | None:
    """The loosest tolerance with no flips, walking out from the tightest.

    A loose tolerance that happens to flip nothing, beyond one that flips some, is
    luck rather than a margin, so the walk stops at the first tolerance with flips.
    None when even the tightest tolerance tried flips a decision.
    """
    recommended = None
    for report in sorted(reports, key=lambda r: r.settings.tol):
        if report.flips:
            break
        recommended = report.settings.tol
    return recommended


@dataclass(frozen=True)
class ToleranceSweep:
    """The same split solved at several tolerances (all else as in ``base``).

    Attributes:
        base: the settings every point shares except ``tol``.
        reference: the tight settings whose decisions count as right.
        reports: one ``SettingsReport`` per tolerance, loosest first.
        recommended_tol: ``recommend_tolerance(reports)``.
    """

    base: SolverSettings
    reference: SolverSettings
    reports: tuple[SettingsReport, ...]
    recommended_tol: float | None

    def rows(self) -> list[dict]:
        return [r.row() for r in self.reports]


def tolerance_sweep(
    model: FusionModel,
    data: MultimodalDataset,
    base: SolverSettings,
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
    reference: SolverSettings | None = None,
    latency_cases: int = 10,
    progress: Progress | None = None,
    reference_predicted: np.ndarray | None = None,
) -> ToleranceSweep:
    """Solve ``data`` at each tolerance and count decisions that flip against the reference.

    ``progress(fraction, message)`` is called before each step. ``reference_predicted``:
    the decisions under ``reference`` when already known (the Lens computes them once).
    """
    _require_equilibrium(model)
    progress = progress or _no_progress
    reference = reference or reference_for(base, tolerances)
    tolerances = sorted(set(float(t) for t in tolerances), reverse=True)
    steps = len(tolerances) + 1
    if reference_predicted is None:
        progress(0.0, "solving every case tightly for the reference decisions")
        reference_predicted = reference_decisions(model, data, reference)
    reports = []
    for i, tol in enumerate(tolerances, start=1):
        progress(i / steps, f"solving every case at tolerance {tol:g}")
        settings = dataclasses.replace(base, tol=tol)
        reports.append(assess_settings(model, data, settings, reference_predicted, latency_cases))
    progress(1.0, "done")
    return ToleranceSweep(base=base, reference=reference, reports=tuple(reports), recommended_tol=recommend_tolerance(reports))


@dataclass(frozen=True)
class ComputeComparison:
    """DEQ against the weight-tied ablation when both get the same number of f evaluations.

    For a budget of b evaluations the weight-tied model applies f b times from zero;
    the DEQ solver may use up to b - 1 iterations and then reads f once more at its
    answer (as every DEQ prediction does), so b >= 2. The DEQ may stop earlier when
    it has converged: ``deq_evaluations_mean`` says how much it used.

    Attributes:
        budgets: ``(k,)`` f-evaluation budgets.
        deq_accuracy, weight_tied_accuracy: ``(k,)`` accuracy at each budget.
        deq_evaluations_mean: ``(k,)`` mean f evaluations the DEQ used per case.
        deq_relative_residual, weight_tied_relative_residual: ``(k,)`` median relative
            residual of the state each model decided from: does it settle?
        weight_tied_trained_steps: the unroll length the weight-tied model was trained with.
    """

    budgets: np.ndarray
    deq_accuracy: np.ndarray
    weight_tied_accuracy: np.ndarray
    deq_evaluations_mean: np.ndarray
    deq_relative_residual: np.ndarray
    weight_tied_relative_residual: np.ndarray
    weight_tied_trained_steps: int

    def rows(self) -> list[dict]:
        return [
            {
                "f_evaluations": int(b),
                "deq_accuracy": float(a),
                "weight_tied_accuracy": float(w),
                "deq_evaluations_used": float(e),
                "deq_relative_residual": float(r),
                "weight_tied_relative_residual": float(s),
            }
            for b, a, w, e, r, s in zip(
                self.budgets,
                self.deq_accuracy,
                self.weight_tied_accuracy,
                self.deq_evaluations_mean,
                self.deq_relative_residual,
                self.weight_tied_relative_residual,
            )
        ]


@torch.no_grad()
def _weight_tied_by_budget(model: EquilibriumModel, data: MultimodalDataset, budgets: Sequence[int], batch_size: int = 256):
    """Accuracy and median relative residual of z_b = f^b(0) for each budget b, in one unroll."""
    most = max(budgets)
    correct = np.zeros(len(budgets))
    residuals: list[list[torch.Tensor]] = [[] for _ in budgets]
    n = model.n_modalities
    for start in range(0, len(data), batch_size):
        inputs = [x[start : start + batch_size].to(model.device) for x in data.inputs]
        labels = data.labels[start : start + batch_size].to(model.device)
        f, z = model.bind(inputs)
        for step in range(1, most + 1):
            previous, z = z, f(z)
            if step in budgets:
                i = budgets.index(step)
                correct[i] += float((model.head(z[:, n]).argmax(dim=1) == labels).sum())
                change = (z - previous).flatten(1).norm(dim=1) / (z.flatten(1).norm(dim=1) + 1e-30)
                residuals[i].append(change.cpu())
    return correct / len(data), np.array([float(torch.cat(r).median()) for r in residuals])


def equal_compute(
    deq: FusionModel,
    weight_tied: FusionModel,
    data: MultimodalDataset,
    budgets: Sequence[int] | None = None,
    base: SolverSettings | None = None,
    progress: Progress | None = None,
) -> ComputeComparison:
    """Accuracy of the DEQ and the weight-tied model at equal numbers of f evaluations.

    ``budgets`` default to 2 .. 2 x the weight-tied model's trained unroll length.
    ``base`` are the DEQ's solver settings (its own by default); only ``max_iter`` changes.
    """
    _require_equilibrium(deq)
    _require_equilibrium(weight_tied)
    if deq.config.architecture != "deq":
        raise TypeError(f"the first model must be a DEQ, got {deq.config.architecture!r}")
    progress = progress or _no_progress
    trained_steps = weight_tied.config.unroll_steps
    budgets = sorted(set(int(b) for b in (budgets or range(2, 2 * trained_steps + 1))))
    if budgets[0] < 2:
        raise ValueError("a DEQ prediction takes at least 2 f evaluations (one solver step and the read-out)")
    base = base or deq.config.solver
    progress(0.0, "unrolling the weight-tied model")
    tied_accuracy, tied_residual = _weight_tied_by_budget(weight_tied, data, budgets)
    deq_accuracy, used, deq_residual = [], [], []
    for i, budget in enumerate(budgets):
        progress((i + 1) / (len(budgets) + 1), f"solving the DEQ with {budget} f evaluations")
        p = predict(deq, data, dataclasses.replace(base, max_iter=budget - 1))
        deq_accuracy.append(float(p.correct.mean()))
        used.append(float(p.iterations.mean()) + 1)
        deq_residual.append(float(np.median(p.relative_residual)))
    progress(1.0, "done")
    return ComputeComparison(
        budgets=np.array(budgets),
        deq_accuracy=np.array(deq_accuracy),
        weight_tied_accuracy=tied_accuracy,
        deq_evaluations_mean=np.array(used),
        deq_relative_residual=np.array(deq_residual),
        weight_tied_relative_residual=tied_residual,
        weight_tied_trained_steps=trained_steps,
    )


# --------------------------------------------------------------------------- CLI


def format_sweep(sweep: ToleranceSweep, title: str) -> str:
    """The sweep as a table: tolerance, accuracy, flips against the reference, iterations, latency."""
    header = ("tolerance", "accuracy", "flips", "iterations", "p95", "converged", "latency ms")
    table = [header]
    for r in sweep.reports:
        latency = "n/a" if np.isnan(r.latency_ms) else f"{r.latency_ms:.1f}"
        table.append((f"{r.settings.tol:g}", f"{100 * r.accuracy:.2f}%", f"{r.flips}/{r.n}", f"{r.iterations_mean:.1f}",
                      f"{r.iterations_p95:.0f}", f"{100 * r.converged_fraction:.0f}%", latency))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        title,
        f"solver {sweep.base.method}, max_iter {sweep.base.max_iter}; flips against tol {sweep.reference.tol:g} "
        f"with max_iter {sweep.reference.max_iter}",
        "",
        *("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table),
        "",
        "recommended tolerance (loosest with no flips): "
        + ("none: even the tightest tried flips a decision" if sweep.recommended_tol is None else f"{sweep.recommended_tol:g}"),
    ]
    return "\n".join(lines)


def _finite(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


def main(argv: list[str] | None = None, prog: str = "deq-lens tune") -> int:
    """``deq-lens tune``: ``tolerance_sweep`` of a model folder on a split, as a table or JSON."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from deq_core.data import load_dataset
    from deq_core.engine.checkpoint import ModelLoadError
    from deq_core.lens import Lens

    parser = argparse.ArgumentParser(prog=prog, description="How loose can the solver be before decisions change?")
    parser.add_argument("--model", required=True, type=Path, help="model folder (a DEQ or weight-tied model)")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    parser.add_argument("--cases", type=int, default=None, help="cases, spread evenly over the split (default: all)")
    parser.add_argument("--tolerances", type=float, nargs="+", default=list(DEFAULT_TOLERANCES))
    parser.add_argument("--latency-cases", type=int, default=10, help="cases timed one at a time per tolerance (0: none)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        if args.cases is not None and args.cases < 1:
            raise ValueError(f"--cases must be at least 1, got {args.cases}")
        if not all(t > 0 for t in args.tolerances):
            raise ValueError("tolerances must be positive")
        lens = Lens.open(args.model, device=args.device, trust_code=trust_for(args.trust_code, args.model))
        model = lens.model
        if not is_equilibrium(model):
            raise ValueError(f"{args.model} is a {model.config.architecture!r} model: it has no solver to tune")
        data = load_dataset(args.data or model.config.dataset, args.split, modalities=model.config.modalities)
        if args.cases is not None and args.cases < len(data):
            data = data.subset(np.unique(np.linspace(0, len(data) - 1, args.cases).astype(int)).tolist())
        sweep = lens.sweep(model.config.solver, data, latency_cases=args.latency_cases, tolerances=args.tolerances)
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({
            "model": args.model.name,
            "dataset": data.name,
            "split": data.split,
            "n": len(data),
            "base": dataclasses.asdict(sweep.base),
            "reference": dataclasses.asdict(sweep.reference),
            "recommended_tol": sweep.recommended_tol,
            "rows": [{k: _finite(v) for k, v in row.items()} for row in sweep.rows()],
        }))  # fmt: skip
    else:
        print(format_sweep(sweep, f"{args.model.name} on {data.name}/{data.split}, {len(data)} cases"))
    return 0
