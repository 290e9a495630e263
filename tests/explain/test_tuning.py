"""Convergence tuning: flip counting, the tolerance sweep, its recommendation, equal compute."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deq_core import SolverSettings
from deq_core.data.base import MultimodalDataset
from deq_core.explain.tuning import (
    SettingsReport,
    assess_settings,
    count_flips,
    equal_compute,
    recommend_tolerance,
    reference_decisions,
    reference_settings,
    tolerance_sweep,
    tune_case,
)
from conftest import make_contractive, tiny_inputs, tiny_modalities, tiny_model


def tiny_dataset(n: int = 24, seed: int = 3) -> MultimodalDataset:
    inputs = tiny_inputs(n, seed=seed)
    labels = torch.arange(n) % 3
    return MultimodalDataset(
        name="tiny",
        split="test",
        modalities=tiny_modalities(),
        class_names=("a", "b", "c"),
        inputs=inputs,
        labels=labels,
        ids=tuple(f"case-{i}" for i in range(n)),
    )


def fake_report(tol: float, flips: int) -> SettingsReport:
    return SettingsReport(
        settings=SolverSettings(tol=tol),
        n=10,
        accuracy=0.5,
        flips=flips,
        iterations_mean=1.0,
        iterations_p95=1.0,
        converged_fraction=1.0,
        latency_ms=1.0,
        seconds=0.1,
        predicted=np.zeros(10, dtype=int),
        iterations=np.ones(10, dtype=int),
    )


@pytest.fixture
def deq():
    model = tiny_model("deq")
    make_contractive(model)
    return model.eval()


def test_count_flips_counts_disagreements_and_rejects_mismatched_shapes():
    assert count_flips(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])) == 2
    assert count_flips(np.array([1, 1]), np.array([1, 1])) == 0
    with pytest.raises(ValueError):
        count_flips(np.array([1, 2]), np.array([1]))


def test_recommendation_is_the_loosest_tolerance_before_the_first_flip():
    reports = [fake_report(1e-1, 0), fake_report(1e-2, 2), fake_report(1e-3, 0), fake_report(1e-4, 0)]
    # 1e-1 flips nothing, but 1e-2 does: 1e-1's luck is no margin.
    assert recommend_tolerance(reports) == 1e-3
    assert recommend_tolerance([fake_report(1e-2, 0), fake_report(1e-3, 0)]) == 1e-2
    assert recommend_tolerance([fake_report(1e-4, 1), fake_report(1e-2, 0)]) is None


def test_reference_settings_are_never_looser_than_the_settings():
    loose = SolverSettings(tol=1e-2, max_iter=30)
    reference = reference_settings(loose)
    assert reference.tol <= 1e-6 and reference.max_iter >= 30 and reference.method == loose.method
    very_tight = SolverSettings(tol=1e-8, max_iter=500)
    assert reference_settings(very_tight).tol == 1e-8 and reference_settings(very_tight).max_iter == 500


def test_flips_are_counted_against_the_reference_decisions(deq):
    data = tiny_dataset()
    reference = reference_settings(deq.config.solver)
    reference_predicted = reference_decisions(deq, data, reference)
    # Pretend the reference said something else for three cases: exactly those flip.
    altered = reference_predicted.copy()
    altered[:3] = (altered[:3] + 1) % 3
    report = assess_settings(deq, data, reference, altered, latency_cases=2)
    assert report.flips == 3
    assert report.accuracy == pytest.approx(float((report.predicted == data.labels.numpy()).mean()))
    assert report.converged_fraction == 1.0 and report.latency_ms > 0


def test_sweep_on_a_contraction_is_flip_free_when_tight_and_cheaper_when_loose(deq):
    data = tiny_dataset()
    tolerances = (1e-1, 1e-2, 1e-3, 1e-5)
    seen = []
    sweep = tolerance_sweep(deq, data, deq.config.solver, tolerances, latency_cases=2, progress=lambda f, m: seen.append(f))
    assert [r.settings.tol for r in sweep.reports] == sorted(tolerances, reverse=True)
    tightest = sweep.reports[-1]
    assert tightest.flips == 0  # a contraction solved to 1e-5 decides as the 1e-6 reference does
    iterations = [r.iterations_mean for r in sweep.reports]
    assert iterations == sorted(iterations)  # loosest first, so never more iterations
    assert iterations[0] < iterations[-1]
    assert sweep.recommended_tol in tolerances
    assert seen[0] == 0.0 and seen[-1] == 1.0


def test_tune_case_compares_with_a_longer_tighter_solve(deq):
    inputs = [x[:1] for x in tiny_inputs(4, seed=5)]
    loose = dataclasses.replace(deq.config.solver, tol=1e-1)
    result = tune_case(deq, inputs, loose)
    assert result.reference_trajectory.iterations > result.iterations
    assert result.final_relative_residual <= 1e-1
    assert result.flipped == (result.predicted != result.reference_predicted)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_equal_compute_with_shared_weights_matches_the_unroll_exactly(deq):
    # Plain fixed-point iteration from zero with b-1 steps, then one read-out, IS the
    # weight-tied unroll of b steps: with the same weights the accuracies must agree.
    tied = tiny_model("weight_tied")
    tied.load_state_dict(deq.state_dict())
    tied.eval()
    data = tiny_dataset()
    plain = SolverSettings(method="fixed_point", tol=1e-12, max_iter=10)
    comparison = equal_compute(deq, tied, data, budgets=[2, 3, 5, 8], base=plain)
    np.testing.assert_allclose(comparison.deq_accuracy, comparison.weight_tied_accuracy)
    np.testing.assert_allclose(comparison.deq_evaluations_mean, comparison.budgets)
    # A contraction settles: the residual shrinks with the budget for both.
    assert comparison.weight_tied_relative_residual[-1] < comparison.weight_tied_relative_residual[0]
    assert comparison.deq_relative_residual[-1] < comparison.deq_relative_residual[0]
    assert len(comparison.rows()) == 4


def test_tuning_refuses_feed_forward_models():
    with pytest.raises(TypeError):
        tune_case(tiny_model("early"), [x[:1] for x in tiny_inputs(2)], SolverSettings())
