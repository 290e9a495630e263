"""Fixed-point solvers that stop per sample and can record their trajectory.

Every solver looks for z* = f(z*) for a batch of independent problems. Three
properties matter for explanation tools and are guaranteed here:

* per-sample stopping: a sample that has converged (or diverged) is frozen while
  the others go on, so its answer never depends on its batch-mates;
* lowest-residual return: each sample gets back the iterate whose residual
  ||f(z) - z|| was smallest, together with that residual;
* honest traces: residual traces are returned at each sample's true length.

Where the time goes, and what keeps it down: without autograd the loop runs in
inference mode; a batch of one sample takes ``_SingleTracker`` and, for Anderson,
``_anderson_single`` (scalars on the host, no masks); when f offers ``rows(index)`` a
batched solve drops the samples that have stopped (``_Flat``); the batched tracker
replaces whole-state ``where``s by aliases or row copies (``_select_rows``); and the
batched Anderson reuses its thread's history buffers (``_Scratch``).
"""

from __future__ import annotations

import enum
import inspect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

Function = Callable[[torch.Tensor], torch.Tensor]

METHODS = ("fixed_point", "anderson", "broyden")
STOP_MODES = ("abs", "rel")


class SolveStatus(enum.StrEnum):
    """How one sample's solve ended, from best to worst.

    A ``StrEnum``: a member equals its string (``SolveStatus.CONVERGED == "converged"``),
    hashes like it and ``json.dumps`` writes it as that string, so reports, caches and
    comparisons with the plain strings are unchanged. Models without a solve have no
    status here: a feed-forward model's ``SolveResult`` is ``None``.
    """

    CONVERGED = "converged"  # the stop criterion was met
    MAX_ITER = "max_iter"  # ran out of iterations first
    DIVERGED = "diverged"  # the residual or the iterate ran away (see BLOWUP_FACTOR)


STATUSES = tuple(SolveStatus)

# A residual this many times larger than the smallest one seen, or an iterate this
# many times larger than the problem's starting scale, means the iteration is
# running away from any fixed point (and far out, rounding can fake a zero residual).
BLOWUP_FACTOR = 1e6
# Compact the working set once the evaluations wasted on stopped samples reach this many
# per running sample (``_Tracker.should_compact``). It replaced "compact once an eighth of
# the batch has stopped", which copied Anderson's history for batches whose cases were all
# about to stop; `python benchmarks/solvers.py` measures the difference (docs/experiments.md).
COMPACT_RATIO = 0.5
_TINY = 1e-30
# The largest scratch buffer (one of Anderson's histories) a thread keeps for its next solve,
# and how many it keeps (``_Scratch``): at batch 256 and state 512 the three take 9 MB.
_SCRATCH_BYTES = 32 * 2**20
_SCRATCH_KEPT = 3


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one batched solve.

    Attributes:
        z: ``(batch, *state)`` lowest-residual iterate of each sample.
        iterations: ``(batch,)`` f-evaluations each sample used before it stopped.
        absolute_residuals: per sample, ``(iterations,)`` trace of ||f(z_k) - z_k||.
        relative_residuals: per sample, trace of ||f(z_k) - z_k|| / ||f(z_k)||.
        best_iteration: ``(batch,)`` index k of the returned iterate.
        converged: ``(batch,)`` bool, the stop criterion was met.
        status: per sample, a ``SolveStatus``.
        function_evaluations: f calls made on the whole batch.
        states: if recorded, ``(steps, batch, *state)`` on the CPU: iterate z_k of
            every step; a sample's rows past its ``iterations`` repeat its last state.
    """

    z: torch.Tensor
    iterations: torch.Tensor
    absolute_residuals: tuple[torch.Tensor, ...]
    relative_residuals: tuple[torch.Tensor, ...]
    best_iteration: torch.Tensor
    converged: torch.Tensor
    status: tuple[SolveStatus, ...]
    method: str
    tol: float
    stop_mode: str
    max_iter: int
    function_evaluations: int
    states: torch.Tensor | None = None

    @property
    def final_absolute_residual(self) -> torch.Tensor:
        """``(batch,)`` residual of the returned iterate."""
        return torch.stack([t[k] for t, k in zip(self.absolute_residuals, self.best_iteration.tolist())])

    @property
    def final_relative_residual(self) -> torch.Tensor:
        return torch.stack([t[k] for t, k in zip(self.relative_residuals, self.best_iteration.tolist())])


def _traces(matrix: torch.Tensor, iterations: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample traces from the ``(max_iter, batch)`` matrix, as views of one new CPU tensor.

    Each sample's first ``iterations`` entries, in one masked copy and one ``split``:
    no 2 x batch clones, and no Python loop over the batch (at batch 256 that loop cost
    about 5% of a fusion solve).
    """
    steps = torch.arange(matrix.shape[0], device=matrix.device)
    kept = matrix.T[steps < iterations[:, None]].cpu()  # sample by sample, each in step order
    return torch.split(kept, iterations.tolist())


def _select_rows(mask: torch.Tensor, count: int, source: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask[:, None], source, base)`` for ``(rows, n)`` tensors; ``count`` = mask's trues.

    The same values bit for bit, but all-false and all-true masks return ``base`` or
    ``source`` itself, and on the CPU the other cases copy whole rows (``index_copy_``
    into a clone), several times faster than ``where``'s broadcast mask.
    """
    rows = mask.shape[0]
    if count == 0:
        return base
    if count == rows:
        return source
    if source.device.type != "cpu":  # index_copy_'s nonzero would be one more host sync
        return torch.where(mask[:, None], source, base)
    if 2 * count >= rows:  # clone the larger part, copy the smaller
        out, index, rest = source.clone(), (~mask).nonzero().flatten(), base
    else:
        out, index, rest = base.clone(), mask.nonzero().flatten(), source
    return out.index_copy_(0, index, rest.index_select(0, index))


class _Tracker:
    """Per-sample bookkeeping shared by all solvers: stop, freeze, best iterate, traces."""

    def __init__(self, z0: torch.Tensor, tol: float, stop_mode: str, max_iter: int, record: bool):
        batch = z0.shape[0]
        self.tol, self.stop_mode, self.max_iter, self.record = tol, stop_mode, max_iter, record
        self.done = torch.zeros(batch, dtype=torch.bool, device=z0.device)
        self.diverged = torch.zeros_like(self.done)
        self.converged = torch.zeros_like(self.done)
        self.iterations = torch.zeros(batch, dtype=torch.long, device=z0.device)
        self.best_z = z0.clone()
        self.best_residual = torch.full((batch,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.smallest_absolute = self.best_residual.clone()
        self.best_iteration = torch.zeros(batch, dtype=torch.long, device=z0.device)
        self.absolute = torch.zeros(max_iter, batch, dtype=z0.dtype, device=z0.device)
        self.relative = torch.zeros_like(self.absolute)
        self.states: list[torch.Tensor] = []
        self.step = 0
        self.stopped = 0  # samples of the working set that have stopped, as of the last finished()
        self.carried = 0  # evaluations of stopped samples since the last compaction (should_compact)
        # Once compacted, the per-sample tensors above hold only the working set: working
        # row i is sample rows[i] of the batch, and ``_full`` keeps every sample's last state.
        self.rows: torch.Tensor | None = None
        self._full: dict[str, torch.Tensor] = {}
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None  # observe's best-iterate update, for _settle
        self.counted = False  # ``stopped`` counts the working set as of the last observe

    _PER_SAMPLE = ("done", "diverged", "converged", "iterations", "best_z", "best_residual", "smallest_absolute",
                   "best_iteration", "runaway_norm")  # fmt: skip
    _TRACES = ("absolute", "relative")

    def observe(self, z: torch.Tensor, fz: torch.Tensor, residual: torch.Tensor | None = None) -> None:
        """Record iterate z (flattened ``(batch, n)``) and its image f(z); update who is done.

        The best iterate ``best_z`` is settled by the next ``finished()``, whose host sync
        also counts the samples that improved: when all of them did (most iterations),
        ``best_z`` becomes z itself instead of a ``where`` over the whole state.
        """
        self._settle()
        k = self.step
        done = self.done
        active = ~done
        # Both residuals are computed into their row of the traces (entries past a sample's
        # stop are cut off in result()); linalg.vector_norm is what Tensor.norm calls,
        # without its Python dispatch.
        absolute = torch.linalg.vector_norm(fz - z if residual is None else residual, dim=1, out=self.absolute[k])
        image_norm = torch.linalg.vector_norm(fz, dim=1)
        # NaN and inf both become inf: one op instead of isfinite + where.
        absolute.nan_to_num_(nan=float("inf"))
        relative = torch.div(absolute, image_norm + _TINY, out=self.relative[k]).nan_to_num_(nan=float("inf"))
        self.iterations += active
        if self.record:
            previous = self.states[-1] if self.states else z
            self.states.append(torch.where(active[:, None], z, previous.to(z.device)).detach().cpu())

        # "Lowest residual" is measured the way the stop is, so the returned iterate
        # is the one the converged flag speaks about.
        measure = absolute if self.stop_mode == "abs" else relative
        better = active & (measure < self.best_residual)
        self._pending = (better, z)
        self.best_residual = torch.where(better, measure, self.best_residual)
        self.best_iteration.masked_fill_(better, k)
        # A stopped sample's smallest residual is never read again (blowup is masked by active).
        torch.minimum(self.smallest_absolute, absolute, out=self.smallest_absolute)
        z_norm = torch.linalg.vector_norm(z, dim=1)
        if k == 0:  # the problem's own scale, to recognise an iterate that ran off to infinity
            self.runaway_norm = BLOWUP_FACTOR * (z_norm + image_norm + _TINY)
        runaway = z_norm > self.runaway_norm
        hit = active & (measure <= self.tol) & ~runaway
        blowup = active & ((absolute > BLOWUP_FACTOR * self.smallest_absolute) | runaway | absolute.isinf())
        self.converged |= hit
        self.diverged |= blowup & ~hit
        self.done |= hit | blowup
        self.step += 1
        self.counted = False

    def _settle(self, improved: int | None = None) -> None:
        """Apply the last ``observe``'s best-iterate update; ``improved`` counts its improved samples."""
        if self._pending is None:
            return
        better, z = self._pending
        self._pending = None
        if improved is None:
            improved = int(better.sum())
        self.best_z = _select_rows(better, improved, z, self.best_z)

    def keep_done(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """``new`` for samples still running, ``old`` for those that have stopped: ``(batch, n)``.

        May return ``new`` or ``old`` itself; after ``finished()`` no ``where`` is needed
        while no sample of the working set has stopped.
        """
        if not self.counted:
            return torch.where(self.done[:, None], old, new)
        return _select_rows(self.done, self.stopped, old, new)

    def finished(self) -> bool:
        if self.step >= self.max_iter:
            self._settle()
            return True
        # The one host sync per iteration: it is what lets the loop end early (and it
        # tells _settle how many samples improved).
        if self._pending is None:
            self.stopped = int(self.done.sum())
        else:
            self.stopped, improved = torch.stack((self.done.sum(), self._pending[0].sum())).tolist()
            self._settle(improved)
        self.counted = True
        return self.stopped == len(self.done)

    def should_compact(self) -> bool:
        """Worth dropping the stopped samples from the working set before the next evaluation.

        A ski-rental rule: compacting copies every running sample's state (and the
        solver's history), once; not compacting evaluates each stopped sample again,
        every iteration. Compact when the evaluations spent on stopped samples since the
        last compaction, this one included, reach ``COMPACT_RATIO`` times the samples a
        compaction would copy. Samples of a batch tend to stop within an iteration or
        two of each other, and then the copy is not worth it; a long tail is cut off
        after a bounded waste.
        """
        if self.record or self.stopped == 0:
            return False
        self.carried += self.stopped
        return self.carried >= COMPACT_RATIO * (len(self.done) - self.stopped)

    def compact(self) -> torch.Tensor:
        """Keep only the samples still running; returns their indices in the working set.

        Stopped samples keep their results in ``_full``; the solver indexes its own
        per-sample tensors (and f, through ``rows``) with the returned indices.
        """
        self._store()
        keep = (~self.done).nonzero().flatten()
        for name in self._PER_SAMPLE:
            setattr(self, name, getattr(self, name)[keep])
        for name in self._TRACES:
            setattr(self, name, getattr(self, name)[:, keep])
        self.rows = keep if self.rows is None else self.rows[keep]
        self.stopped = self.carried = 0
        return keep

    def gather(self) -> None:
        """After the loop (in its inference mode): every sample's state back in the batch's tensors."""
        self._settle()
        if self.rows is not None:
            self._store()
            for name, tensor in self._full.items():
                setattr(self, name, tensor)
            self.rows = None

    def _store(self) -> None:
        """Write the working set's state into the whole batch's (the first time: take it as is)."""
        self._settle()
        if self.rows is None:
            self._full = {name: getattr(self, name) for name in (*self._PER_SAMPLE, *self._TRACES)}
            # best_z may be an iterate itself (_settle), even the caller's z0: the rows
            # written into it later must not reach the solver's or the caller's tensors.
            self._full["best_z"] = self.best_z.clone()
            return
        for name in self._PER_SAMPLE:
            self._full[name][self.rows] = getattr(self, name)
        for name in self._TRACES:
            self._full[name][:, self.rows] = getattr(self, name)

    def result(self, shape: torch.Size, method: str, evaluations: int) -> SolveResult:
        # Called outside the solve's inference mode: every tensor handed out is a copy, so
        # callers can attach gradients to z or write into the others.
        status = tuple(
            SolveStatus.CONVERGED if c else SolveStatus.DIVERGED if d else SolveStatus.MAX_ITER
            for c, d in zip(self.converged.tolist(), self.diverged.tolist())
        )
        states = None
        if self.record:
            states = torch.stack(self.states).reshape(len(self.states), *shape)
        return SolveResult(
            z=self.best_z.reshape(shape).clone(),
            iterations=self.iterations.clone(),
            absolute_residuals=_traces(self.absolute, self.iterations),
            relative_residuals=_traces(self.relative, self.iterations),
            best_iteration=self.best_iteration.clone(),
            converged=self.converged.clone(),
            status=status,
            method=method,
            tol=self.tol,
            stop_mode=self.stop_mode,
            max_iter=self.max_iter,
            function_evaluations=evaluations,
            states=states,
        )


class _SingleTracker:
    """The rules of ``_Tracker`` for a batch of one sample, with its scalars on the host.

    One sample needs no masks: its three norms come to the host once per iteration
    (the one sync the batched tracker also makes, for ``done.all()``) and every rule
    is a float comparison. That is a handful of tensor operations per iteration
    instead of about thirty, which is most of a solve's cost at batch 1, where one
    f-evaluation of the fusion model takes about as long as thirty small operations.
    """

    def __init__(self, z0: torch.Tensor, tol: float, stop_mode: str, max_iter: int, record: bool):
        self.tol, self.stop_mode, self.max_iter, self.record = tol, stop_mode, max_iter, record
        self.dtype, self.device = z0.dtype, z0.device
        self.done = self.converged = self.diverged = False
        self.best_z = z0
        self.best_residual = self.smallest_absolute = math.inf
        self.best_iteration = 0
        self.absolute: list[float] = []
        self.relative: list[float] = []
        self.states: list[torch.Tensor] = []
        self.step = 0

    @staticmethod
    def norms(z: torch.Tensor, fz: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``(3,)`` float64 ||f(z) - z||, ||f(z)||, ||z||, computed in z's dtype as ``_Tracker`` does."""
        r = fz - z if residual is None else residual
        return torch.linalg.vector_norm(torch.cat([r, fz, z]), dim=1).double()

    def observe(
        self,
        z: torch.Tensor,
        fz: torch.Tensor,
        residual: torch.Tensor | None = None,
        norms: Sequence[float] | None = None,
    ) -> None:
        """As ``_Tracker.observe``; ``norms`` (host floats from ``norms()``) saves the sync here."""
        absolute, image_norm, z_norm = self.norms(z, fz, residual).tolist() if norms is None else norms
        k = self.step
        absolute = math.inf if math.isnan(absolute) else absolute
        relative = absolute / (image_norm + _TINY)
        relative = math.inf if math.isnan(relative) else relative
        self.absolute.append(absolute)
        self.relative.append(relative)
        if self.record:
            self.states.append(z.detach().cpu())
        measure = absolute if self.stop_mode == "abs" else relative
        if measure < self.best_residual:
            self.best_z, self.best_residual, self.best_iteration = z, measure, k
        self.smallest_absolute = min(self.smallest_absolute, absolute)
        if k == 0:
            self.scale = z_norm + image_norm + _TINY
        runaway = z_norm > BLOWUP_FACTOR * self.scale
        hit = measure <= self.tol and not runaway
        blowup = absolute > BLOWUP_FACTOR * self.smallest_absolute or runaway or math.isinf(absolute)
        self.converged, self.diverged, self.done = hit, blowup and not hit, hit or blowup
        self.step += 1

    def keep_done(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return old if self.done else new

    def finished(self) -> bool:
        return self.done or self.step >= self.max_iter

    def should_compact(self) -> bool:
        return False  # one sample: the loop simply ends when it stops

    def gather(self) -> None:
        pass  # nothing was compacted

    def result(self, shape: torch.Size, method: str, evaluations: int) -> SolveResult:
        status = (
            SolveStatus.CONVERGED if self.converged else SolveStatus.DIVERGED if self.diverged else SolveStatus.MAX_ITER
        )
        return SolveResult(
            z=self.best_z.reshape(shape).clone(),
            iterations=torch.tensor([self.step], device=self.device),
            absolute_residuals=(torch.tensor(self.absolute, dtype=self.dtype),),
            relative_residuals=(torch.tensor(self.relative, dtype=self.dtype),),
            best_iteration=torch.tensor([self.best_iteration], device=self.device),
            converged=torch.tensor([self.converged], device=self.device),
            status=(status,),
            method=method,
            tol=self.tol,
            stop_mode=self.stop_mode,
            max_iter=self.max_iter,
            function_evaluations=evaluations,
            states=torch.stack(self.states).reshape(len(self.states), *shape) if self.record else None,
        )


class _Flat:
    """f on flattened states ``(rows, n)``; ``rows(index)`` restricts it to some of its samples.

    The restriction needs f's cooperation: an f with a ``rows(index)`` method returning
    f for those samples of its batch (``EquilibriumModel.bind`` gives one). With it,
    the batched solvers drop stopped samples instead of evaluating them until the
    slowest sample is done; without it, f is always evaluated on the whole batch.
    """

    def __init__(self, f: Function, state_shape: tuple[int, ...], restrict: bool = True):
        self.f, self.state_shape = f, state_shape
        self.can_restrict = restrict and callable(getattr(f, "rows", None))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(z.reshape(len(z), *self.state_shape)).reshape(len(z), -1)

    def rows(self, index: torch.Tensor) -> _Flat:
        return _Flat(self.f.rows(index), self.state_shape)


def _compacted(g: _Flat, tracker: _Tracker, *tensors: torch.Tensor | None):
    """``(g, *tensors)`` restricted to the running samples, when that is possible and pays."""
    if not (g.can_restrict and tracker.should_compact()):
        return (g, *tensors)
    keep = tracker.compact()
    return (g.rows(keep), *(None if t is None else t[keep] for t in tensors))


def _fixed_point(g: _Flat, z: torch.Tensor, tracker: _Tracker, *, damping: float = 1.0) -> int:
    """Plain (``damping`` = 1) or damped iteration z <- (1 - damping) z + damping f(z)."""
    evaluations = 0
    finished = tracker.finished()
    while not finished:
        g, z = _compacted(g, tracker, z)
        fz = g(z)
        evaluations += 1
        tracker.observe(z, fz)
        finished = tracker.finished()  # before keep_done, which reads its count of stopped samples
        if not finished:
            z = tracker.keep_done(z, fz if damping == 1 else (1 - damping) * z + damping * fz)
    return evaluations


def _remember(F, R, X, slot: int, m: int, z, fz, r) -> torch.Tensor:
    """Store f(z), the residual (and z, for beta < 1) in history ``slot``; return ``(batch, m)`` r R^T.

    Shared by the batched and the one-sample Anderson so both run the same kernels.
    """
    F[:, slot] = fz
    R[:, slot] = r
    if X is not None:
        X[:, slot] = z
    # r R^T reads R along its contiguous rows: faster than R r on the CPU.
    return torch.bmm(R[:, slot : slot + 1], R[:, :m].transpose(1, 2))[:, 0]


class _Scratch:
    """Uninitialised buffers that one thread's solves pass on to each other.

    A freshly allocated buffer of a few MB is mapped by the kernel page by page as the
    solve first writes into it: Anderson's histories at batch 256 (9 MB) cost about
    1700 page faults per solve, several percent of its time. A buffer kept from this
    thread's previous solve is mapped already. Only inference-mode solves borrow them
    (an inference tensor cannot enter autograd), a solve nested in another's f finds
    them lent out and allocates its own, and a buffer over ``_SCRATCH_BYTES`` is not kept.
    """

    _local = threading.local()

    def __init__(self) -> None:
        self.lent: list[torch.Tensor] = []

    @classmethod
    def _free(cls) -> list[torch.Tensor]:
        if not hasattr(cls._local, "free"):
            cls._local.free = []
        return cls._local.free

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised ``shape`` tensor, from a kept buffer when one fits."""
        if not torch.is_inference_mode_enabled():
            return torch.empty(shape, dtype=dtype, device=device)
        need, free = math.prod(shape), self._free()
        for i, buffer in enumerate(free):
            if buffer.dtype == dtype and buffer.device == device and buffer.numel() >= need:
                buffer = free.pop(i)
                break
        else:
            buffer = torch.empty(need, dtype=dtype, device=device)
        self.lent.append(buffer)
        return buffer[:need].view(shape)

    def give_back(self) -> None:
        """Return what ``take`` lent: the thread keeps the ``_SCRATCH_KEPT`` last returned that fit."""
        free = self._free()
        free.extend(b for b in self.lent if b.numel() * b.element_size() <= _SCRATCH_BYTES)
        self.lent.clear()
        del free[:-_SCRATCH_KEPT]


def _anderson(
    g: Function,
    z: torch.Tensor,
    tracker: _Tracker,
    *,
    memory: int = 6,
    beta: float = 1.0,
    lam: float = 1e-4,
) -> int:
    """Anderson acceleration, solved per sample as a bordered least-squares system.

    The regulariser is ``lam`` times the newest squared residual ||f(z_k) - z_k||^2,
    the smallest in the window once the iteration converges: scaled to the window's
    mean (dominated by its oldest, largest residual) it still swamps the Gram matrix
    near convergence, a pitfall of the reference settings (docs/model.md), and costs 1-2 extra f-evaluations.
    """
    if isinstance(tracker, _SingleTracker):
        return _anderson_single(g, z, tracker, memory, beta, lam)
    scratch = _Scratch()
    try:
        return _anderson_batched(g, z, tracker, scratch, memory, beta, lam)
    finally:
        scratch.give_back()


def _anderson_batched(g: Function, z: torch.Tensor, tracker: _Tracker, scratch: _Scratch, memory: int, beta: float,
                      lam: float) -> int:  # fmt: skip
    """``_anderson``'s loop for a batch; its histories come from ``scratch``."""
    batch, n = z.shape
    F = scratch.take((batch, memory, n), z.dtype, z.device)  # slots are written before they are read
    X = scratch.take((batch, memory, n), z.dtype, z.device) if beta != 1 else None  # only mixed in for beta < 1
    # Residual history f(z) - z, kept instead of recomputed: the Gram matrix gains one new
    # row per step, O(m n) instead of O(m^2 n), and F - X is never rebuilt. float64 because
    # the small system is ill-conditioned near convergence: float32 rounding amplified into
    # the iterates would make a sample's answer depend on its batch size.
    R = scratch.take((batch, memory, n), torch.float64, z.device)
    gram = torch.zeros(batch, memory, memory, dtype=torch.float64, device=z.device)
    H = torch.zeros(batch, memory + 1, memory + 1, dtype=torch.float64, device=z.device)
    H[:, 0, 1:] = 1
    H[:, 1:, 0] = 1
    rhs = torch.zeros(batch, memory + 1, 1, dtype=torch.float64, device=z.device)
    rhs[:, 0] = 1
    unit = torch.eye(memory, dtype=z.dtype, device=z.device)  # row j: the plain step, weight 1 on slot j
    evaluations = 0
    k = 0
    finished = tracker.finished()
    while not finished:
        g, z, F, X, R, gram, H, rhs = _compacted(g, tracker, z, F, X, R, gram, H, rhs)
        fz = g(z)
        evaluations += 1
        r = fz - z
        tracker.observe(z, fz, r)
        finished = tracker.finished()
        if finished:
            break  # every sample has stopped: keep_done would discard the next candidate
        slot, m = k % memory, min(k + 1, memory)
        k += 1
        row = _remember(F, R, X, slot, m, z, fz, r)
        gram[:, slot, :m] = row
        gram[:, :m, slot] = row
        if m == 1:
            candidate = fz
        else:
            block = H[:, 1 : m + 1, 1 : m + 1]
            block.copy_(gram[:, :m, :m])
            scale = row[:, slot]  # the newest squared residual
            block.diagonal(dim1=1, dim2=2).add_((lam * scale.clamp_min(_TINY))[:, None])
            solution, info = torch.linalg.solve_ex(H[:, : m + 1, : m + 1], rhs[:, : m + 1])
            alpha = solution[:, 1:, 0].to(z.dtype)
            # A failed small system falls back to the plain step f(z), as weight 1 on the newest
            # slot: one where on (batch, m) instead of one on (batch, n).
            ok = (info == 0) & torch.isfinite(alpha.sum(dim=1))
            alpha = torch.where(ok[:, None], alpha, unit[slot, :m])
            candidate = torch.bmm(alpha[:, None], F[:, :m])[:, 0]
            if X is not None:
                candidate = beta * candidate + (1 - beta) * torch.bmm(alpha[:, None], X[:, :m])[:, 0]
        z = tracker.keep_done(z, candidate)
    return evaluations


def _mixing_weights(gram: list[list[float]], m: int, regulariser: float) -> list[float] | None:
    """Anderson's weights alpha = A^-1 1 / (1^T A^-1 1), A = gram[:m, :m] + regulariser I.

    The solution of the bordered system the batched path solves with LU, here by a
    Cholesky factorisation of the small symmetric positive definite A in Python
    floats (float64): for m <= 6 that is faster than any call into LAPACK, which
    runs cold between two f-evaluations. ``None`` when A is not numerically
    positive definite or the weights are not finite (the caller takes the plain step).
    """
    L = [[0.0] * m for _ in range(m)]
    for i in range(m):
        row_i, gram_i = L[i], gram[i]
        for j in range(i + 1):
            row_j = L[j]
            total = gram_i[j]
            for k in range(j):
                total -= row_i[k] * row_j[k]
            if i == j:
                total += regulariser
                if not total > 0:
                    return None
                row_i[i] = math.sqrt(total)
            else:
                row_i[j] = total / row_j[j]
    y = [0.0] * m
    for i in range(m):  # L u = 1
        total = 1.0
        for k in range(i):
            total -= L[i][k] * y[k]
        y[i] = total / L[i][i]
    for i in reversed(range(m)):  # L^T y = u
        total = y[i]
        for k in range(i + 1, m):
            total -= L[k][i] * y[k]
        y[i] = total / L[i][i]
    norm = sum(y)
    if not (math.isfinite(norm) and norm != 0):
        return None
    return [v / norm for v in y]


def _anderson_single(
    g: Function, z: torch.Tensor, tracker: _SingleTracker, memory: int, beta: float, lam: float
) -> int:
    """``_anderson`` for one sample: the same iterates, with the small system on the host.

    The Gram row and the tracker's norms come to the host together (one sync per
    iteration) and the mixing weights are solved there in float64
    (``_mixing_weights``); only the mix of stored images is a tensor operation.
    """
    # Histories keep the batched layout (a batch of one), so that the products below run
    # the same kernels as on the batched path and round the same: Anderson amplifies
    # last-bit differences over tens of iterations.
    n = z.shape[1]
    F = z.new_empty(1, memory, n)
    X = z.new_empty(1, memory, n) if beta != 1 else None
    R = torch.empty(1, memory, n, dtype=torch.float64, device=z.device)
    gram = [[0.0] * memory for _ in range(memory)]
    evaluations = 0
    k = 0
    while not tracker.finished():
        fz = g(z)
        evaluations += 1
        r = fz - z
        slot, m = k % memory, min(k + 1, memory)
        k += 1
        row = _remember(F, R, X, slot, m, z, fz, r)[0]
        values = torch.cat([tracker.norms(z, fz, r), row]).tolist()
        tracker.observe(z, fz, norms=values[:3])
        if tracker.finished():
            break  # the batched solver's next candidate would be discarded by keep_done
        for j, value in enumerate(values[3:]):
            gram[slot][j] = gram[j][slot] = value
        alpha = _mixing_weights(gram, m, lam * max(gram[slot][slot], _TINY)) if m > 1 else None
        if alpha is None:
            z = fz  # the plain step (m = 1, or a failed small system, as on the batched path)
            continue
        weights = torch.tensor([[alpha]], dtype=z.dtype, device=z.device)
        z = torch.bmm(weights, F[:, :m])[:, 0]
        if X is not None:
            z = beta * z + (1 - beta) * torch.bmm(weights, X[:, :m])[:, 0]
    return evaluations


def _broyden(g: Function, z: torch.Tensor, tracker: _Tracker) -> int:
    """Good Broyden on r(z) = f(z) - z with a low-rank inverse Jacobian -I + U V^T."""
    batch, n = z.shape
    rank = tracker.max_iter
    U = torch.zeros(batch, n, rank, dtype=z.dtype, device=z.device)
    V = torch.zeros(batch, rank, n, dtype=z.dtype, device=z.device)

    def inverse_times(x: torch.Tensor, used: int) -> torch.Tensor:  # (-I + U V^T) x
        return -x + (U[:, :, :used] @ (V[:, :used] @ x[:, :, None]))[:, :, 0]

    def transpose_inverse_times(x: torch.Tensor, used: int) -> torch.Tensor:  # x^T (-I + U V^T)
        return -x + ((x[:, None] @ U[:, :, :used]) @ V[:, :used])[:, 0]

    evaluations = 0
    fz = g(z)
    evaluations += 1
    r = fz - z
    tracker.observe(z, fz)
    used = 0
    while not tracker.finished():
        g, z, r, U, V = _compacted(g, tracker, z, r, U, V)
        update = -inverse_times(r, used)
        update = tracker.keep_done(torch.zeros_like(update), update)
        z_new = z + update
        fz_new = g(z_new)
        evaluations += 1
        r_new = fz_new - z_new
        tracker.observe(z_new, fz_new)
        dz, dr = z_new - z, r_new - r
        if used < rank:
            vT = transpose_inverse_times(dz, used)
            denominator = (vT * dr).sum(dim=1, keepdim=True)
            u = (dz - inverse_times(dr, used)) / denominator
            keep = torch.isfinite(u).all(dim=1, keepdim=True) & (denominator.abs() > _TINY)
            U[:, :, used] = torch.where(keep, u, torch.zeros_like(u))
            V[:, used] = torch.where(keep, vT, torch.zeros_like(vT))
            used += 1
        z, r = z_new, r_new
    return evaluations


_SOLVERS = {"fixed_point": _fixed_point, "anderson": _anderson, "broyden": _broyden}


def _keyword_options(solver: Callable[..., int]) -> tuple[str, ...]:
    """A solver's options: its keyword-only parameters, so the list cannot drift from the code."""
    parameters = inspect.signature(solver).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


# Options each method accepts (``solve(..., **options)``). An option outside its method's
# list is an error, not ignored: a misspelt ``memroy=3`` used to run with the default memory.
SOLVER_OPTIONS: dict[str, tuple[str, ...]] = {method: _keyword_options(f) for method, f in _SOLVERS.items()}


def check_options(method: str, options: Mapping[str, object]) -> None:
    """Raise ``TypeError`` naming the valid options when ``options`` has one ``method`` does not take."""
    valid = SOLVER_OPTIONS[method]
    unknown = [name for name in options if name not in valid]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(f"unknown solver option{plural} {names} for {method}; valid: {', '.join(valid) or 'none'}")


def solve(
    f: Function,
    z0: torch.Tensor,
    method: str = "anderson",
    tol: float = 1e-4,
    max_iter: int = 55,
    stop_mode: str = "rel",
    record: bool = False,
    compact: bool = True,
    **options: float,
) -> SolveResult:
    """Find z* = f(z*) for each sample of a batch.

    Args:
        f: maps ``(batch, *state)`` to the same shape; samples must not interact.
        z0: ``(batch, *state)`` starting point (the DEQ starts at zero).
        method: ``"fixed_point"`` (option ``damping``), ``"anderson"`` (options
            ``memory``, ``beta``, ``lam``) or ``"broyden"`` (none); see ``SOLVER_OPTIONS``.
        tol: stop when the residual (absolute or relative, see ``stop_mode``) is <= tol.
        max_iter: at most this many f-evaluations per sample.
        stop_mode: ``"abs"`` uses ||f(z) - z||, ``"rel"`` divides it by ||f(z)||.
        record: keep every iterate (on the CPU) in ``SolveResult.states``.
        options: the method's own options; any other name is a ``TypeError``.
        compact: when f offers ``rows(index)`` (see ``_Flat``), stop evaluating samples
            that have stopped. A sample's f-evaluation in a smaller batch may round
            differently in the last bits; ``False`` keeps every evaluation on the whole
            batch (training does, so a retrain reproduces a model bit for bit).

    Returns:
        A ``SolveResult``; run it under ``torch.no_grad()`` and re-attach gradients
        with ``deq_core.engine.implicit`` where they are needed.
    """
    if method not in _SOLVERS:
        raise ValueError(f"unknown solver {method!r}; choose one of {METHODS}")
    if stop_mode not in STOP_MODES:
        raise ValueError(f"unknown stop_mode {stop_mode!r}; choose one of {STOP_MODES}")
    check_options(method, options)
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    if not tol > 0:
        raise ValueError("tol must be positive")
    shape = z0.shape
    flat = z0.reshape(shape[0], -1)
    g = _Flat(f, tuple(shape[1:]), restrict=compact)

    tracker = (_SingleTracker if shape[0] == 1 else _Tracker)(flat, tol, stop_mode, max_iter, record)
    # Without autograd the loop runs in inference mode: no version counters or
    # autograd metadata on its tensors, 10-20% less time per f-evaluation of a small
    # model. The adjoint solve of the implicit gradient needs autograd inside f, so it
    # runs with gradients enabled and keeps the plain mode.
    with torch.inference_mode(not torch.is_grad_enabled()):
        evaluations = _SOLVERS[method](g, flat, tracker, **options)
        tracker.gather()
    return tracker.result(shape, method, evaluations)


def unrolled_result(states: list[torch.Tensor], tol: float, stop_mode: str, record: bool = False) -> SolveResult:
    """Residual bookkeeping of a fixed-step unroll z_{k+1} = f(z_k) (weight-tied fusion).

    ``states`` are z_0 .. z_K; the residual of iterate k is ||z_{k+1} - z_k||, so
    the trace has K entries and the reported iterate is z_{K-1} (the model reads
    its image z_K, as the DEQ reads f(z*)).
    """
    with torch.no_grad():
        batch = states[0].shape[0]
        flat = torch.stack([s.detach().reshape(batch, -1) for s in states])  # (K+1, batch, n)
        absolute = (flat[1:] - flat[:-1]).norm(dim=2).T.cpu()  # (batch, K)
        relative = absolute / (flat[1:].norm(dim=2).T.cpu() + _TINY)
    steps = absolute.shape[1]
    last = (absolute if stop_mode == "abs" else relative)[:, -1]
    finite = torch.isfinite(absolute).all(dim=1)
    converged = finite & (last <= tol)
    status = tuple(
        SolveStatus.CONVERGED if c else SolveStatus.MAX_ITER if ok else SolveStatus.DIVERGED
        for c, ok in zip(converged, finite)
    )
    return SolveResult(
        z=states[-2].detach(),
        iterations=torch.full((batch,), steps, dtype=torch.long),
        absolute_residuals=tuple(absolute),
        relative_residuals=tuple(relative),
        best_iteration=torch.full((batch,), steps - 1, dtype=torch.long),
        converged=converged,
        status=status,
        method="unrolled",
        tol=tol,
        stop_mode=stop_mode,
        max_iter=steps,
        function_evaluations=steps,
        states=torch.stack([s.detach().cpu() for s in states[:-1]]) if record else None,
    )
