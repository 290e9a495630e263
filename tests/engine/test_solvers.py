import json

import pytest
import torch

from deq_core import solve
from deq_core.engine.config import SolverSettings
from deq_core.engine.solvers import METHODS, SOLVER_OPTIONS, STATUSES, STOP_MODES, SolveStatus, unrolled_result


@pytest.fixture(autouse=True)
def float64_by_default():
    """Exact comparisons need float64; restored afterwards so other test modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def linear_contraction(n=12, batch=5, norm=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g)
    A = norm * A / torch.linalg.matrix_norm(A, ord=2)
    b = torch.randn(batch, n, generator=g)
    exact = torch.linalg.solve(torch.eye(n) - A, b.T).T
    return (lambda z: z @ A.T + b), exact


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stop_mode", STOP_MODES)
def test_linear_contraction_matches_linear_solve(method, stop_mode):
    f, exact = linear_contraction()
    result = solve(f, torch.zeros_like(exact), method=method, tol=1e-10, max_iter=300, stop_mode=stop_mode)
    assert result.status == ("converged",) * 5
    assert torch.allclose(result.z, exact, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_nonlinear_contraction_converges(method):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(16, 16, generator=g) / 16**0.5 * 0.9
    b = torch.randn(3, 16, generator=g)
    f = lambda z: 0.5 * torch.tanh(z @ W.T) + b  # noqa: E731
    result = solve(f, torch.zeros(3, 16), method=method, tol=1e-9, max_iter=200)
    assert result.converged.all()
    assert (f(result.z) - result.z).norm(dim=1).max() < 1e-7
    if method == "anderson":  # acceleration must pay off against plain iteration
        plain = solve(f, torch.zeros(3, 16), method="fixed_point", tol=1e-9, max_iter=200)
        assert result.iterations.max() < plain.iterations.max()


@pytest.mark.parametrize("method", METHODS)
def test_map_without_fixed_point_is_never_reported_converged(method):
    f = lambda z: z + 1 + 0.1 * torch.tanh(z)  # noqa: E731  f(z) - z >= 0.9 everywhere
    # Absolute stop: far from the origin a relative residual can be tiny without a fixed point.
    result = solve(f, torch.zeros(4, 6), method=method, tol=1e-6, max_iter=40, stop_mode="abs")
    assert not result.converged.any()
    assert set(result.status) <= {"max_iter", "diverged"}


def test_expansion_is_reported_diverged():
    f = lambda z: 3 * z + 1  # noqa: E731  repelling fixed point: plain iteration runs away
    result = solve(f, torch.zeros(2, 4), method="fixed_point", tol=1e-8, max_iter=55)
    assert result.status == ("diverged", "diverged")
    assert result.iterations.max() < 55  # stopped at the blow-up, not at max_iter


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_diverged_not_converged(method):
    f = lambda z: z * float("nan")  # noqa: E731
    result = solve(f, torch.ones(2, 3), method=method, tol=1e-6, max_iter=10)
    assert result.status == ("diverged", "diverged")
    assert torch.isfinite(result.z).all()


def per_sample_problem(batch, seed=2):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(32, 32, generator=g) / 32**0.5
    b = torch.randn(batch, 32, generator=g) * torch.linspace(0.1, 1.0, batch)[:, None]
    return W, b


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stop_mode", STOP_MODES)
def test_sample_result_does_not_depend_on_batch_mates(method, stop_mode):
    torch.set_default_dtype(torch.float32)
    W, b = per_sample_problem(8)
    f_batch = lambda z: torch.tanh(z @ W.T) * 0.9 + b  # noqa: E731
    together = solve(f_batch, torch.zeros(8, 32), method=method, tol=1e-5, stop_mode=stop_mode, max_iter=100)
    assert len(set(together.iterations.tolist())) > 1, "the test needs samples that stop at different times"
    for i in range(8):
        f_one = lambda z: torch.tanh(z @ W.T) * 0.9 + b[i : i + 1]  # noqa: E731
        alone = solve(f_one, torch.zeros(1, 32), method=method, tol=1e-5, stop_mode=stop_mode, max_iter=100)
        assert int(alone.iterations[0]) == int(together.iterations[i])
        assert (alone.z[0] - together.z[i]).abs().max() <= 1e-6
        # Traces agree up to float32 rounding of the batched matmul (Broyden amplifies it most).
        assert torch.allclose(alone.absolute_residuals[0], together.absolute_residuals[i], rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_returns_the_lowest_residual_iterate(method):
    # A rotation-like map that Anderson and plain iteration overshoot: residuals do not fall monotonically.
    theta = torch.tensor(2.5)
    R = 0.97 * torch.stack([torch.stack([theta.cos(), -theta.sin()]), torch.stack([theta.sin(), theta.cos()])])
    f = lambda z: torch.sin(3 * z) @ R.T + 0.3  # noqa: E731
    result = solve(f, torch.zeros(3, 2), method=method, tol=1e-14, max_iter=25, record=True, stop_mode="abs")
    for i, trace in enumerate(result.absolute_residuals):
        assert len(trace) == int(result.iterations[i])
        best = int(result.best_iteration[i])
        assert trace[best] == trace.min()
        assert torch.equal(result.states[best, i], result.z[i])
        assert torch.isclose((f(result.z[i : i + 1]) - result.z[i : i + 1]).norm(), trace.min())
    if method == "fixed_point":  # the property is only tested if the last iterate is not the best
        assert (result.best_iteration < result.iterations - 1).any()


def test_traces_have_true_lengths_and_recorded_states_stop_with_the_sample():
    W, b = per_sample_problem(4)
    f = lambda z: torch.tanh(z @ W.T) * 0.5 + b  # noqa: E731
    result = solve(f, torch.zeros(4, 32), method="fixed_point", tol=1e-6, max_iter=200, record=True)
    lengths = result.iterations.tolist()
    assert [len(t) for t in result.relative_residuals] == lengths
    assert result.states.shape == (max(lengths), 4, 32)
    short = lengths.index(min(lengths))
    frozen = result.states[min(lengths) - 1 :, short]
    assert (frozen == frozen[0]).all()
    assert result.relative_residuals[short][-1] <= 1e-6


def test_relative_residual_starts_at_one_from_zero():
    f, _ = linear_contraction()
    result = solve(f, torch.zeros(5, 12), method="anderson", tol=1e-6)
    assert torch.allclose(torch.stack([t[0] for t in result.relative_residuals]), torch.ones(5))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown solver"):
        solve(lambda z: z, torch.zeros(1, 2), method="newton")
    with pytest.raises(ValueError, match="stop_mode"):
        solve(lambda z: z, torch.zeros(1, 2), stop_mode="max")
    with pytest.raises(ValueError, match="max_iter"):
        solve(lambda z: z, torch.zeros(1, 2), max_iter=0)


def test_misspelt_option_is_refused_with_the_valid_ones():
    """A typo used to be swallowed and the solve ran with the default memory."""
    with pytest.raises(TypeError, match=r"unknown solver option 'memroy' for anderson; valid: memory, beta, lam"):
        solve(lambda z: 0.5 * z, torch.zeros(1, 2), method="anderson", memroy=3)
    with pytest.raises(TypeError, match=r"'memory' for fixed_point; valid: damping$"):
        solve(lambda z: 0.5 * z, torch.zeros(2, 2), method="fixed_point", memory=3)
    with pytest.raises(TypeError, match=r"for broyden; valid: none"):
        solve(lambda z: 0.5 * z, torch.zeros(2, 2), method="broyden", damping=0.5)


def test_solver_options_are_each_methods_keywords():
    assert SOLVER_OPTIONS == {"fixed_point": ("damping",), "anderson": ("memory", "beta", "lam"), "broyden": ()}


@pytest.mark.parametrize("method", METHODS)
def test_settings_pass_only_their_methods_options(method):
    settings = SolverSettings(method=method, memory=3, damping=0.5)
    options = settings.options()
    assert set(options) == {"method", "tol", "stop_mode", "max_iter", *SOLVER_OPTIONS[method]}
    f, exact = linear_contraction()
    result = solve(f, torch.zeros_like(exact), **{**options, "tol": 1e-10, "max_iter": 300})
    assert torch.allclose(result.z, exact, atol=1e-8)


def test_an_option_changes_the_solve():
    """The options reach the solver: memory 1 Anderson is a plain iteration, damping slows it."""
    f, exact = linear_contraction()
    plain = solve(f, torch.zeros_like(exact), method="fixed_point", tol=1e-8, max_iter=300)
    damped = solve(f, torch.zeros_like(exact), method="fixed_point", tol=1e-8, max_iter=300, damping=0.5)
    assert (damped.iterations > plain.iterations).all()
    one = solve(f, torch.zeros_like(exact), method="anderson", tol=1e-8, max_iter=300, memory=1)
    assert torch.equal(one.iterations, plain.iterations)


def test_unrolled_result_reports_the_unroll_residuals():
    f, exact = linear_contraction(norm=0.5)
    states = [torch.zeros_like(exact)]
    for _ in range(40):
        states.append(f(states[-1]))
    result = unrolled_result(states, tol=1e-8, stop_mode="abs", record=True)
    assert result.status == ("converged",) * 5
    assert result.states.shape == (40, 5, 12)
    assert torch.allclose(result.absolute_residuals[0][3], (states[4] - states[3])[0].norm())
    short = unrolled_result(states[:4], tol=1e-8, stop_mode="abs")
    assert short.status == ("max_iter",) * 5


class RowFunction:
    """tanh(W z) * 0.9 + b that can be restricted to some samples, counting the rows it evaluates."""

    def __init__(self, W, b, counter):
        self.W, self.b, self.counter = W, b, counter

    def __call__(self, z):
        self.counter.append(len(z))
        return torch.tanh(z @ self.W.T) * 0.9 + self.b

    def rows(self, index):
        return RowFunction(self.W, self.b[index], self.counter)


@pytest.mark.parametrize("method", METHODS)
def test_stopped_samples_leave_the_batch_when_f_can_be_restricted(method):
    torch.set_default_dtype(torch.float32)
    W, b = per_sample_problem(64, seed=3)
    full = solve(lambda z: torch.tanh(z @ W.T) * 0.9 + b, torch.zeros(64, 32), method=method, tol=1e-5, max_iter=100)
    evaluated = []
    compact = solve(RowFunction(W, b, evaluated), torch.zeros(64, 32), method=method, tol=1e-5, max_iter=100)
    assert len(set(full.iterations.tolist())) > 1
    assert torch.equal(compact.iterations, full.iterations)
    assert compact.status == full.status and torch.equal(compact.best_iteration, full.best_iteration)
    assert (compact.z - full.z).abs().max() <= 1e-6
    for a, b_ in zip(compact.relative_residuals, full.relative_residuals):
        assert torch.allclose(a, b_, rtol=1e-2, atol=1e-6)
    assert compact.function_evaluations == full.function_evaluations == len(evaluated)
    assert sum(evaluated) < 64 * len(evaluated)  # converged samples were not evaluated again
    assert min(evaluated) < 64
    evaluated.clear()
    whole = solve(RowFunction(W, b, evaluated), torch.zeros(64, 32), method=method, tol=1e-5, max_iter=100, compact=False)
    assert set(evaluated) == {64} and torch.equal(whole.z, full.z)


def test_single_sample_mixing_weights_solve_the_bordered_system():
    from deq_core.engine.solvers import _mixing_weights

    g = torch.Generator().manual_seed(0)
    for m in (2, 4, 6):
        residuals = torch.randn(m, 50, generator=g, dtype=torch.float64)
        gram = residuals @ residuals.T
        reg = 1e-4 * float(gram[-1, -1])
        H = torch.zeros(m + 1, m + 1, dtype=torch.float64)
        H[0, 1:] = H[1:, 0] = 1
        H[1:, 1:] = gram + reg * torch.eye(m, dtype=torch.float64)
        expected = torch.linalg.solve(H, torch.eye(m + 1, dtype=torch.float64)[:, 0])[1:]
        weights = torch.tensor(_mixing_weights(gram.tolist(), m, reg), dtype=torch.float64)
        assert torch.allclose(weights, expected, rtol=1e-9, atol=1e-12)
        assert abs(float(weights.sum()) - 1) < 1e-12
    assert _mixing_weights([[-1.0, 0.0], [0.0, 1.0]], 2, 0.0) is None  # not positive definite: plain step


def test_batched_anderson_mixes_no_candidate_after_every_sample_has_stopped(monkeypatch):
    # Identical samples stop at the same evaluation E. Mixing starts at the second
    # evaluation (one stored residual is the plain step), so E - 2 small systems are
    # needed: the one after the last evaluation would be thrown away by keep_done.
    f, exact = linear_contraction(batch=1)  # one b, broadcast over the batch: identical samples
    solves = []
    real = torch.linalg.solve_ex
    monkeypatch.setattr(torch.linalg, "solve_ex", lambda *a, **k: solves.append(1) or real(*a, **k))
    result = solve(f, torch.zeros(4, exact.shape[1]), method="anderson", tol=1e-10, max_iter=100)
    assert result.status == ("converged",) * 4
    assert result.function_evaluations >= 3
    assert len(solves) == result.function_evaluations - 2


def test_compaction_waits_until_the_evaluations_wasted_on_stopped_samples_pay_for_the_copy():
    from deq_core.engine.solvers import COMPACT_RATIO, _Tracker

    assert COMPACT_RATIO == 0.5
    tracker = _Tracker(torch.zeros(16, 4), tol=1e-4, stop_mode="rel", max_iter=50, record=False)
    tracker.observe(torch.zeros(16, 4), torch.ones(16, 4))  # one evaluation, nobody converged
    tracker.done[:2] = True  # 2 of 16 stopped: a copy of the 14 others costs 0.5 * 14 = 7 wasted evaluations
    decisions = []
    for _ in range(4):
        assert not tracker.finished()
        decisions.append(tracker.should_compact())
    assert decisions == [False, False, False, True]  # 2, 4, 6, then 8 >= 7
    keep = tracker.compact()
    assert keep.tolist() == list(range(2, 16)) and tracker.carried == 0
    tracker.done[:5] = True  # 5 of the 14 at once: 5 >= 0.5 * 9, compacted right away
    assert not tracker.finished() and tracker.should_compact()
    recording = _Tracker(torch.zeros(16, 4), tol=1e-4, stop_mode="rel", max_iter=50, record=True)
    recording.observe(torch.zeros(16, 4), torch.ones(16, 4))
    recording.done[:15] = True
    assert not recording.finished() and not recording.should_compact()  # recorded traces keep the whole batch


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [1, 3])
def test_statuses_are_enum_members_that_serialise_as_their_strings(method, batch):
    f, _ = linear_contraction(batch=batch)
    converged = solve(f, torch.zeros(batch, 12), method=method, tol=1e-8, max_iter=300)
    short = solve(f, torch.zeros(batch, 12), method=method, tol=1e-14, max_iter=2)
    grows = solve(lambda z: 3 * z + 1, torch.zeros(batch, 12), method="fixed_point", tol=1e-8, max_iter=100)
    for result, expected in ((converged, "converged"), (short, "max_iter"), (grows, "diverged")):
        assert all(type(s) is SolveStatus for s in result.status)
        assert result.status == (expected,) * batch  # a StrEnum equals its string
        assert json.dumps({"status": list(result.status)}) == json.dumps({"status": [expected] * batch})


def test_statuses_keep_their_strings():
    assert STATUSES == ("converged", "max_iter", "diverged")
    assert [s.value for s in SolveStatus] == list(STATUSES)
    assert {"converged": 0}[SolveStatus.CONVERGED] == 0  # hashes as its string: dicts keyed by strings still work


def test_unrolled_statuses_are_enum_members():
    states = [torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3)]
    result = unrolled_result(states, tol=1e-6, stop_mode="abs")
    assert result.status == (SolveStatus.CONVERGED,) * 2 and all(type(s) is SolveStatus for s in result.status)


class _RowWise:
    """f(z) = z on the first ``still`` rows (a fixed point at any z0), a contraction on the others; with ``rows``."""

    def __init__(self, shift: torch.Tensor, still: torch.Tensor):
        self.shift, self.still = shift, still

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(self.still[:, None], z, 0.5 * z + self.shift)

    def rows(self, index: torch.Tensor) -> "_RowWise":
        return _RowWise(self.shift[index], self.still[index])


@pytest.mark.parametrize("method", METHODS)
def test_solve_never_writes_into_z0_even_when_it_compacts_after_the_first_step(method):
    # 12 of 16 samples start at their fixed point: they stop at the first evaluation and the
    # working set is compacted at once, while the best iterate of every sample is still z0.
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(16, 6, generator=g)
    before = z0.clone()
    f = _RowWise(torch.randn(16, 6, generator=g), torch.arange(16) < 12)
    with torch.no_grad():
        result = solve(f, z0, method=method, tol=1e-10, max_iter=100)
    assert torch.equal(z0, before)
    assert result.status == ("converged",) * 16
    assert torch.equal(result.z[:12], before[:12]) and result.iterations[:12].tolist() == [1] * 12
    assert torch.allclose(result.z[12:], 2 * f.shift[12:], atol=1e-9)


def test_reused_anderson_histories_do_not_carry_over_between_solves_or_into_a_nested_solve():
    # The batched Anderson borrows its histories from this thread's scratch buffers
    # (solvers._Scratch): a solve of another size in between, or a solve inside f, must not
    # change a solve's result by a single bit.
    f, exact = linear_contraction(batch=6)
    other, _ = linear_contraction(n=12, batch=9, norm=0.95, seed=3)

    def run(g):
        with torch.no_grad():
            return solve(g, torch.zeros_like(exact), method="anderson", tol=1e-12, max_iter=200)

    first = run(f)
    with torch.no_grad():
        solve(other, torch.zeros(9, 12), method="anderson", tol=1e-12, max_iter=200)
    again = run(f)

    def nested(z):  # solves another problem of the same shape inside every evaluation of f
        with torch.no_grad():
            solve(other, torch.zeros(9, 12), method="anderson", tol=1e-12, max_iter=200)
        return f(z)

    inside = run(nested)
    for result in (again, inside):
        assert torch.equal(result.z, first.z)
        assert torch.equal(result.iterations, first.iterations)
        assert all(torch.equal(a, b) for a, b in zip(result.absolute_residuals, first.absolute_residuals))
    assert torch.allclose(first.z, exact, atol=1e-10)


def test_traces_are_each_samples_own_entries_in_step_order():
    from deq_core.engine.solvers import _traces

    matrix = torch.arange(12.0).reshape(4, 3)  # (max_iter, batch): step k of sample j is 3 k + j
    traces = _traces(matrix, torch.tensor([2, 4, 1]))
    assert [t.tolist() for t in traces] == [[0.0, 3.0], [1.0, 4.0, 7.0, 10.0], [2.0]]
    traces[0][0] = -1  # a copy: the tracker's matrix is untouched
    assert matrix[0, 0] == 0
