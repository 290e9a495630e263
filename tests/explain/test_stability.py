"""Stability and uniqueness of fixed points: known radii, two fixed points, the Lens cache and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deq_core import Case, Lens, SolverSettings, exact_jacobian, solve, spectral_radius
from deq_core.data.base import MultimodalDataset
from deq_core.explain import stability as st
from conftest import tiny_inputs, tiny_model, tiny_modalities


def _linear(A: torch.Tensor, b: torch.Tensor):
    return lambda z: z @ A.T + b


def _with_eigenvalues(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A non-normal real matrix S D S^-1; ``eigenvalues`` real, or (re, im) pairs as 2x2 rotation blocks."""
    g = torch.Generator().manual_seed(seed)
    n = eigenvalues.shape[0] if eigenvalues.dim() == 1 else 2 * eigenvalues.shape[0]
    D = torch.zeros(n, n, dtype=torch.float64)
    if eigenvalues.dim() == 1:
        D = torch.diag(eigenvalues.double())
    else:
        for i, (re, im) in enumerate(eigenvalues.double()):
            D[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[re, -im], [im, re]])
    S = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    return S @ D @ torch.linalg.inv(S)


@pytest.mark.parametrize("kind", ["real", "complex pair"])
def test_the_radius_of_a_linear_map_is_found_within_1e_3(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "real":
        eigenvalues = torch.cat([torch.tensor([0.7]), torch.empty(79).uniform_(-0.45, 0.45, generator=g)])
    else:  # dominant modulus 0.7 on a complex pair: plain power iteration's ratio would oscillate
        rest = torch.empty(39, 2).uniform_(-0.3, 0.3, generator=g)
        eigenvalues = torch.cat([torch.tensor([[0.7 * math.cos(1.0), 0.7 * math.sin(1.0)]]), rest])
    A = _with_eigenvalues(eigenvalues)
    truth = spectral_radius(A)
    b = torch.randn(1, A.shape[0], generator=g, dtype=torch.float64)
    f = _linear(A, b)
    z_star = torch.linalg.solve(torch.eye(A.shape[0], dtype=torch.float64) - A, b[0])[None]
    local = st.local_stability(f, z_star, torch.tensor([1.0, 0.1, 0.01]), 2, 3, True, 1e-4)
    assert abs(truth - 0.7) < 1e-6
    assert abs(local.spectral_radius - truth) < 1e-3
    assert local.products <= st.KRYLOV_STEPS
    assert local.stable and local.amplification_bound == pytest.approx(1 / (1 - local.spectral_radius))
    assert local.iterations_to_tol == pytest.approx(math.log(1e-4) / math.log(local.spectral_radius))


def test_an_expansive_map_is_not_stable():
    A = _with_eigenvalues(torch.tensor([1.5, 0.2, -0.1, 0.3]))
    local = st.local_stability(_linear(A, torch.zeros(1, 4, dtype=torch.float64)), torch.zeros(1, 4, dtype=torch.float64),
                               torch.tensor([1.0]), 0, 1, False, 1e-4)  # fmt: skip
    assert local.spectral_radius == pytest.approx(1.5, abs=1e-6)
    assert not local.stable and local.iterations_to_tol is None and local.amplification_bound is None


def test_the_estimate_matches_the_exact_jacobian_of_a_tiny_deq():
    model = tiny_model().eval()
    inputs = [x[:1] for x in tiny_inputs(1, seed=5)]
    found = st.case_stability(model, inputs, starts=4)
    f, z0 = model.bind(inputs)
    with torch.no_grad():
        z = solve(f, z0, **model.config.solver.options()).z
    assert found.local.spectral_radius == pytest.approx(spectral_radius(exact_jacobian(f, z)), abs=1e-3)
    assert found.local.gradient_amplification is not None and found.local.gradient_amplification > 0
    assert found.uniqueness.n_starts == 4 and found.uniqueness.starts[0] == "zero"


def test_the_solver_rate_is_the_residual_factor_per_step():
    trace = torch.tensor([1.0] + [0.5 * 0.3**k for k in range(8)])
    assert st.solver_rate(trace, len(trace) - 1) == pytest.approx(0.3)
    assert st.solver_rate(torch.tensor([1.0, 0.2])) is None


def test_two_fixed_points_are_both_found_and_the_case_flagged():
    # z = tanh(3 z + 0.5) elementwise, one entry: stable fixed points near +0.99 and -0.97
    # (and an unstable one between); the zero start goes to the positive one.
    f = lambda z: torch.tanh(3 * z + 0.5)  # noqa: E731
    settings = SolverSettings(tol=1e-6, max_iter=100)
    with torch.no_grad():
        z_star = solve(f, torch.zeros(1, 1, 1), **settings.options()).z
    assert float(z_star) > 0.9
    names, z0s = st.start_states(z_star, [("equilibrium of b", torch.full((1, 1), -1.0))], 6)
    assert names[:2] == ["zero", "equilibrium of b"] and z0s.shape == (6, 1, 1)
    decide = lambda z: (z.reshape(len(z), -1)[:, 0] < 0).long()  # noqa: E731
    found = st.uniqueness(f, z_star, z0s, names, settings, decide, radius=0.1)
    assert found.n_equilibria == 2
    assert not found.unique and not found.decision_unique
    assert found.clusters[0] == 0 and found.clusters[1] == 1 and 1 in found.others()
    assert found.distances[1] > 1.5
    local = st.local_stability(f, z_star, torch.tensor([1.0, 0.1]), 1, 2, True, 1e-6)
    verdict_ok, lines = st.Stability(local, found, 0, ("a", "b"), 0.0, 0.0).verdict()
    assert not verdict_ok
    assert lines[0].startswith("stable (contracts by")
    assert lines[1].startswith("warning: 2 distinct equilibria found from 6 starts") and "decide b" in lines[1]


def test_one_fixed_point_from_every_start_is_unique():
    A = 0.5 * torch.eye(3)
    f = _linear(A, torch.ones(1, 3))
    z_star = torch.full((1, 3), 2.0)
    names, z0s = st.start_states(z_star, [], 5)
    found = st.uniqueness(f, z_star, z0s, names, SolverSettings(), lambda z: torch.zeros(len(z), dtype=torch.long), 0.5)
    assert found.unique and found.decision_unique and found.n_equilibria == 1
    assert max(found.distances) < found.same_distance


def _tiny_data(n: int = 12) -> MultimodalDataset:
    return MultimodalDataset(name="tiny", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"),
                             inputs=tiny_inputs(n, seed=3), labels=torch.arange(n) % 3,
                             ids=tuple(f"case-{i}" for i in range(n)))  # fmt: skip


def test_class_anchors_and_the_survey_summary():
    model = tiny_model().eval()
    data = _tiny_data()
    anchors = st.class_anchors(model, data)
    assert [a.class_index for a in anchors] == [0, 1, 2]
    assert all(a.case_id in data.ids and a.z.shape == (5, 32) for a in anchors)
    found = st.survey(model, data, starts=5)
    summary = found.summary()
    assert summary["n"] == 12 and summary["starts"] == 5
    radii = found.radii
    assert summary["spectral_radius"]["max"] == pytest.approx(radii.max())
    assert summary["spectral_radius"]["median"] <= summary["spectral_radius"]["p95"] <= summary["spectral_radius"]["max"]
    assert 0 <= summary["unique_fraction"] <= 1 and 0 <= summary["decision_unique_fraction"] <= 1
    assert set(summary["multiple_equilibria"]) <= set(summary["not_unique"])
    # the other classes' anchors are starts; the decided class's own is not
    result = found.results[0]
    own = model.config.class_names[result.prediction]
    assert not any(f"of {own} (" in name for name in result.uniqueness.starts if name.startswith("equilibrium"))
    assert sum(name.startswith("equilibrium") for name in result.uniqueness.starts) == 2


def test_the_lens_caches_stability_per_case_and_starts():
    model = tiny_model().eval()
    lens = Lens(model)
    lens.data = lambda split="test", max_cases=None: _tiny_data()  # the tiny model has no dataset on disk
    case = Case.from_inputs(model.config.modalities, [x[:1] for x in tiny_inputs(1, seed=8)], key="one")
    first = lens.stability(case, starts=4)
    assert lens.stability(case, starts=4) is first
    other = lens.stability(case, starts=6)
    assert other is not first and other.uniqueness.n_starts == 6
    assert first.local.spectral_radius == pytest.approx(other.local.spectral_radius)
    with pytest.raises(ValueError, match="no fixed point"):
        Lens(tiny_model("late")).stability(case)


def test_the_cli_prints_the_summary_keys_as_json(capsys):
    status = st.main(["--model", "assets/models/handwritten-deq", "--cases", "4", "--starts", "3", "--json", "--threads", "1"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("spectral_radius", "contraction_rate", "unique_fraction", "decision_unique_fraction",
                "multiple_equilibria", "radius_iterations_spearman", "radius_error_spearman", "cases",
                "seconds_local_median", "seconds_uniqueness_median", "threads"):  # fmt: skip
        assert key in out, key
    assert set(out["spectral_radius"]) == {"median", "p95", "max"}
    assert out["n"] == len(out["cases"]) == 4 and out["starts"] == 3
    case = out["cases"][0]
    assert {"id", "spectral_radius", "contraction_rate", "unique", "decision_unique", "n_equilibria", "starts"} <= set(case)
    assert np.isfinite(case["spectral_radius"])


def test_the_cli_refuses_a_model_without_a_fixed_point(capsys):
    assert st.main(["--model", "assets/models/handwritten-late", "--cases", "2"]) == 2
    assert "no fixed point" in capsys.readouterr().err
