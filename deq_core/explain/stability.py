"""How far a fixed point can be trusted: its local stability and whether it is the only one.

A DEQ decides from z* = f(z*; x). That decision is only as trustworthy as z* is

* **stable**: the spectral radius rho of J_f(z*) below 1 means f contracts near z*
  (by about rho per step), iterations to a tolerance ~ log(tol) / log(rho), and the
  implicit gradient's linear solve (I - J)^-T stays well conditioned;
* **unique**: solving the same case from other starting points (noise at a few scales,
  the equilibria of other classes' typical cases) lands on the same z* and decision.

The spectral radius comes from a Krylov (Arnoldi) extension of power iteration on
vector-Jacobian products with one retained autograd graph at z*: J^T has the same
eigenvalues as J, a VJP on the retained graph costs about 0.3 ms on the inspection
DEQ where a forward-mode JVP costs about 4 ms, and Arnoldi's Ritz values find the
largest modulus also when it belongs to a complex pair (where the plain power
iteration's ratio oscillates). No dense Jacobian is formed; ``exact_jacobian`` stays
the check on small states (tests/explain/test_stability.py).

The starts of the uniqueness check are solved in one batch (the case repeated K times
with different z0, through ``f.rows`` where f offers it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from deq_core.engine.adapter import trust_for
from deq_core.engine.config import SolverSettings
from deq_core.engine.modality import Inputs
from deq_core.engine.solvers import SolveStatus, solve

Function = Callable[[torch.Tensor], torch.Tensor]

KRYLOV_STEPS = 24  # Arnoldi vectors: the radius of the shipped DEQs is settled to 1e-4 by then
NOISE_SCALES = (0.5, 2.0, 8.0)  # start noise, in units of the RMS entry of the zero-start z*
SAME_FACTOR = 20.0  # end states closer than this many times what the tolerance allows are one equilibrium
MIN_SAME_DISTANCE = 1e-3  # ... and never tighter than this relative distance
ANCHOR_CASES = 16  # cases per class solved to pick that class's typical equilibrium
SEED = 0


# --------------------------------------------------------------------------- local stability


def arnoldi_radius(apply: Function, v0: torch.Tensor, steps: int = KRYLOV_STEPS) -> tuple[float, float, int]:
    """Largest eigenvalue modulus of the linear map ``apply`` (on flat vectors) from a Krylov space.

    Returns ``(radius, change, products)``: the largest Ritz value's modulus after
    ``steps`` products, how much it moved over the last quarter of them (a convergence
    check), and the products used (fewer when the space became invariant: then exact).
    """
    n = v0.numel()
    m = min(steps, n)
    Q = torch.zeros(m + 1, n, dtype=torch.float64)
    H = torch.zeros(m + 1, m, dtype=torch.float64)
    Q[0] = v0.reshape(-1).double() / v0.double().norm()
    history: list[float] = []
    used = m
    for j in range(m):
        w = apply(Q[j].to(v0.dtype)).reshape(-1).double()
        scale = w.norm()
        for _ in range(2):  # Gram-Schmidt twice: orthogonal to working precision
            coefficients = Q[: j + 1] @ w
            H[: j + 1, j] += coefficients
            w = w - coefficients @ Q[: j + 1]
        H[j + 1, j] = w.norm()
        history.append(float(torch.linalg.eigvals(H[: j + 1, : j + 1]).abs().max()))
        if H[j + 1, j] <= 1e-10 * max(float(scale), 1e-30):
            used = j + 1
            break
        Q[j + 1] = w / H[j + 1, j]
    radius = history[-1]
    back = history[-max(1, len(history) // 4) - 1] if len(history) > 1 else radius
    return radius, abs(radius - back), used


def solver_rate(relative_residuals: torch.Tensor, best_iteration: int | None = None) -> float | None:
    """Empirical contraction of the solve: the geometric mean factor by which its residual fell per step.

    A least-squares slope of log residual over iterations 1..best (iteration 0 is the
    zero start, whose relative residual is 1 by construction). None for fewer than 3 points.
    """
    trace = relative_residuals.detach().double().cpu()
    end = len(trace) if best_iteration is None else best_iteration + 1
    values = trace[1:end]
    values = values[torch.isfinite(values) & (values > 0)]
    if len(values) < 2:
        return None
    k = torch.arange(len(values), dtype=torch.float64)
    logs = values.log()
    slope = float(((k - k.mean()) * (logs - logs.mean())).sum() / ((k - k.mean()) ** 2).sum())
    return math.exp(slope)


@dataclass(frozen=True)
class LocalStability:
    """The linearisation of f at one case's fixed point.

    Attributes:
        spectral_radius: rho(J_f(z*)), from ``arnoldi_radius``; < 1: locally contractive.
        radius_change: how much the estimate moved over its last quarter of products.
        products: Jacobian products the estimate used.
        contraction_rate: the solve's own residual factor per step (``solver_rate``;
            Anderson's is below rho); None when the trace is too short.
        iterations: f evaluations the solve used; converged: whether it met its tolerance.
        tol: the solver tolerance the figures below refer to.
        iterations_to_tol: log(tol) / log(rho), the plain fixed-point steps to shrink an
            error by tol; None when rho >= 1 (no guarantee).
        amplification_bound: 1 / (1 - rho), what the implicit gradient's solve
            (I - J)^-1 multiplies along the dominant direction; None when rho >= 1.
        gradient_amplification: ||(I - J^T)^-1 g|| / ||g|| for g the gradient of the
            decided logit: what the implicit gradient actually amplified; None without a head.
    """

    spectral_radius: float
    radius_change: float
    products: int
    contraction_rate: float | None
    iterations: int
    converged: bool
    tol: float
    iterations_to_tol: float | None
    amplification_bound: float | None
    gradient_amplification: float | None

    @property
    def stable(self) -> bool:
        return self.spectral_radius < 1.0


def local_stability(f: Function, z_star: torch.Tensor, trace: torch.Tensor, best_iteration: int, iterations: int,
                    converged: bool, tol: float, head_gradient: torch.Tensor | None = None,
                    steps: int = KRYLOV_STEPS, seed: int = SEED) -> LocalStability:  # fmt: skip
    """``LocalStability`` of one sample's fixed point ``z_star: (1, *state)``.

    ``trace``: the solve's relative residuals; ``head_gradient``: d(decided logit)/d f(z*),
    shaped like z*, for the measured gradient amplification (one adjoint solve).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        z_in = z_star.detach().clone().requires_grad_()
        image = f(z_in)

        def vjp(v: torch.Tensor) -> torch.Tensor:
            (product,) = torch.autograd.grad(image, z_in, v.reshape(image.shape), retain_graph=True)
            return product

        v0 = torch.randn(z_star.numel(), generator=generator, dtype=torch.float64).to(z_star.dtype)
        radius, change, products = arnoldi_radius(vjp, v0, steps)
        amplification = None
        if head_gradient is not None:
            g = head_gradient.detach().reshape(image.shape).to(image.dtype)
            adjoint = solve(lambda y: vjp(y) + g, torch.zeros_like(g), method="anderson", tol=1e-6, max_iter=100)
            if adjoint.status[0] == SolveStatus.CONVERGED:
                amplification = float(adjoint.z.norm() / g.norm().clamp_min(1e-30))
    rate = solver_rate(trace, best_iteration)
    contractive = radius < 1.0
    return LocalStability(
        spectral_radius=radius,
        radius_change=change,
        products=products,
        contraction_rate=rate,
        iterations=int(iterations),
        converged=bool(converged),
        tol=float(tol),
        iterations_to_tol=math.log(tol) / math.log(radius) if contractive and radius > 0 else (0.0 if radius == 0 else None),
        amplification_bound=1.0 / (1.0 - radius) if contractive else None,
        gradient_amplification=amplification,
    )


# --------------------------------------------------------------------------- uniqueness


@dataclass(frozen=True)
class Anchor:
    """A class's typical equilibrium, used as a start: ``z: (*state)`` of case ``case_id``."""

    class_index: int
    case_id: str
    z: torch.Tensor


@dataclass(frozen=True)
class Uniqueness:
    """The same case solved from several starts.

    Attributes:
        starts: what each start was ("zero", "noise x2", "equilibrium of crack (insp-0012)").
        distances: relative distance ||z*_k - z*_0|| / ||z*_0|| of each end state to the zero start's.
        decisions: the class each end state decides.
        converged: whether each start's solve met its tolerance.
        clusters: which equilibrium each converged start reached (0: the zero start's), -1 if not converged.
        same_distance: end states closer than this (relative) count as one equilibrium.
    """

    starts: tuple[str, ...]
    distances: tuple[float, ...]
    decisions: tuple[int, ...]
    converged: tuple[bool, ...]
    clusters: tuple[int, ...]
    same_distance: float

    @property
    def n_starts(self) -> int:
        return len(self.starts)

    @property
    def n_equilibria(self) -> int:
        """Distinct equilibria among the converged starts."""
        return len({c for c in self.clusters if c >= 0})

    @property
    def unique(self) -> bool:
        """Every start converged, to the same equilibrium."""
        return all(self.converged) and self.n_equilibria == 1

    @property
    def decision_unique(self) -> bool:
        """Every start decides as the zero start does (converged or not)."""
        return len(set(self.decisions)) == 1

    def others(self) -> list[int]:
        """Indices of the starts that reached another equilibrium, or did not converge."""
        return [i for i, c in enumerate(self.clusters) if c != 0]


def cluster(states: torch.Tensor, usable: Sequence[bool], same_distance: float) -> tuple[int, ...]:
    """Leader clustering of ``(K, n)`` end states by relative distance; -1 for unusable ones.

    Start 0 leads cluster 0; each further state joins the first leader within
    ``same_distance`` (relative to the larger norm), or leads a new cluster.
    """
    leaders: list[torch.Tensor] = []
    labels = []
    for state, ok in zip(states.double(), usable):
        if not ok:
            labels.append(-1)
            continue
        for index, leader in enumerate(leaders):
            if float((state - leader).norm()) <= same_distance * max(float(state.norm()), float(leader.norm()), 1e-30):
                labels.append(index)
                break
        else:
            leaders.append(state)
            labels.append(len(leaders) - 1)
    return tuple(labels)


def anchor_room(count: int) -> int:
    """How many anchors ``count`` starts hold: at most ``count - 2``, so that a noise start remains (count >= 3)."""
    return max(count - 2, 0) if count >= 3 else max(count - 1, 0)


def starting_anchors(anchors: Sequence[Anchor], prediction: int, count: int) -> tuple[Anchor, ...]:
    """The anchors a case decided as ``prediction`` starts from: the other classes', as many as ``count`` holds."""
    return tuple(a for a in anchors if a.class_index != prediction)[:anchor_room(count)]


def start_states(z_star: torch.Tensor, anchors: Sequence[tuple[str, torch.Tensor]], count: int,
                 seed: int = SEED) -> tuple[list[str], torch.Tensor]:  # fmt: skip
    """The ``count`` starts: zero, the anchors, then noise at ``NOISE_SCALES`` (cycled, growing).

    Anchors are kept to at most ``count - 2`` so that at least one noise start remains
    (for ``count >= 3``). Returns their names and ``(count, *state)``.
    """
    if count < 1:
        raise ValueError("at least one start")
    state = z_star.shape[1:]
    names, z0 = ["zero"], [torch.zeros(state, dtype=z_star.dtype)]
    for name, z in list(anchors)[:anchor_room(count)]:
        names.append(name)
        z0.append(z.reshape(state).to(z_star.dtype).cpu())
    rms = float(z_star.detach().double().pow(2).mean().sqrt()) or 1.0
    generator = torch.Generator().manual_seed(seed)
    k = 0
    while len(names) < count:
        scale = NOISE_SCALES[k % len(NOISE_SCALES)] * (10 ** (k // len(NOISE_SCALES)))
        names.append(f"noise x{scale:g}")
        z0.append(rms * scale * torch.randn(state, generator=generator, dtype=torch.float64).to(z_star.dtype))
        k += 1
    return names, torch.stack(z0)


def uniqueness(f: Function, z_star: torch.Tensor, z0s: torch.Tensor, names: Sequence[str],
               settings: SolverSettings, decide: Callable[[torch.Tensor], torch.Tensor],
               radius: float | None = None) -> Uniqueness:  # fmt: skip
    """Solve the case from ``z0s`` (``(K, *state)``, start 0 the zero start) in one batch.

    ``f`` is the case's update (batch 1); it is repeated K times through ``f.rows`` when
    it has it, else called on K copies (it must then broadcast its batch of one).
    ``decide(z)``: ``(K, *state) -> (K,)`` class indices. ``z_star``: the zero start's
    own solve (its end state is the reference of the distances).
    """
    k = z0s.shape[0]
    repeated = f.rows(torch.zeros(k, dtype=torch.long, device=z_star.device)) if hasattr(f, "rows") else f
    with torch.no_grad():
        result = solve(repeated, z0s.to(z_star.device), **settings.options())
        ends = result.z.clone()
        ends[0] = z_star[0]  # the reference is the decision's own solve, not its batched twin
        decisions = decide(ends)
    flat = ends.reshape(k, -1).double().cpu()
    converged = list(result.converged.tolist())
    reference = flat[0]
    distances = ((flat - reference).norm(dim=1) / reference.norm().clamp_min(1e-30)).tolist()
    allowed = settings.tol / max(1.0 - radius, 0.05) if radius is not None else settings.tol * 20
    same = max(SAME_FACTOR * allowed, MIN_SAME_DISTANCE)
    return Uniqueness(
        starts=tuple(names),
        distances=tuple(float(d) for d in distances),
        decisions=tuple(int(d) for d in decisions.tolist()),
        converged=tuple(bool(c) for c in converged),
        clusters=cluster(flat, converged, same),
        same_distance=same,
    )


# --------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class Stability:
    """A case's fixed point: how stable (``local``), how unique (``uniqueness``), and what it cost."""

    local: LocalStability
    uniqueness: Uniqueness
    prediction: int
    class_names: tuple[str, ...]
    seconds_local: float
    seconds_uniqueness: float
    anchors: tuple[Anchor, ...] = ()  # the class equilibria among the starts, in start order

    def verdict(self) -> tuple[bool, list[str]]:
        """``(trustworthy, lines)``: the "How far to trust it" sentences."""
        local, unique = self.local, self.uniqueness
        lines = []
        ok = local.stable and unique.unique and unique.decision_unique
        if local.stable:
            rate = f"contracts by {local.spectral_radius:.2f} per step"
            if local.iterations_to_tol is not None:
                rate += f", ~{local.iterations_to_tol:.0f} plain steps to {local.tol:g}"
            lines.append(f"stable ({rate})")
        else:
            lines.append(f"not locally stable: the Jacobian's spectral radius is {local.spectral_radius:.2f} (>= 1), "
                         "so nearby states are not pulled back to this equilibrium")  # fmt: skip
        if unique.unique:
            lines.append(f"the only equilibrium found from {unique.n_starts} starts")
        else:
            parts = []
            if unique.n_equilibria > 1:
                parts.append(f"{unique.n_equilibria} distinct equilibria found from {unique.n_starts} starts")
            failed = [unique.starts[i] for i, c in enumerate(unique.converged) if not c]
            if failed:
                parts.append(f"no convergence from {', '.join(failed)}")
            flipped = sorted({self.class_names[d] for d in unique.decisions if d != self.prediction})
            if flipped:
                parts.append(f"other starts decide {', '.join(flipped)}")
            lines.append("warning: " + "; ".join(parts))
        if not unique.decision_unique and unique.unique:
            lines.append("warning: starts reach the same state but decide differently")
        return ok, lines

    def warnings(self) -> list[str]:
        """The plain warnings an explanation, a report or a triage list carries (none for a stable, unique point).

        A spectral radius >= 1, a second equilibrium, a start that does not settle, or a
        start that decides another class: each makes the decision depend on where the
        solver happened to start, which no attribution of it can show.
        """
        local, unique = self.local, self.uniqueness
        found = []
        if not local.stable:
            found.append(f"The equilibrium is not locally stable: the Jacobian's spectral radius there is "
                         f"{local.spectral_radius:.2f} (>= 1), so nearby states are not pulled back to it and "
                         "a small change of the input or the solver can land elsewhere.")  # fmt: skip
        if unique.n_equilibria > 1:
            found.append(f"{unique.n_equilibria} distinct equilibria were found from {unique.n_starts} starting "
                         "points: the decision depends on where the solver starts.")  # fmt: skip
        failed = [unique.starts[i] for i, c in enumerate(unique.converged) if not c]
        if failed:
            found.append(f"The solve did not settle from {len(failed)} of {unique.n_starts} starting points "
                         f"({', '.join(failed)}).")  # fmt: skip
        flipped = sorted({self.class_names[d] for d in unique.decisions if d != self.prediction})
        if flipped:
            found.append(f"Solved from other starting points the model decides {', '.join(flipped)} instead of "
                         f"{self.class_names[self.prediction]}.")  # fmt: skip
        return found

    def to_dict(self) -> dict:
        return {
            "prediction": self.class_names[self.prediction],
            **{k: _finite(v) for k, v in asdict(self.local).items()},
            "unique": self.uniqueness.unique,
            "decision_unique": self.uniqueness.decision_unique,
            "n_equilibria": self.uniqueness.n_equilibria,
            "starts": list(self.uniqueness.starts),
            "distances": [_finite(d) for d in self.uniqueness.distances],
            "decisions": [self.class_names[d] for d in self.uniqueness.decisions],
            "start_converged": list(self.uniqueness.converged),
            "seconds_local": self.seconds_local,
            "seconds_uniqueness": self.seconds_uniqueness,
        }


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def head_decider(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(K, N+1, d) -> (K,)``: the class the model's head reads from f(z)'s fused row, as ``DEQFusion.run`` does."""

    def decide_from(f: Function) -> Callable[[torch.Tensor], torch.Tensor]:
        def decide(z: torch.Tensor) -> torch.Tensor:
            k = z.shape[0]
            repeated = f.rows(torch.zeros(k, dtype=torch.long, device=z.device)) if hasattr(f, "rows") else f
            return model.head(repeated(z)[:, model.n_modalities]).argmax(dim=1).cpu()

        return decide

    return decide_from


def case_stability(model, inputs: Inputs, starts: int = 8, anchors: Sequence[Anchor] = (),
                   solver: SolverSettings | None = None) -> Stability:  # fmt: skip
    """``Stability`` of one case (inputs ``(1, *shape)`` each) of an equilibrium model with a ``head``.

    ``anchors``: typical equilibria of the classes (``class_anchors``); those of the
    class this case is decided as are left out of its starts.
    """
    settings = solver or model.config.solver
    inputs = [x.to(model.device) for x in inputs]
    started = time.perf_counter()
    with torch.no_grad():
        f, z0 = model.bind(inputs)
        result = solve(f, z0, **settings.options())
        image = f(result.z)
        logits = model.head(image[:, model.n_modalities])
    prediction = int(logits.argmax(dim=1))
    head_gradient = torch.zeros_like(image)
    fused = image[:, model.n_modalities].detach().requires_grad_()
    with torch.enable_grad():  # d logit / d fused at the equilibrium: the head's row for a linear head, any head else
        (gradient,) = torch.autograd.grad(model.head(fused)[0, prediction], fused)
    head_gradient[0, model.n_modalities] = gradient[0].detach()
    local = local_stability(f, result.z, result.relative_residuals[0], int(result.best_iteration[0]),
                            int(result.iterations[0]), bool(result.converged[0]), settings.tol, head_gradient)  # fmt: skip
    seconds_local = time.perf_counter() - started
    started = time.perf_counter()
    names = [(f"equilibrium of {model.config.class_names[a.class_index]} ({a.case_id})", a.z)
             for a in starting_anchors(anchors, prediction, starts)]  # fmt: skip
    labels, z0s = start_states(result.z.cpu(), names, starts)
    with torch.no_grad():
        found = uniqueness(f, result.z, z0s, labels, settings, head_decider(model)(f), local.spectral_radius)
    return Stability(local, found, prediction, tuple(model.config.class_names), seconds_local,
                     time.perf_counter() - started, starting_anchors(anchors, prediction, starts))  # fmt: skip


def class_anchors(model, data, per_class: int = ANCHOR_CASES, solver: SolverSettings | None = None) -> tuple[Anchor, ...]:
    """Each class's typical equilibrium: of its first ``per_class`` cases, the one nearest the class's mean z*."""
    settings = solver or model.config.solver
    labels = np.asarray(data.labels)
    anchors = []
    for c in range(len(model.config.class_names)):
        rows = np.flatnonzero(labels == c)[:per_class]
        if len(rows) == 0:
            continue
        inputs = [x[torch.as_tensor(rows)].to(model.device) for x in data.inputs]
        with torch.no_grad():
            f, z0 = model.bind(inputs)
            z = solve(f, z0, **settings.options()).z.cpu()
        flat = z.reshape(len(rows), -1)
        nearest = int((flat - flat.mean(dim=0)).norm(dim=1).argmin())
        anchors.append(Anchor(c, data.ids[int(rows[nearest])], z[nearest].clone()))
    return tuple(anchors)


# --------------------------------------------------------------------------- a split


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    from deq_core.explain.faithfulness import spearman

    if len(a) < 3:
        return None
    value = spearman(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class StabilitySurvey:
    """``Stability`` of each case of a split, and what they say together."""

    case_ids: tuple[str, ...]
    labels: tuple[int, ...]
    results: tuple[Stability, ...]

    @property
    def radii(self) -> np.ndarray:
        return np.array([r.local.spectral_radius for r in self.results])

    @property
    def iterations(self) -> np.ndarray:
        return np.array([r.local.iterations for r in self.results])

    @property
    def errors(self) -> np.ndarray:
        return np.array([int(r.prediction != y) for r, y in zip(self.results, self.labels)])

    def multiple(self) -> list[str]:
        """Cases with more than one equilibrium found."""
        return [i for i, r in zip(self.case_ids, self.results) if r.uniqueness.n_equilibria > 1]

    def summary(self) -> dict:
        radii = self.radii
        rates = [r.local.contraction_rate for r in self.results if r.local.contraction_rate is not None]
        seconds_local = [r.seconds_local for r in self.results]
        seconds_unique = [r.seconds_uniqueness for r in self.results]
        return {
            "n": len(self.results),
            "starts": self.results[0].uniqueness.n_starts if self.results else 0,
            "spectral_radius": {"median": float(np.median(radii)), "p95": float(np.percentile(radii, 95)),
                                "max": float(radii.max())},  # fmt: skip
            "contraction_rate": {"median": float(np.median(rates)) if rates else None,
                                 "max": float(np.max(rates)) if rates else None},  # fmt: skip
            "stable_fraction": float(np.mean(radii < 1)),
            "unique_fraction": float(np.mean([r.uniqueness.unique for r in self.results])),
            "decision_unique_fraction": float(np.mean([r.uniqueness.decision_unique for r in self.results])),
            "multiple_equilibria": self.multiple(),
            "not_unique": [i for i, r in zip(self.case_ids, self.results) if not r.uniqueness.unique],
            "radius_iterations_spearman": _spearman(radii.tolist(), self.iterations.tolist()),
            "radius_error_spearman": _spearman(radii.tolist(), self.errors.tolist()),
            "error_rate": float(self.errors.mean()),
            "seconds_local_median": float(np.median(seconds_local)),
            "seconds_uniqueness_median": float(np.median(seconds_unique)),
            "seconds_local_max": float(np.max(seconds_local)),
            "seconds_uniqueness_max": float(np.max(seconds_unique)),
        }


def survey(model, data, starts: int = 8, solver: SolverSettings | None = None,
           progress: Callable[[float, str], None] | None = None) -> StabilitySurvey:  # fmt: skip
    """``case_stability`` of every case of ``data``, with the class anchors of ``data`` itself."""
    anchors = class_anchors(model, data, solver=solver)
    results = []
    for i in range(len(data)):
        if progress and i % 10 == 0:
            progress(i / max(len(data), 1), f"case {i + 1} of {len(data)}")
        inputs = [x[i : i + 1] for x in data.inputs]
        results.append(case_stability(model, inputs, starts, anchors, solver))
    return StabilitySurvey(tuple(data.ids), tuple(int(y) for y in data.labels), tuple(results))


def format_survey(found: StabilitySurvey, title: str) -> str:
    s = found.summary()
    r = s["spectral_radius"]
    rate = s["contraction_rate"]["median"]
    lines = [
        title,
        f"  spectral radius      median {r['median']:.3f}  p95 {r['p95']:.3f}  max {r['max']:.3f}"
        f"  (stable: {s['stable_fraction']:.0%})",
        f"  solver contraction   median {rate:.3f} per step" if rate is not None else "  solver contraction   n/a",
        f"  unique equilibrium   {s['unique_fraction']:.1%} of cases from {s['starts']} starts;"
        f" same decision {s['decision_unique_fraction']:.1%}",
        f"  > 1 equilibrium      {', '.join(s['multiple_equilibria']) or 'none'}",
        f"  radius vs iterations Spearman {_fmt(s['radius_iterations_spearman'])};"
        f" radius vs errors {_fmt(s['radius_error_spearman'])} (error rate {s['error_rate']:.1%})",
        f"  per case             stability {s['seconds_local_median'] * 1e3:.1f} ms,"
        f" uniqueness {s['seconds_uniqueness_median'] * 1e3:.1f} ms (medians; max {s['seconds_local_max'] * 1e3:.1f}"
        f" and {s['seconds_uniqueness_max'] * 1e3:.1f} ms)",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def main(argv: list[str] | None = None, prog: str = "python -m deq_core.stability") -> int:
    """``deq-lens stability``: local stability and uniqueness of a split's equilibria, as a table or JSON."""
    import argparse
    import json
    import sys
    from pathlib import Path

    from deq_core.data import load_dataset
    from deq_core.engine.checkpoint import ModelLoadError
    from deq_core.lens import Lens

    parser = argparse.ArgumentParser(prog=prog, description="Is each decision's fixed point stable and the only one?")
    parser.add_argument("--model", required=True, type=Path, help="model folder (a DEQ)")
    parser.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--cases", type=int, default=None, help="cases, spread evenly over the split (default: all)")
    parser.add_argument("--starts", type=int, default=8, help="starting points per case (zero, class equilibria, noise)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (timings: measure with 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.cases is not None and args.cases < 1:
            raise ValueError(f"--cases must be at least 1, got {args.cases}")
        if args.starts < 1:
            raise ValueError(f"--starts must be at least 1, got {args.starts}")
        lens = Lens.open(args.model, device=args.device, trust_code=trust_for(args.trust_code, args.model))
        if lens.config.architecture != "deq" or not hasattr(lens.model, "head"):
            raise ValueError(f"{args.model} is a {lens.config.architecture!r} model: it decides from no fixed point")
        data = load_dataset(lens.config.dataset, args.split, modalities=lens.config.modalities)
        if args.cases is not None and args.cases < len(data):
            data = data.subset(np.unique(np.linspace(0, len(data) - 1, args.cases).round().astype(int)).tolist())
        # One uncounted case first: a process's first autograd and solve pay a one-time
        # warm-up (about 0.3 s) that is no per-case cost.
        case_stability(lens.model, [x[:1] for x in data.inputs], min(args.starts, 2))
        found = survey(lens.model, data, args.starts)
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.json:
        print(json.dumps({
            "model": args.model.name, "dataset": data.name, "split": data.split, "threads": threads,
            **found.summary(),
            "cases": [{"id": i, "label": lens.class_names[y], **r.to_dict()}
                      for i, y, r in zip(found.case_ids, found.labels, found.results)],
        }))  # fmt: skip
    else:
        print(format_survey(found, f"{args.model.name} on {data.name}/{data.split}, {len(data)} cases, {threads} thread(s)"))
    return 0
