"""Forward-solver benchmark: deq_core's solvers against torchdeq's, side by side.

    python benchmarks/solvers.py [--json PATH] [--repeats 7] [--threads 1] [--model FOLDER]

Two fixed-point problems, each at batch 1 and 256, solved to the same relative
residual ||f(z) - z|| / ||f(z)|| <= tol with the same max_iter:

  (a) contraction: z = tanh(W z + x), W of spectral norm 0.9, state size 512;
  (b) fusion: the DEQ fusion update f(z; x) of a 3-modality model of width 128,
      state (N + 1) * d = 512: ``assets/models/inspection-deq`` when that folder
      exists and fits, else a small DEQFusion fitted here to be contractive.

f-evaluations are counted by a wrapper around f for both libraries (reported
step counts are not comparable: torchdeq's Anderson spends two evaluations
before its loop). Convergence is checked independently: f is evaluated once more
(uncounted) at each returned z, and a solver whose worst sample is above tol is
flagged and left out of the comparison. Wall time is the median of ``--repeats``
runs, taken round-robin over the solvers so that background load hits them alike;
the thread's CPU time is reported beside it, as load inflates it far less.

Both libraries get the same tol, stop_mode="rel" and max_iter, and otherwise their
own defaults. Two differences are by design and show in the table: torchdeq stops
when the batch's worst sample converges, ours per sample (same f-count for the
batch, more bookkeeping); torchdeq returns f(z_k) of its best iterate, ours z_k,
so torchdeq's re-checked residual is one contraction factor lower.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from deq_core import DEQFusion, Modality, ModelConfig, SolverSettings, exact_jacobian, solve, spectral_radius  # noqa: E402
from deq_core.engine import ModelLoadError, load_config, load_model  # noqa: E402
from deq_core.engine import EquilibriumModel  # noqa: E402

INSPECTION_MODEL = ROOT / "assets" / "models" / "inspection-deq"
STATE_SIZE = 512
FUSION_WIDTH = 128
FUSION_MODALITIES = 3
BATCHES = (1, 256)
# Our solver returns z_k and stops on ||f(z_k) - z_k||; re-evaluating f at z_k can
# differ in the last float32 bits, so the independent check allows 1% over tol.
RESIDUAL_SLACK = 1.01

Function = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- torchdeq


def import_torchdeq():
    """torchdeq.solver, or None when torchdeq is not installed (its rows are then skipped).

    torchdeq 0.1.0 imports and runs unchanged with torch 2.13 (checked: every
    submodule imports, and the three solvers run on CPU). If a later torch
    removes an API it uses, patch it here, with a comment naming the API.
    """
    try:
        from torchdeq import solver
    except ImportError as error:
        print(f"torchdeq not available ({error}); install with: pip install --no-deps -r benchmarks/requirements.txt")
        return None
    return solver


# --------------------------------------------------------------------------- problems


@dataclass
class Problem:
    name: str
    batch: int
    f: Function
    z0: torch.Tensor


class CountingFunction:
    """f with a call counter: one call is one batched f-evaluation.

    It passes on f's ``rows`` (the fusion update's restriction to some cases, which our
    solvers use to drop converged cases), counting into the same counter, so the
    counted run takes the same path as the timed ones.
    """

    def __init__(self, f: Function, counter: list[int] | None = None):
        self.f, self._counter = f, counter if counter is not None else [0]
        if callable(getattr(f, "rows", None)):
            self.rows = lambda index: CountingFunction(f.rows(index), self._counter)

    @property
    def calls(self) -> int:
        return self._counter[0]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self._counter[0] += 1
        return self.f(z)


def contraction_problem(batch: int, seed: int = 0) -> Problem:
    """z = tanh(W z + x): tanh is 1-Lipschitz, so ||W||_2 = 0.9 makes f a 0.9-contraction."""
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(STATE_SIZE, STATE_SIZE, generator=generator)
    W *= 0.9 / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(batch, STATE_SIZE, generator=generator)
    return Problem("(a) contraction", batch, lambda z: torch.tanh(z @ W.T + x), torch.zeros(batch, STATE_SIZE))


def random_inputs(config: ModelConfig, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Plausible raw inputs of each modality's kind (used when no dataset is at hand)."""
    inputs = []
    for modality in config.modalities:
        shape = (batch, *modality.shape)
        if modality.kind == "text":
            inputs.append(torch.randint(2, len(modality.vocabulary), shape, generator=generator))
        elif modality.kind == "image":
            inputs.append(torch.rand(shape, generator=generator))
        else:
            inputs.append(torch.randn(shape, generator=generator))
    return tuple(inputs)


def fit_contractive_fusion(steps: int = 200, penalty_weight: float = 10.0, seed: int = 0) -> DEQFusion:
    """A DEQFusion on three 32-feature vector modalities, width 128, fitted to be contractive.

    The untrained f already contracts (the model's contractive start; spectral
    radius about 0.7 at z*), but what the benchmark should stand for is a DEQ
    trained with the Jacobian penalty (docs/model.md). So it is fitted for ``steps`` Adam
    steps (15-40 s on one thread, depending on load; deterministic) on random inputs labelled
    by a random linear teacher, with the penalty at weight 10 and one probe. The
    3-step phantom gradient and 20 plain forward steps keep the fit cheap; the
    benchmark itself solves to tol.
    """
    torch.manual_seed(seed)
    config = ModelConfig(
        architecture="deq",
        modalities=tuple(Modality(f"vector{i}", "vector", (32,)) for i in range(FUSION_MODALITIES)),
        class_names=("a", "b", "c", "d"),
        width=FUSION_WIDTH,
    )
    model = DEQFusion(config)
    teacher = torch.randn(32 * FUSION_MODALITIES, len(config.class_names))
    # Plain iteration in the fit, so the fitted f does not change when the solvers under test do.
    settings = SolverSettings(method="fixed_point", max_iter=20, gradient="phantom", phantom_steps=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        inputs = [torch.randn(64, 32) for _ in range(FUSION_MODALITIES)]
        labels = (torch.cat(inputs, dim=1) @ teacher).argmax(dim=1)
        output = model.run(inputs, solver=settings, jacobian_probes=1)
        loss = torch.nn.functional.cross_entropy(output.logits, labels) + penalty_weight * output.jacobian_penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def inspection_inputs(model: EquilibriumModel, batch: int) -> tuple[tuple[torch.Tensor, ...], str]:
    """Test cases of the inspection data set (cycled to ``batch``), else random inputs."""
    try:
        from deq_core.data import generate_inspection

        data = generate_inspection("test")
        index = torch.arange(batch) % len(data)
        return tuple(x[index] for x in data.inputs), "inspection test cases"
    except Exception as error:  # the generator is optional for this benchmark
        generator = torch.Generator().manual_seed(batch)
        return random_inputs(model.config, batch, generator), f"random inputs ({type(error).__name__})"


def fusion_model(
    folder: Path | None = None,
) -> tuple[EquilibriumModel, Callable[[int], tuple[tuple[torch.Tensor, ...], str]], str]:
    """The fusion model of problem (b): ``(model in eval mode, inputs(batch), description)``.

    ``folder=None`` takes ``assets/models/inspection-deq`` if it exists with three
    modalities of width 128, else fits the fallback; an explicit folder is used as
    it is (any width). Shared with benchmarks/memory.py so both benchmarks use the same f.
    """
    explicit = folder is not None
    folder = Path(folder) if explicit else INSPECTION_MODEL
    if explicit or (folder / "config.json").is_file():
        try:
            config = load_config(folder)
            fits = config.width == FUSION_WIDTH and len(config.modalities) == FUSION_MODALITIES
            if (fits or explicit) and config.architecture in ("deq", "weight_tied"):
                model = load_model(folder, device="cpu")
                return model, lambda b: inspection_inputs(model, b), f"{folder} (width {config.width}, {config.architecture})"
            print(f"note: {folder} does not fit (width {config.width}, "
                  f"{len(config.modalities)} modalities, {config.architecture}); using the fitted fallback")  # fmt: skip
        except ModelLoadError as error:
            if explicit:
                raise
            print(f"note: {error}; using the fitted fallback")
    started = time.perf_counter()
    model = fit_contractive_fusion()
    seconds = time.perf_counter() - started

    def inputs(batch: int) -> tuple[tuple[torch.Tensor, ...], str]:
        generator = torch.Generator().manual_seed(1000 + batch)
        return random_inputs(model.config, batch, generator), "random vector inputs"

    return model, inputs, f"fallback DEQFusion, 3 vector modalities, fitted 200 steps with Jacobian penalty ({seconds:.0f} s)"


def fusion_problem(model: EquilibriumModel, inputs: tuple[torch.Tensor, ...], batch: int) -> Problem:
    with torch.no_grad():
        f, z0 = model.bind(inputs)
    return Problem("(b) fusion", batch, f, z0)


def local_spectral_radius(f: Function, z0: torch.Tensor, tol: float) -> float:
    """Spectral radius of J_f at the first sample's fixed point: < 1 is a local contraction."""
    with torch.no_grad():
        z_star = solve(f, z0[:1], "anderson", tol=tol * 1e-2, max_iter=200).z
    return spectral_radius(exact_jacobian(f, z_star))


# --------------------------------------------------------------------------- solvers


@dataclass(frozen=True)
class Solver:
    library: str
    method: str
    run: Callable[[Function, torch.Tensor], torch.Tensor]  # (f, z0) -> returned z

    @property
    def label(self) -> str:
        return f"{self.library} {self.method}"


def build_solvers(tol: float, max_iter: int, torchdeq_solver) -> list[Solver]:
    def ours(method: str) -> Solver:
        # Our defaults are docs/model.md's: Anderson m = 6, beta = 1, lambda = 1e-4 relative to the window's residuals.
        return Solver("deq_core", method, lambda f, z0: solve(f, z0, method, tol=tol, max_iter=max_iter, stop_mode="rel").z)

    def theirs(method: str, key: str) -> Solver:
        # torchdeq's own defaults otherwise (Anderson m = 6, lam = 1e-4 absolute, tau = 1; Broyden without line search).
        function = torchdeq_solver.get_solver(key)
        return Solver("torchdeq", method, lambda f, z0: function(f, z0, max_iter=max_iter, tol=tol, stop_mode="rel")[0])

    solvers = [ours("fixed_point"), ours("anderson"), ours("broyden")]
    if torchdeq_solver is not None:
        solvers += [theirs("fixed_point", "fixed_point_iter"), theirs("anderson", "anderson"), theirs("broyden", "broyden")]
    return solvers


@dataclass
class Row:
    problem: str
    batch: int
    library: str
    method: str
    function_evaluations: int
    median_ms: float
    min_ms: float
    max_ms: float
    median_cpu_ms: float
    runs: int
    max_relative_residual: float
    converged: bool
    threads: int


def worst_relative_residual(f: Function, z: torch.Tensor) -> float:
    fz = f(z)
    batch = z.shape[0]
    residual = (fz - z).reshape(batch, -1).norm(dim=1) / (fz.reshape(batch, -1).norm(dim=1) + 1e-30)
    residual = torch.where(torch.isfinite(residual), residual, torch.full_like(residual, float("inf")))
    return float(residual.max())


def benchmark(problem: Problem, solvers: list[Solver], tol: float, repeats: int, threads: int) -> list[Row]:
    evaluations, residuals = {}, {}
    times, cpu_times = {s.label: [] for s in solvers}, {s.label: [] for s in solvers}
    with torch.no_grad():
        for solver in solvers:  # the first run counts f and checks the answer; it also warms up
            counting = CountingFunction(problem.f)
            z = solver.run(counting, problem.z0)
            evaluations[solver.label] = counting.calls
            residuals[solver.label] = worst_relative_residual(problem.f, z)
        for _ in range(repeats):
            for solver in solvers:
                started, cpu_started = time.perf_counter(), time.thread_time()
                solver.run(problem.f, problem.z0)
                times[solver.label].append(1e3 * (time.perf_counter() - started))
                cpu_times[solver.label].append(1e3 * (time.thread_time() - cpu_started))
    return [
        Row(
            problem=problem.name,
            batch=problem.batch,
            library=s.library,
            method=s.method,
            function_evaluations=evaluations[s.label],
            median_ms=statistics.median(times[s.label]),
            min_ms=min(times[s.label]),
            max_ms=max(times[s.label]),
            median_cpu_ms=statistics.median(cpu_times[s.label]),
            runs=repeats,
            max_relative_residual=residuals[s.label],
            converged=residuals[s.label] <= RESIDUAL_SLACK * tol,
            threads=threads,
        )
        for s in solvers
    ]


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row]) -> None:
    header = f"{'problem':<16} {'batch':>5}  {'solver':<21} {'f-evals':>7} {'median ms':>10} {'min-max ms':>17} {'cpu ms':>8} {'max rel. res.':>13}  status"
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        key = (row.problem, row.batch)
        if previous is not None and key != previous:
            print()
        previous = key
        group = [r for r in rows if (r.problem, r.batch) == key and r.converged]
        rank = sorted(r.median_ms for r in group).index(row.median_ms) + 1 if row.converged else None
        status = f"ok, #{rank} of {len(group)} by time" if row.converged else "NOT CONVERGED (not ranked)"
        spread = f"{row.min_ms:.2f}-{row.max_ms:.2f}"
        print(
            f"{row.problem:<16} {row.batch:>5}  {row.library + ' ' + row.method:<21} {row.function_evaluations:>7} "
            f"{row.median_ms:>10.2f} {spread:>17} {row.median_cpu_ms:>8.2f} {row.max_relative_residual:>13.2e}  {status}"
        )


def issue_figures(rows: list[Row]) -> list[dict]:
    """Our Anderson against torchdeq's best converged solver on (b), per batch size."""
    figures = []
    for batch in sorted({r.batch for r in rows if r.problem == "(b) fusion"}):
        group = [r for r in rows if r.problem == "(b) fusion" and r.batch == batch]
        ours = next((r for r in group if r.library == "deq_core" and r.method == "anderson"), None)
        theirs = [r for r in group if r.library == "torchdeq" and r.converged]
        if ours is None or not theirs:
            continue
        fewest = min(theirs, key=lambda r: r.function_evaluations)
        fastest = min(theirs, key=lambda r: r.median_ms)
        figures.append({
            "batch": batch,
            "our_anderson_converged": ours.converged,
            "our_anderson_f_evals": ours.function_evaluations,
            "torchdeq_fewest_f_evals": fewest.function_evaluations,
            "torchdeq_fewest_f_evals_solver": fewest.method,
            "f_evals_target_met": ours.converged and ours.function_evaluations <= fewest.function_evaluations,
            "our_anderson_median_ms": ours.median_ms,
            "torchdeq_fastest_median_ms": fastest.median_ms,
            "torchdeq_fastest_solver": fastest.method,
            "wall_time_ratio": ours.median_ms / fastest.median_ms,
            "cpu_time_ratio": ours.median_cpu_ms / min(r.median_cpu_ms for r in theirs),
            "wall_time_target_met": ours.converged and ours.median_ms <= 0.8 * fastest.median_ms,
        })  # fmt: skip
    return figures


def print_figures(figures: list[dict]) -> None:
    print("\nIssue figures on (b), our Anderson vs torchdeq's best converged solver:")
    for fig in figures:
        flag = "" if fig["our_anderson_converged"] else "  (our Anderson did NOT converge)"
        print(
            f"  batch {fig['batch']:>3}: f-evals  ours {fig['our_anderson_f_evals']} vs torchdeq "
            f"{fig['torchdeq_fewest_f_evals_solver']} {fig['torchdeq_fewest_f_evals']}"
            f"  -> target <= : {'MET' if fig['f_evals_target_met'] else 'MISSED'}{flag}"
        )
        print(
            f"             wall time ours {fig['our_anderson_median_ms']:.2f} ms / torchdeq "
            f"{fig['torchdeq_fastest_solver']} {fig['torchdeq_fastest_median_ms']:.2f} ms = "
            f"{fig['wall_time_ratio']:.2f}x  -> target <= 0.8x: {'MET' if fig['wall_time_target_met'] else 'MISSED'}"
            f"  (thread CPU time ratio {fig['cpu_time_ratio']:.2f}x)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows and figures to this JSON file")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per solver (median reported; at least 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 measures fairly under load)")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative residual to reach")
    parser.add_argument("--max-iter", type=int, default=100, help="f-evaluation budget per solve, both libraries")
    parser.add_argument("--model", type=Path, help="model folder for (b) (default: assets/models/inspection-deq if it fits)")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    torch.set_num_threads(args.threads)
    torchdeq_solver = import_torchdeq()
    torchdeq_version = "not installed"
    if torchdeq_solver is not None:
        from importlib.metadata import version

        torchdeq_version = version("torchdeq")
    print(f"torch {torch.__version__}, torchdeq {torchdeq_version}, {platform.processor() or platform.machine()}, "
          f"torch threads: {torch.get_num_threads()}")  # fmt: skip
    print(f"stop: relative residual <= {args.tol:g} per sample, max_iter {args.max_iter}; "
          f"median of {args.repeats} runs (after one counted warm-up run)")  # fmt: skip
    print("cpu ms: median CPU time of the solving thread, which background load on a shared machine inflates less than wall time")

    model, fusion_inputs, description = fusion_model(args.model)
    solvers = build_solvers(args.tol, args.max_iter, torchdeq_solver)
    print(f"(a) contraction: z = tanh(W z + x), ||W||_2 = 0.9, state {STATE_SIZE}")
    print(f"(b) fusion: {description}")
    rows: list[Row] = []
    for batch in BATCHES:
        rows += benchmark(contraction_problem(batch), solvers, args.tol, args.repeats, args.threads)
    for batch in BATCHES:
        inputs, source = fusion_inputs(batch)
        problem = fusion_problem(model, inputs, batch)
        if batch == BATCHES[0]:
            radius = local_spectral_radius(problem.f, problem.z0, args.tol)
            print(f"    state {problem.z0[0].numel()}, inputs: {source}; spectral radius of J_f at z* (first case): {radius:.3f}")
        rows += benchmark(problem, solvers, args.tol, args.repeats, args.threads)
    print()
    print_table(rows)
    figures = issue_figures(rows)
    print_figures(figures)
    if args.json:
        settings = {"tol": args.tol, "stop_mode": "rel", "max_iter": args.max_iter, "repeats": args.repeats,
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "torchdeq": torchdeq_version,
                    "fusion_model": description}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "rows": [asdict(r) for r in rows], "figures": figures}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
