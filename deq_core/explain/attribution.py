"""Integrated Gradients over all modalities of a case, on one straight-line path.

Float modalities (image, timeseries, vector) are attributed on their raw input.
Token ids are not differentiable, so a text modality is attributed on the output
of its encoder's ``embedding`` layer (what LayerIntegratedGradients does for one
layer). Both happen on ONE path: Captum's ``IntegratedGradients`` interpolates a
mixed tuple (raw float inputs, token embeddings) and a forward hook puts the
interpolated embeddings in place of the embedding layer's output. Completeness,
sum of all attributions = F(input) - F(baseline), therefore holds for all
modalities jointly, and the convergence delta measures it.

Why not ``LayerIntegratedGradients`` with a list of layers: its
``attribute_to_layer_input`` flag is one flag for all layers, and the float
modalities have no layer whose output is the raw input, so a single call cannot
mix "raw input" and "embedding output" attribution.

The integral: by default ``"adaptive"``, Captum's IG on path segments placed where
the output changes most (a DEQ's output can be steep along the path); any of
Captum's own rules on the whole path is available too. Captum is used through its
public ``IntegratedGradients.attribute``; the end points are evaluated here, and the
one internal read (where Captum places a rule's nodes) is ``captum_alphas``, whose
assumptions ``check_path_rows`` verifies on every call. The default baseline is
zeros (padding for text); see ``DEFAULT_BASELINE`` for why not the training mean.

Every number comes with the equilibrium solves behind it (input, baseline and
the path): a delta only speaks about integration error when those solves
converged (a pitfall listed in docs/model.md: the delta mixes integration error
with the solver's residual).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from captum.attr import IntegratedGradients

from deq_core.case import absent_input as absent
from deq_core.engine.config import SolverSettings
from deq_core.engine.modality import Inputs, Modality
from deq_core.engine.model import FusionModel
from deq_core.engine.solvers import SolveResult, SolveStatus

# Adaptive at 128: 98.9% of inspection-deq's validation cases complete within 1% (64: 98.1%,
# a case on a steep stretch of the path needs more points); one case's full explanation
# stays well under a second on a 2-core CPU (deq_core.explain.faithfulness prints both).
DEFAULT_STEPS = 128
ADAPTIVE = "adaptive"
DEFAULT_METHOD = ADAPTIVE
ADAPTIVE_NODES = 4  # Gauss-Legendre points per adaptive segment: exact for cubics, robust to kinks
SEGMENT_RULE = "gausslegendre"  # Captum's rule on each adaptive segment
ADAPTIVE_GRID = 0.5  # grid intervals of the no-gradient pass, per gradient step
COMPLETENESS_TOLERANCE = 0.01  # |delta| <= 1% of |F(x) - F(baseline)|
OUTPUTS = ("logit", "probability")


# --------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Baseline:
    """An attribution baseline: the "absence" an input is compared against.

    Attributes:
        name: registry key, what users pick (``"mean"``).
        kinds: modality kinds it applies to.
        description: one line for menus and reports.
        build: ``(model, modality_index, x) -> baseline`` with ``x: (b, *shape)``
            the raw inputs of that modality; returns the same shape and dtype.
    """

    name: str
    kinds: tuple[str, ...]
    description: str
    build: Callable[[FusionModel, int, torch.Tensor], torch.Tensor]


def _zero(model: FusionModel, index: int, x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)  # for text: token id 0, all padding


def _training_mean(model: FusionModel, index: int, x: torch.Tensor) -> torch.Tensor:
    return absent(model.input_means()[index], x)  # the one absent-input rule; text: zeros, all padding


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur the trailing spatial dims of ``x``: ``(b, c, h, w)`` in 2-D, ``(b, c, steps)`` in 1-D."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    if x.dim() == 3:
        padded = F.pad(x, (radius, radius), mode="replicate")
        return F.conv1d(padded, kernel.view(1, 1, -1).repeat(channels, 1, 1), groups=channels)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def _blurred(model: FusionModel, index: int, x: torch.Tensor) -> torch.Tensor:
    # sigma = a tenth of the extent: fine detail (scratches, spikes) is gone, coarse layout stays
    # (Sturmfels et al. 2020, "Visualizing the impact of feature attribution baselines").
    return gaussian_blur(x.float(), sigma=max(1.0, 0.1 * min(x.shape[2:]))).to(x.dtype)


BASELINES: dict[str, Baseline] = {
    "zero": Baseline("zero", ("image", "timeseries", "vector", "text"), "all zeros (text: all padding)", _zero),
    "mean": Baseline(
        "mean", ("image", "timeseries", "vector", "text"), "training-mean input (text: all padding)", _training_mean
    ),
    "blur": Baseline("blur", ("image", "timeseries"), "the input, Gaussian-blurred", _blurred),
    "padding": Baseline("padding", ("text",), "a note of padding tokens only", _zero),
}
# Zeros, not the training mean, by default: on the trained DEQs the training-mean input is
# ambiguous enough that the equilibrium is bistable there (restarts reach a second fixed
# point), so the output jumps on paths leaving it and no gradient integral is complete.
# From zeros the output is continuous along the path (measured: deq_core.explain.faithfulness).
DEFAULT_BASELINE = {"image": "zero", "timeseries": "zero", "vector": "zero", "text": "padding"}

BaselineChoice = str | Mapping[str, str] | None


def resolve_baselines(modalities: Sequence[Modality], choice: BaselineChoice = None) -> tuple[str, ...]:
    """The baseline name used for each modality.

    Args:
        choice: None (each kind's default), one name (used where it applies to a
            modality's kind, the kind's default elsewhere), or a mapping
            ``{modality name: baseline name}`` (unnamed modalities get their default;
            a baseline that does not fit the modality's kind is an error).
    """
    if choice is None or isinstance(choice, str):
        if choice is not None and choice not in BASELINES:
            raise ValueError(f"unknown baseline {choice!r}; choose one of {sorted(BASELINES)}")
        return tuple(
            choice if choice is not None and m.kind in BASELINES[choice].kinds else DEFAULT_BASELINE[m.kind]
            for m in modalities
        )
    names = {m.name for m in modalities}
    unknown = set(choice) - names
    if unknown:
        raise ValueError(f"baselines given for unknown modalities {sorted(unknown)}; the model has {sorted(names)}")
    resolved = []
    for m in modalities:
        name = choice.get(m.name, DEFAULT_BASELINE[m.kind])
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
        if m.kind not in BASELINES[name].kinds:
            raise ValueError(f"baseline {name!r} does not apply to {m.kind} modality {m.name!r}")
        resolved.append(name)
    return tuple(resolved)


def baseline_inputs(
    model: FusionModel, inputs: Inputs, choice: BaselineChoice = None
) -> tuple[torch.Tensor, ...]:
    """Raw baseline inputs, one tensor per modality, shaped like ``inputs``."""
    names = resolve_baselines(model.config.modalities, choice)
    return tuple(BASELINES[name].build(model, i, x) for i, (name, x) in enumerate(zip(names, inputs)))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SolveSummary:
    """How well the equilibrium solves behind a number settled.

    For a group of solves (the interpolation path) the worst is reported.

    Attributes:
        status: ``SolveStatus.CONVERGED`` when every solve converged, else the worst status.
        relative_residual: largest final relative residual ||f(z)-z|| / ||f(z)||.
        iterations: most iterations any solve used.
        solves: how many solves the summary covers.
        unconverged: how many of them did not converge.
    """

    status: SolveStatus
    relative_residual: float
    iterations: int
    solves: int = 1
    unconverged: int = 0

    @property
    def converged(self) -> bool:
        return self.unconverged == 0

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "relative_residual": self.relative_residual,
            "iterations": self.iterations,
            "solves": self.solves,
            "unconverged": self.unconverged,
            "converged": self.converged,
        }


_SEVERITY = {SolveStatus.CONVERGED: 0, SolveStatus.MAX_ITER: 1, SolveStatus.DIVERGED: 2}


def summarise_solves(results: Sequence[SolveResult], rows: Sequence[torch.Tensor] | None = None) -> SolveSummary | None:
    """Worst-case summary over some rows of some solves (all rows when ``rows`` is None)."""
    statuses: list[SolveStatus] = []
    residuals: list[torch.Tensor] = []
    iterations: list[torch.Tensor] = []
    for k, result in enumerate(results):
        index = rows[k] if rows is not None else torch.arange(len(result.status))
        if len(index) == 0:
            continue
        statuses += [result.status[i] for i in index.tolist()]
        residuals.append(result.final_relative_residual.detach().cpu()[index])
        iterations.append(result.iterations.detach().cpu()[index])
    if not statuses:
        return None
    worst = max(statuses, key=_SEVERITY.__getitem__)
    return SolveSummary(
        status=worst,
        relative_residual=float(torch.cat(residuals).max()),
        iterations=int(torch.cat(iterations).max()),
        solves=len(statuses),
        unconverged=sum(s != SolveStatus.CONVERGED for s in statuses),
    )


@dataclass(frozen=True)
class FeatureScore:
    """One input feature's attribution, named in the user's words."""

    name: str
    index: tuple[int, ...]
    score: float

    def to_dict(self) -> dict:
        return {"name": self.name, "index": list(self.index), "score": self.score}


@dataclass(frozen=True)
class Attribution:
    """Integrated Gradients of one case, for every modality (M modalities).

    Attributes:
        modalities: the M modalities, in model order.
        class_names: the C classes.
        target: class index whose output was attributed.
        output: ``"logit"`` or ``"probability"`` of the target class.
        maps: per modality, attributions in the modality's own shape: image
            ``(C, H, W)``, timeseries ``(channels, steps)``, vector ``(features,)``,
            text ``(max_tokens,)`` (embedding attributions summed per token).
        totals: ``(M,)`` sum of each modality's map.
        tokens: per modality, the token strings of a text input (``max_tokens``
            long, ``"<pad>"`` included), None for other kinds.
        baselines: per modality, the baseline name used.
        value_at_input: F(x), the target output at the input.
        value_at_baseline: F(baseline).
        convergence_delta: sum(attributions) - (F(x) - F(baseline)), Captum's convergence
            delta (computed as Captum does, ``convergence_delta``; ``"adaptive"``: over all
            segments, F(x) and F(baseline) from the grid's ends).
        n_steps, method: the integral's gradient evaluations and rule.
        input_solve, baseline_solve, path_solve: the equilibrium solves at the input,
            at the baseline and at the n_steps interpolation points (worst of them);
            None for feed-forward models.
        path_alphas: positions on the path where the output was evaluated, 0 (baseline) to 1
            (input): the adaptive grid, or Captum's nodes plus both ends.
        path_values: the target output at those positions: where it jumps between
            neighbours, the equilibrium switched and no gradient can account for it.
    """

    modalities: tuple[Modality, ...]
    class_names: tuple[str, ...]
    target: int
    output: str
    maps: tuple[torch.Tensor, ...]
    totals: tuple[float, ...]
    tokens: tuple[tuple[str, ...] | None, ...]
    baselines: tuple[str, ...]
    value_at_input: float
    value_at_baseline: float
    convergence_delta: float
    n_steps: int
    method: str
    input_solve: SolveSummary | None
    baseline_solve: SolveSummary | None
    path_solve: SolveSummary | None
    path_alphas: tuple[float, ...] = ()
    path_values: tuple[float, ...] = ()

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def output_change(self) -> float:
        """F(x) - F(baseline): what the attributions should add up to."""
        return self.value_at_input - self.value_at_baseline

    @property
    def relative_delta(self) -> float:
        """|delta| / |F(x) - F(baseline)|; 0 when both are (numerically) zero."""
        change = abs(self.output_change)
        if change < 1e-12:
            return 0.0 if abs(self.convergence_delta) < 1e-6 else math.inf
        return abs(self.convergence_delta) / change

    @property
    def complete(self) -> bool:
        """Completeness within ``COMPLETENESS_TOLERANCE`` of the output change."""
        return self.relative_delta <= COMPLETENESS_TOLERANCE

    @property
    def largest_path_step(self) -> float:
        """Largest change of the output between neighbouring path points, as a share of |F(x) - F(b)|.

        About 1/n_steps where the output changes smoothly; near 1 where it jumps.
        """
        if len(self.path_values) < 2:
            return 0.0
        steps = torch.tensor(self.path_values).diff().abs().max().item()
        return steps / max(abs(self.output_change), 1e-12)

    @property
    def solves_converged(self) -> bool:
        return all(s is None or s.converged for s in (self.input_solve, self.baseline_solve, self.path_solve))

    def map_of(self, modality: str | int) -> torch.Tensor:
        return self.maps[_modality_index(self.modalities, modality)]

    def flat(self) -> torch.Tensor:
        """All attributions of the case as one vector (modalities in order)."""
        return torch.cat([m.reshape(-1) for m in self.maps])

    def to_dict(self) -> dict:
        solve = lambda s: None if s is None else s.to_dict()  # noqa: E731
        return {
            "modalities": [m.name for m in self.modalities],
            "kinds": [m.kind for m in self.modalities],
            "target": self.target,
            "target_name": self.class_names[self.target],
            "output": self.output,
            "maps": {m.name: a.tolist() for m, a in zip(self.modalities, self.maps)},
            "totals": dict(zip(self.modality_names, self.totals)),
            "tokens": {m.name: list(t) for m, t in zip(self.modalities, self.tokens) if t is not None},
            "baselines": dict(zip(self.modality_names, self.baselines)),
            "value_at_input": self.value_at_input,
            "value_at_baseline": self.value_at_baseline,
            "output_change": self.output_change,
            "convergence_delta": self.convergence_delta,
            "relative_delta": _finite_or_none(self.relative_delta),
            "complete": self.complete,
            "n_steps": self.n_steps,
            "method": self.method,
            "input_solve": solve(self.input_solve),
            "baseline_solve": solve(self.baseline_solve),
            "path_solve": solve(self.path_solve),
            "path_alphas": list(self.path_alphas),
            "path_values": list(self.path_values),
            "largest_path_step": _finite_or_none(self.largest_path_step),
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _modality_index(modalities: Sequence[Modality], modality: str | int) -> int:
    if isinstance(modality, int):
        if not 0 <= modality < len(modalities):
            raise IndexError(f"modality index {modality} out of range for {len(modalities)} modalities")
        return modality
    names = [m.name for m in modalities]
    if modality not in names:
        raise KeyError(f"no modality {modality!r}; the model has {names}")
    return names.index(modality)


def vector_feature_name(modality: Modality, i: int) -> str:
    """Feature ``i`` (from 0) of a vector input: its configured name, what a handwritten view's feature is
    ("Fourier coefficient 14", numbered from 1), else "feature i"."""
    if i < len(modality.feature_names):
        return modality.feature_names[i]
    from deq_core.data.handwritten import view_feature_name

    return view_feature_name(modality, i) or f"feature {i}"


def feature_names(modality: Modality) -> tuple[str, ...]:
    """Every feature name of a vector input, in order (the bars of the Inspect page), via ``vector_feature_name``."""
    return tuple(vector_feature_name(modality, i) for i in range(int(math.prod(modality.shape))))


def feature_name(modality: Modality, index: tuple[int, ...], tokens: Sequence[str] | None = None) -> str:
    """A feature's name in the user's words (``"temperature @ step 17"``)."""
    if modality.kind == "image":
        c, y, x = index
        pixel = f"pixel (row {y}, column {x})"
        return pixel if modality.shape[0] == 1 else f"channel {c} {pixel}"
    if modality.kind == "timeseries":
        c, t = index
        channel = modality.feature_names[c] if c < len(modality.feature_names) else f"channel {c}"
        return f"{channel} @ step {t}"
    if modality.kind == "vector":
        (i,) = index
        return vector_feature_name(modality, i)
    (p,) = index
    token = tokens[p] if tokens is not None else "?"
    return f"{token!r} (token {p})"


def top_features(attribution: Attribution, modality: str | int, k: int = 10) -> list[FeatureScore]:
    """The k features of a modality with the largest |attribution|, largest first (signs kept).

    Padding tokens of a text modality are left out.
    """
    index = _modality_index(attribution.modalities, modality)
    m, scores, tokens = attribution.modalities[index], attribution.maps[index], attribution.tokens[index]
    flat = scores.reshape(-1)
    candidates = torch.arange(flat.numel())
    if tokens is not None:
        candidates = torch.tensor([p for p, t in enumerate(tokens) if t != m.vocabulary[0]], dtype=torch.long)
    if len(candidates) == 0:
        return []
    order = flat[candidates].abs().argsort(descending=True, stable=True)[:k]
    result = []
    for position in candidates[order].tolist():
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(position), scores.shape))
        result.append(FeatureScore(feature_name(m, where, tokens), where, float(flat[position])))
    return result


# --------------------------------------------------------------------------- computation


@contextlib.contextmanager
def evaluation_mode(model: FusionModel) -> Iterator[FusionModel]:
    """Run in eval mode (dropout off, so explanations are deterministic), then restore the mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def text_positions(model: FusionModel) -> tuple[int, ...]:
    return tuple(i for i, m in enumerate(model.config.modalities) if m.kind == "text")


@contextlib.contextmanager
def _embeddings_replaced(model: FusionModel, replacements: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Make text encoder i's embedding layer output ``replacements[i]`` instead of its own output.

    Only in the calling thread: the app shares one model between sessions, and another
    session's forward pass must not pick up this path's embeddings.
    """
    owner = threading.get_ident()
    handles = []

    def hook_for(i: int, replacement: torch.Tensor) -> Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if threading.get_ident() != owner:
                return None
            if output.shape != replacement.shape:
                raise ValueError(
                    f"modality {i}: embedding output {tuple(output.shape)} vs supplied {tuple(replacement.shape)}"
                )
            return replacement

        return hook

    try:
        for i, replacement in replacements.items():
            handles.append(model.encoders[i].embedding.register_forward_hook(hook_for(i, replacement)))
        yield
    finally:
        for handle in handles:
            handle.remove()


class PathForward:
    """The function Captum integrates: ``forward(*path_inputs, *tokens) -> (rows, C)``.

    ``path_inputs`` follow the model's modality order, with each text modality
    given as token embeddings ``(rows, max_tokens, embedding_dim)``; ``tokens`` are
    the text modalities' token ids (they only set the padding mask, which is the
    input's along the whole path, as in LayerIntegratedGradients). Every call's
    ``SolveResult`` is kept in ``calls`` with whether it ran with gradients.
    """

    def __init__(self, model: FusionModel, output: str = "logit", solver: SolverSettings | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} is not one of {OUTPUTS}")
        self.model, self.output, self.solver = model, output, solver
        self.text = text_positions(model)
        self.calls: list[_Call] = []

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        n = self.model.n_modalities
        path, tokens = args[:n], args[n:]
        raw = list(path)
        for position, token_ids in zip(self.text, tokens):
            raw[position] = token_ids
        with _embeddings_replaced(self.model, {i: path[i] for i in self.text}):
            out = self.model.run(raw, solver=self.solver)
        result = out.logits if self.output == "logit" else torch.softmax(out.logits, dim=-1)
        self.calls.append(_Call(torch.is_grad_enabled(), tuple(a.detach() for a in path), out.solve, result.detach()))
        return result


@dataclass(frozen=True)
class _Call:
    with_gradients: bool
    path_inputs: tuple[torch.Tensor, ...]
    solve: SolveResult | None
    outputs: torch.Tensor


def case_batch(model: FusionModel, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """``inputs`` on the model's device, checked against its modalities (count and shapes)."""
    if len(inputs) != model.n_modalities:
        raise ValueError(f"expected {model.n_modalities} inputs ({model.config.modality_names}), got {len(inputs)}")
    batch = tuple(torch.as_tensor(x).to(model.device) for x in inputs)
    for m, x in zip(model.config.modalities, batch):
        if tuple(x.shape[1:]) != m.shape:
            raise ValueError(f"modality {m.name!r}: input shape {tuple(x.shape)}, expected (batch, *{m.shape})")
    return batch


def target_classes(target: int | Sequence[int] | torch.Tensor, batch: int, classes: int) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1).cpu()
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{t.numel()} targets for {batch} cases")
    if ((t < 0) | (t >= classes)).any():
        raise ValueError(f"target classes must lie in [0, {classes})")
    return t.clone()


@dataclass(frozen=True)
class _PathIntegral:
    """What either integration scheme returns, for b cases (P path points each)."""

    targets: torch.Tensor  # (b,)
    attributions: tuple[torch.Tensor, ...]  # per modality (b, *path shape); text in embedding space
    delta: torch.Tensor  # (b,)
    value_at_input: torch.Tensor  # (b,)
    value_at_baseline: torch.Tensor  # (b,)
    input_solve: list[SolveSummary | None]
    baseline_solve: list[SolveSummary | None]
    path_solve: list[SolveSummary | None]
    path_alphas: torch.Tensor  # (P,), or (b, P) when cases differ
    path_values: torch.Tensor  # (b, P)


def integrated_gradients(
    model: FusionModel,
    inputs: Inputs,
    target: int | Sequence[int] | torch.Tensor | None = None,
    baseline: BaselineChoice = None,
    n_steps: int = DEFAULT_STEPS,
    internal_batch_size: int | None = None,
    method: str = DEFAULT_METHOD,
    output: str = "logit",
    solver: SolverSettings | None = None,
) -> list[Attribution]:
    """Integrated Gradients of each case over all modalities jointly.

    Args:
        model: any fusion model; run in eval mode for the call.
        inputs: raw inputs, one tensor per modality, ``(b, *modality.shape)``.
        target: class per case (one int for all); None: each case's predicted class.
        baseline: see ``resolve_baselines``; default: zeros, padding for text.
        n_steps: gradient evaluations per case.
        internal_batch_size: rows per forward/backward pass; None: all at once.
            Results do not depend on it: solves stop per sample. (The adaptive
            method's no-gradient grid pass runs at least one whole case at a time.)
        method: ``"adaptive"`` (default): composite Gauss-Legendre on segments placed
            where the output changes most (see ``_adaptive``); or any of Captum's
            methods (``"gausslegendre"``, ``"riemann_trapezoid"``, ...) on the whole path.
        output: attribute the target ``"logit"`` (default: no softmax saturation,
            so confident cases keep informative gradients) or its ``"probability"``.
        solver: equilibrium solver settings; default the model's own.

    Returns:
        One ``Attribution`` per case.
    """
    if n_steps < 1:
        raise ValueError("n_steps must be at least 1")
    if internal_batch_size is not None and internal_batch_size < 1:
        raise ValueError("internal_batch_size must be at least 1")
    config = model.config
    with evaluation_mode(model):
        x = case_batch(model, inputs)
        baselines = baseline_inputs(model, x, baseline)
        text = text_positions(model)
        with torch.no_grad():  # token embeddings: the text modalities' place on the path
            path_in = list(x)
            path_base = list(baselines)
            for i in text:
                path_in[i] = model.encoders[i].embedding(x[i].long())
                path_base[i] = model.encoders[i].embedding(baselines[i].long())
        tokens = tuple(x[i] for i in text)
        forward = PathForward(model, output, solver)
        scheme = _adaptive if method == ADAPTIVE else _captum
        integral = scheme(
            forward, tuple(path_in), tuple(path_base), tokens, target, n_steps, method, internal_batch_size
        )

    names = resolve_baselines(config.modalities, baseline)
    results = []
    for case in range(x[0].shape[0]):
        maps = []
        for i, a in enumerate(integral.attributions):
            a = a[case].detach().cpu().float()
            maps.append(a.sum(dim=-1) if i in text else a)
        alphas = integral.path_alphas if integral.path_alphas.dim() == 1 else integral.path_alphas[case]
        results.append(
            Attribution(
                modalities=config.modalities,
                class_names=config.class_names,
                target=int(integral.targets[case]),
                output=output,
                maps=tuple(maps),
                totals=tuple(float(m.sum()) for m in maps),
                tokens=tuple(
                    tuple(m.vocabulary[t] for t in x[i][case].tolist()) if m.kind == "text" else None
                    for i, m in enumerate(config.modalities)
                ),
                baselines=names,
                value_at_input=float(integral.value_at_input[case]),
                value_at_baseline=float(integral.value_at_baseline[case]),
                convergence_delta=float(integral.delta[case]),
                n_steps=n_steps,
                method=method,
                input_solve=integral.input_solve[case],
                baseline_solve=integral.baseline_solve[case],
                path_solve=integral.path_solve[case],
                path_alphas=tuple(alphas.tolist()),
                path_values=tuple(integral.path_values[case].tolist()),
            )
        )
    return results


def _pick(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(rows,)`` target output of each row; ``targets`` already expanded to the rows."""
    return outputs.gather(1, targets.to(outputs.device)[:, None])[:, 0].cpu().double()


def _rows_of_cases(calls: Sequence[_Call], row_case: Callable[[int, int], torch.Tensor], b: int):
    """Per case, (solve results, row indices) over ``calls``; ``row_case(k, rows)`` maps call k's rows to cases."""
    per_case: list[tuple[list[SolveResult], list[torch.Tensor]]] = [([], []) for _ in range(b)]
    for k, call in enumerate(calls):
        if call.solve is None:
            continue
        cases = row_case(k, len(call.solve.status))
        for c in range(b):
            rows = (cases == c).nonzero()[:, 0]
            if len(rows):
                per_case[c][0].append(call.solve)
                per_case[c][1].append(rows)
    return [summarise_solves(results, rows) if results else None for results, rows in per_case]


def _captum(forward, path_in, path_base, tokens, target, n_steps, method, internal_batch_size) -> _PathIntegral:
    """Captum's Integrated Gradients over the whole path with one of its quadrature rules."""
    b = path_in[0].shape[0]
    classes = len(forward.model.config.class_names)
    if internal_batch_size is not None and b > internal_batch_size:
        # Captum needs at least one row per case in a pass; honour the size with groups of cases.
        targets = None if target is None else target_classes(target, b, classes)
        parts = []
        for first in range(0, b, internal_batch_size):
            cases = slice(first, first + internal_batch_size)
            forward.calls.clear()
            parts.append(
                _captum(forward, tuple(p[cases] for p in path_in), tuple(p[cases] for p in path_base),
                        tuple(t[cases] for t in tokens), None if targets is None else targets[cases],
                        n_steps, method, internal_batch_size)  # fmt: skip
            )
        return _PathIntegral(
            **{
                f.name: (
                    sum((getattr(p, f.name) for p in parts), [])
                    if f.name.endswith("_solve")
                    else parts[0].path_alphas
                    if f.name == "path_alphas"
                    else tuple(torch.cat(pieces) for pieces in zip(*(p.attributions for p in parts)))
                    if f.name == "attributions"
                    else torch.cat([getattr(p, f.name) for p in parts])
                )
                for f in dataclasses.fields(_PathIntegral)
            }
        )
    # The end points first, evaluated here rather than read off the forward calls Captum
    # makes for its convergence delta: F(baseline), F(x), their solves and (without a
    # target) the predicted class come from calls whose inputs are known.
    at_baseline_call = _evaluate(forward, path_base, tokens)
    at_input_call = _evaluate(forward, path_in, tokens)
    if target is None:
        target = at_input_call.outputs.argmax(dim=1)
    targets = target_classes(target, b, classes)
    before = len(forward.calls)
    attributions = IntegratedGradients(forward).attribute(
        path_in,
        baselines=path_base,
        target=targets.tolist(),
        additional_forward_args=tokens if tokens else None,
        n_steps=n_steps,
        method=method,
        internal_batch_size=internal_batch_size,
    )
    path_calls = forward.calls[before:]
    alphas = captum_alphas(method, n_steps)
    check_path_rows(path_calls, path_in, path_base, alphas)
    # Rows are alpha-major (all cases at alpha_0, then alpha_1, ...; check_path_rows
    # has just verified it), so row r belongs to case r % b.
    path_outputs = torch.cat([c.outputs for c in path_calls]).cpu()
    path_values = _pick(path_outputs, targets.repeat(n_steps)).reshape(n_steps, b).T
    alphas = torch.tensor(alphas, dtype=torch.float64)
    order = alphas.argsort()
    at_baseline, at_input = _pick(at_baseline_call.outputs, targets), _pick(at_input_call.outputs, targets)
    return _PathIntegral(
        targets=targets,
        attributions=tuple(attributions),
        delta=convergence_delta(attributions, at_input_call.outputs, at_baseline_call.outputs, targets),
        value_at_input=at_input,
        value_at_baseline=at_baseline,
        input_solve=_rows_of_cases([at_input_call], lambda k, n: torch.arange(n), b),
        baseline_solve=_rows_of_cases([at_baseline_call], lambda k, n: torch.arange(n), b),
        path_solve=_rows_of_cases(path_calls, lambda k, n: torch.arange(n) % b, b),
        path_alphas=torch.cat([torch.zeros(1, dtype=torch.float64), alphas[order], torch.ones(1, dtype=torch.float64)]),
        path_values=torch.cat([at_baseline[:, None], path_values[:, order], at_input[:, None]], dim=1),
    )


def _evaluate(forward: PathForward, path: Inputs, tokens: Sequence[torch.Tensor]) -> _Call:
    """F at some path points, without gradients: the call ``forward`` records for it."""
    with torch.no_grad():
        forward(*path, *tokens)
    return forward.calls[-1]


def convergence_delta(
    attributions: Inputs, at_input: torch.Tensor, at_baseline: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``(b,)`` sum(attributions) - (F(x) - F(baseline)), float64, from the ``(b, C)`` end-point outputs.

    Computed the way Captum's ``compute_convergence_delta`` does (each modality's rows
    summed in the attributions' dtype, the modalities added per case, then the output
    change subtracted), so the number is the one ``return_convergence_delta=True``
    gave, without Captum evaluating both end points a second time.
    """
    rows = [a.reshape(a.shape[0], -1).sum(1) for a in attributions]
    attribution_sum = torch.stack([sum(per_case) for per_case in zip(*rows)])
    index = targets.to(at_input.device)[:, None]
    change = at_input.gather(1, index)[:, 0] - at_baseline.gather(1, index)[:, 0]
    return (attribution_sum - change.to(attribution_sum.device)).detach().cpu().double()


def captum_alphas(method: str, n_steps: int) -> tuple[float, ...]:
    """Where on the path Captum's ``IntegratedGradients`` evaluates for a rule: alpha per node, in Captum's order.

    The one place this module reads a Captum internal. Captum's public API says how
    many points a rule uses, not where they lie, and the path values, their solves and
    ``path_alphas`` need the positions. It relies on
    ``captum.attr._utils.approximation_methods.approximation_parameters(method)``
    returning ``(step_sizes, alphas)``, functions of ``n_steps``, and on
    ``IntegratedGradients`` evaluating node k at ``baseline + alphas(n_steps)[k] *
    (input - baseline)`` for all cases, node after node (captum 0.9.0 does both).
    tests/explain/test_attribution.py pins the function's signature and the alphas of
    known rules, and ``check_path_rows`` checks every call's rows against them, so a
    Captum that changes either fails loudly instead of mislabelling the path.
    """
    from captum.attr._utils.approximation_methods import approximation_parameters

    _, alphas = approximation_parameters(method)
    return tuple(float(a) for a in alphas(n_steps))


def check_path_rows(
    calls: Sequence[_Call], ends: Inputs, starts: Inputs, alphas: Sequence[float]
) -> None:
    """Raise unless ``calls`` evaluated start + alpha (end - start) for every alpha, alpha-major.

    ``ends``, ``starts``: per modality ``(examples, *path shape)``, the end and start
    points given to one ``IntegratedGradients.attribute`` call; ``calls``: the forward
    calls it made. The bookkeeping of path values and solves assigns rows to cases
    and alphas by this layout; Captum does not promise it, so it is checked.
    """
    if not calls or not all(c.with_gradients for c in calls):
        raise RuntimeError("Captum's IntegratedGradients did not evaluate the path with gradients as expected")
    alphas = torch.tensor(list(alphas), dtype=torch.float64)
    for i, (end, start) in enumerate(zip(ends, starts)):
        # Each row projected on one fixed random direction v: a row at the wrong alpha (or of the wrong
        # case) is off by |delta alpha| (end - start) . v, far above rounding, while the check reads
        # the path rows once instead of building and comparing a copy of every row (7% of an IG call).
        # The bound is what an elementwise allclose(rtol=1e-5, atol=1e-6) implies for the projection
        # (Cauchy-Schwarz: |d . v| <= ||d|| ||v|| <= (atol sqrt(D) + rtol ||row||) ||v||).
        generator = torch.Generator().manual_seed(i)
        width = end[0].numel()
        v = torch.randn(width, generator=generator, dtype=torch.float64).to(end.device)
        end_v = end.reshape(len(end), -1).double() @ v
        start_v = start.reshape(len(start), -1).double() @ v
        expected = (start_v[None, :] + alphas[:, None].to(v.device) * (end_v - start_v)[None, :]).reshape(-1)
        pieces = [c.path_inputs[i].reshape(len(c.path_inputs[i]), -1) for c in calls]
        if sum(len(p) for p in pieces) != len(expected) or any(p.shape[1] != width for p in pieces):
            raise RuntimeError(_LAYOUT_MISMATCH)
        seen = torch.cat([p.double() @ v for p in pieces])
        norms = torch.cat([p.double().norm(dim=1) for p in pieces])
        bound = (1e-6 * width**0.5 + 1e-5 * norms) * v.norm()
        if not bool(((seen - expected).abs() <= bound).all()):
            raise RuntimeError(_LAYOUT_MISMATCH)


_LAYOUT_MISMATCH = (
    "Captum's IntegratedGradients evaluated other path points than captum_alphas() says "
    "(an incompatible Captum version?): path values and solves cannot be assigned to cases"
)


def _points(path_in, path_base, alphas: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Path points baseline + alpha (input - baseline) for ``alphas: (b, k)``: ``(b * k, *shape)``, case-major."""
    points = []
    for x, base in zip(path_in, path_base):
        a = alphas.to(device=x.device, dtype=x.dtype).reshape(*alphas.shape, *([1] * (x.dim() - 1)))
        points.append((base.unsqueeze(1) + a * (x - base).unsqueeze(1)).reshape(-1, *x.shape[1:]))
    return tuple(points)


def segment_boundaries(values: torch.Tensor, segments: int) -> torch.Tensor:
    """Grid indices 0 = i_0 < ... < i_K = G splitting G grid intervals into K segments of equal variation.

    ``values: (G + 1,)`` the output on a uniform grid. Each interval weighs |change|
    plus a floor (a quarter of the mean change), so flat stretches still get a segment
    now and then and a flat path gives equal segments.
    """
    intervals = values.shape[0] - 1
    segments = min(segments, intervals)
    change = values.diff().abs().double()
    weight = change + 0.25 * change.mean() + 1e-12
    cumulative = torch.cat([weight.new_zeros(1), weight.cumsum(0)])
    cumulative = cumulative / cumulative[-1]
    quantiles = torch.arange(1, segments, dtype=torch.float64) / segments
    inner = torch.searchsorted(cumulative, quantiles).tolist()  # first grid point past each quantile
    bounds = [0]
    for k, index in enumerate(inner, start=1):
        # at least one interval per segment, and room left for the segments still to come
        bounds.append(min(max(index, bounds[-1] + 1), intervals - (segments - k)))
    bounds.append(intervals)
    return torch.tensor(bounds)


def _adaptive(forward, path_in, path_base, tokens, target, n_steps, method, internal_batch_size) -> _PathIntegral:
    """Integrated Gradients with the path split where the output changes most.

    A DEQ's output can change steeply along the path (a GroupNorm on a nearly flat
    group, a solve near a fold), and a fixed quadrature rule spends its few points
    elsewhere. So: (1) evaluate the output without gradients on a uniform grid of
    n_steps/2 intervals; (2) split the path at grid points into segments of equal
    output variation; (3) run Captum's IG on every segment (segments are Captum's
    "examples": one call), with a 4-point Gauss-Legendre rule each; (4) add the
    segments up. IG is additive along the straight path, so the sum is the path's
    IG; the completeness gap telescopes to sum(attributions) - (F(x) - F(baseline)),
    with F(x), F(baseline) read off the grid (its end points), so no extra solves.
    """
    b = path_in[0].shape[0]
    classes = len(forward.model.config.class_names)
    per_segment = min(ADAPTIVE_NODES, n_steps)
    segments = max(1, n_steps // per_segment)
    intervals = max(segments, int(n_steps * ADAPTIVE_GRID))
    grid = torch.linspace(0, 1, intervals + 1, dtype=torch.float64)

    # (1) the grid, in chunks of whole cases, without gradients
    cases_per_chunk = b if internal_batch_size is None else max(1, internal_batch_size // (intervals + 1))
    outputs = []
    with torch.no_grad():
        for start in range(0, b, cases_per_chunk):
            chunk = slice(start, start + cases_per_chunk)
            cases = len(range(b)[chunk])
            rows = _points([p[chunk] for p in path_in], [p[chunk] for p in path_base], grid.expand(cases, -1))
            outputs.append(forward(*rows, *(t[chunk].repeat_interleave(intervals + 1, dim=0) for t in tokens)))
    grid_calls = list(forward.calls)
    outputs = torch.cat(outputs).cpu().reshape(b, intervals + 1, -1)
    targets = outputs[:, -1].argmax(dim=1) if target is None else target_classes(target, b, classes)
    values = outputs.gather(2, targets[:, None, None].expand(b, intervals + 1, 1))[..., 0].double()

    # (2) segments of equal variation, per case
    bounds = torch.stack([segment_boundaries(values[c], segments) for c in range(b)])  # (b, K+1)
    edges = grid[bounds]
    starts, ends = _points(path_in, path_base, edges[:, :-1]), _points(path_in, path_base, edges[:, 1:])
    segment_tokens = tuple(t.repeat_interleave(segments, dim=0) for t in tokens)
    segment_targets = targets.repeat_interleave(segments)

    # (3) Captum on the segments, in groups that respect internal_batch_size
    examples = b * segments
    group = examples if internal_batch_size is None else max(1, min(examples, internal_batch_size))
    ig = IntegratedGradients(forward)
    attributions = [torch.zeros_like(p) for p in path_in]
    gradient_calls: list[tuple[_Call, int, int]] = []  # (call, first example, examples in its Captum call)
    nodes = captum_alphas(SEGMENT_RULE, per_segment)
    for first in range(0, examples, group):
        part = slice(first, first + group)
        before = len(forward.calls)
        part_ends, part_starts = tuple(e[part] for e in ends), tuple(s[part] for s in starts)
        pieces = ig.attribute(
            part_ends,
            baselines=part_starts,
            target=segment_targets[part].tolist(),
            additional_forward_args=tuple(t[part] for t in segment_tokens) if tokens else None,
            n_steps=per_segment,
            method=SEGMENT_RULE,
            internal_batch_size=internal_batch_size,
        )
        check_path_rows(forward.calls[before:], part_ends, part_starts, nodes)
        size = len(range(examples)[part])
        gradient_calls += [(c, first, size) for c in forward.calls[before:]]
        # (4) add each case's segments up
        owner = torch.arange(examples)[part] // segments
        for total, piece in zip(attributions, pieces):
            total.index_add_(0, owner.to(total.device), piece.detach().to(total.dtype))

    at_baseline, at_input = values[:, 0], values[:, -1]
    attribution_sums = sum(a.reshape(b, -1).sum(dim=1).double().cpu() for a in attributions)
    grid_cases = torch.arange(b).repeat_interleave(intervals + 1)
    grid_position = torch.arange(intervals + 1).repeat(b)
    offsets = torch.cumsum(torch.tensor([0] + [len(c.outputs) for c in grid_calls]), 0).tolist()

    def grid_rows(k: int, n: int, where: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        rows = torch.arange(offsets[k], offsets[k] + n)
        cases = grid_cases[rows]
        return torch.where(where(grid_position[rows]), cases, torch.full_like(cases, -1))

    def gradient_rows(k: int, n: int) -> torch.Tensor:
        _, first, size = gradient_calls[k]
        return (first + torch.arange(n) % size) // segments  # alpha-major per call (check_path_rows)

    def inner_rows(k: int, n: int) -> torch.Tensor:
        if k < len(grid_calls):
            return grid_rows(k, n, lambda p: (p > 0) & (p < intervals))
        return gradient_rows(k - len(grid_calls), n)

    path_calls = grid_calls + [c for c, _, _ in gradient_calls]
    return _PathIntegral(
        targets=targets,
        attributions=tuple(attributions),
        delta=attribution_sums - (at_input - at_baseline),
        value_at_input=at_input,
        value_at_baseline=at_baseline,
        input_solve=_rows_of_cases(grid_calls, lambda k, n: grid_rows(k, n, lambda p: p == intervals), b),
        baseline_solve=_rows_of_cases(grid_calls, lambda k, n: grid_rows(k, n, lambda p: p == 0), b),
        path_solve=_rows_of_cases(path_calls, inner_rows, b),
        path_alphas=grid,
        path_values=values,
    )
