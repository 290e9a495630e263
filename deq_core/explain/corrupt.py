"""Modality corruptions: degrade one input of a case and see what the model does.

A corruption is named by a ``CorruptionSpec`` (modality, kind, severity in [0, 1],
seed) that round-trips through JSON, so a report can replay it exactly. The
function behind a kind is chosen from ``CORRUPTIONS`` by the modality's kind:

    image, timeseries, vector
        drop            the whole input replaced by the training mean (the modality is missing)
        drop_zero       the whole input replaced by zeros
        gaussian_noise  + severity x training scale x N(0, 1), scale per channel / feature
    image       blur, occlusion, contrast, salt_and_pepper
    timeseries  dropout, window_dropout, spikes, drift
    text        drop (all padding), token_dropout, typos, word_shuffle, random_words
    vector      feature_dropout

``drop`` and ``drop_zero`` are two kinds, not a spec parameter, so every spec has
the same four fields. ``drop`` is binary: any severity above 0 removes the whole
input. Text has no ``drop_zero`` (its mean already is all padding) and no
``gaussian_noise``; ``random_words`` is its noise.

Guarantees of every kind (``tests/test_corrupt.py`` checks them):

* severity 0 is the identity and severity 1 changes the input;
* the input tensor is never modified in place; shape and dtype are kept;
* randomness is per case: row r draws from its own generator, seeded by
  (spec seed, modality, kind, case key r). The case key defaults to the row
  index in the batch; pass stable keys (the sweep passes case ids) and a case
  gets the same corruption alone as in any batch;
* the severity is not part of the seed and every kind draws the same random
  numbers at every severity, so the damage of one case grows monotonically with
  severity (the same pixels salted, the same words dropped first).

Text corruptions act on token ids, not on the raw note: ``typos`` spells each
chosen word from the vocabulary, misspells it and looks it up again with the
tokeniser's rules (``deq_core.engine.text.words``). Nothing the model could see is lost:
a word outside the vocabulary is ``<unk>`` before and after a typo, and words past
``max_tokens`` never reach the model. It keeps one ``apply`` signature for all kinds.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from deq_core.case import absent_input as absent
from deq_core.engine.modality import KINDS, Modality
from deq_core.engine.text import words

# Blur sigma at severity 1, as a fraction of the shorter image side: 8 px on the
# 64 px inspection photo, 2 px on the 16 x 15 handwritten digits.
BLUR_SIGMA_FRACTION = 1 / 8
SPIKE_RATE = 0.2  # at severity 1, one reading in five is a spike
SPIKE_HEIGHT = 5.0  # in training standard deviations: far outside normal readings
DRIFT_AT_END = 3.0  # training standard deviations of drift reached at the last step, severity 1

CaseKey = int | str


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption of one modality: enough to replay it exactly.

    Attributes:
        modality: name of the modality it corrupts (``"photo"``).
        kind: corruption name, one of ``available_corruptions(modality.kind)``.
        severity: 0 (identity) to 1 (strongest).
        seed: seeds the per-case random draws (see the module docstring).
    """

    modality: str
    kind: str
    severity: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or not self.modality:
            raise ValueError(f"corruption: modality must be a non-empty name, got {self.modality!r}")
        if self.kind not in ALL_KINDS:
            raise ValueError(f"corruption kind {self.kind!r} is not one of {sorted(ALL_KINDS)}")
        severity = float(self.severity)
        if not 0.0 <= severity <= 1.0:  # also rejects NaN
            raise ValueError(f"corruption severity must lie in [0, 1], got {self.severity!r}")
        if isinstance(self.seed, bool):
            raise ValueError("corruption seed must be an integer")
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "seed", operator.index(self.seed))

    def describe(self) -> str:
        return f"{self.modality}: {self.kind} {self.severity:g} (seed {self.seed})"

    def to_dict(self) -> dict:
        return {"modality": self.modality, "kind": self.kind, "severity": self.severity, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Mapping) -> "CorruptionSpec":
        unknown = set(data) - {"modality", "kind", "severity", "seed"}
        if unknown:
            raise ValueError(f"corruption: unknown keys {sorted(unknown)}")
        return cls(data["modality"], data["kind"], data["severity"], data.get("seed", 0))


def corrupt(modality: str, kind: str, severity: float, seed: int = 0) -> CorruptionSpec:
    """The spec of one corruption: ``corrupt("photo", "blur", 0.3)``."""
    return CorruptionSpec(modality, kind, severity, seed)


@dataclass(frozen=True)
class CorruptionSet:
    """Several corruptions, applied in order.

    Specs may name different modalities or the same one; on the same modality they
    compose, the later one corrupting the earlier one's output (blur, then noise).
    """

    specs: tuple[CorruptionSpec, ...] = ()

    def __post_init__(self) -> None:
        specs = tuple(self.specs)
        if not all(isinstance(s, CorruptionSpec) for s in specs):
            raise TypeError("a CorruptionSet holds CorruptionSpec objects")
        object.__setattr__(self, "specs", specs)

    def __iter__(self):
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def to_dict(self) -> dict:
        return {"specs": [s.to_dict() for s in self.specs]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "CorruptionSet":
        unknown = set(data) - {"specs"}
        if unknown:
            raise ValueError(f"corruption set: unknown keys {sorted(unknown)}")
        return cls(tuple(CorruptionSpec.from_dict(s) for s in data["specs"]))


@dataclass(frozen=True)
class InputReference:
    """What corruptions measure against, one entry per modality.

    Attributes:
        means: training-mean input ``(*shape)``; ``drop`` and the gap fillers use it.
        scales: training standard deviation, broadcastable to ``(*shape)`` (per
            channel for images and series, per feature for vectors); noise, spikes
            and drift are measured in it. Unused for text.
    """

    means: tuple[torch.Tensor, ...]
    scales: tuple[torch.Tensor, ...]

    @classmethod
    def of_model(cls, model) -> "InputReference":
        """The training statistics a ``FusionModel``'s encoders carry."""
        return cls(
            tuple(m.detach() for m in model.input_means()),
            tuple(s.detach() for s in model.input_scales()) if hasattr(model, "input_scales")
            else tuple(encoder.scale.detach() for encoder in model.encoders),
        )

    @classmethod
    def neutral(cls, modalities: Sequence[Modality]) -> "InputReference":
        """Zero means and unit scales: raw units, for data without a trained model."""
        return cls(tuple(torch.zeros(m.shape) for m in modalities), tuple(torch.ones(()) for _ in modalities))

    def fingerprint(self) -> str:
        """SHA-256 of the statistics: equal fingerprints corrupt identically."""
        digest = hashlib.sha256()
        for t in (*self.means, *self.scales):
            t = t.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class _Context:
    """What a corruption function may use besides the batch itself."""

    modality: Modality
    mean: torch.Tensor  # (*shape), the batch's dtype and device
    scale: torch.Tensor  # (*shape)
    generators: tuple[torch.Generator, ...]  # one per case, CPU

    def draw(self, sample: Callable[[torch.Generator], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Stack one CPU draw per case and move it to ``like``'s device (dtype kept)."""
        return torch.stack([sample(g) for g in self.generators]).to(like.device)


CorruptionFunction = Callable[[torch.Tensor, float, _Context], torch.Tensor]

# modality kind -> corruption kind -> function(x: (n, *shape), severity in (0, 1], context) -> (n, *shape)
CORRUPTIONS: dict[str, dict[str, CorruptionFunction]] = {kind: {} for kind in KINDS}


def _register(name: str, *modality_kinds: str):
    def decorator(function: CorruptionFunction) -> CorruptionFunction:
        for kind in modality_kinds:
            CORRUPTIONS[kind][name] = function
        return function

    return decorator


def available_corruptions(kind: str) -> tuple[str, ...]:
    """Corruption kinds for a modality kind, in registry order (for the app's dropdowns)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"modality kind {kind!r} is not one of {KINDS}")
    return tuple(CORRUPTIONS[kind])


def describe_corruption(modality_kind: str, kind: str) -> str:
    """One line saying what the corruption does (its function's docstring)."""
    return (CORRUPTIONS[modality_kind][kind].__doc__ or kind).strip().splitlines()[0]


# --------------------------------------------------------------------------- every kind


@_register("drop", "image", "timeseries", "vector")
def _drop(x, severity, context):
    """The whole input replaced by the training mean: the modality is missing (``deq_core.case.absent_input``)."""
    return absent(context.mean, x)


@_register("drop_zero", "image", "timeseries", "vector")
def _drop_zero(x, severity, context):
    """The whole input replaced by zeros."""
    return torch.zeros_like(x)


@_register("gaussian_noise", "image", "timeseries", "vector")
def _gaussian_noise(x, severity, context):
    """Adds Gaussian noise of standard deviation severity x the training scale."""
    noise = context.draw(lambda g: torch.randn(context.modality.shape, generator=g), x).to(x.dtype)
    return x + severity * context.scale * noise


# --------------------------------------------------------------------------- image: (n, c, h, w)


@_register("blur", "image")
def _blur(x, severity, context):
    """Gaussian blur; sigma grows to 1/8 of the shorter side at severity 1."""
    channels, height, width = x.shape[1:]
    sigma = severity * min(height, width) * BLUR_SIGMA_FRACTION
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(dtype=x.dtype, device=x.device)
    # Separable: along the width, then the height; edges replicated so borders do not darken. One case
    # at a time: a batched convolution may take another kernel path than a single case's and differ in the
    # last bit, and a case must get the same corruption alone and in a batch (seen on some CPUs).
    def one(case: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(F.pad(case, (radius, radius, 0, 0), mode="replicate"),
                       kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # fmt: skip
        return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"),
                        kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # fmt: skip

    return torch.cat([one(x[i : i + 1]) for i in range(len(x))]) if len(x) else x


@_register("occlusion", "image")
def _occlusion(x, severity, context):
    """A rectangle covering the severity fraction of the area, filled with the training mean; placed per case."""
    height, width = x.shape[2:]
    patch_h, patch_w = round(height * math.sqrt(severity)), round(width * math.sqrt(severity))
    where = context.draw(lambda g: torch.rand(2, generator=g, dtype=torch.float64), x)  # (n, 2) in [0, 1)
    top = (where[:, 0] * (height - patch_h + 1)).floor().long()
    left = (where[:, 1] * (width - patch_w + 1)).floor().long()
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    inside_rows = (rows >= top[:, None]) & (rows < (top + patch_h)[:, None])  # (n, h)
    inside_cols = (cols >= left[:, None]) & (cols < (left + patch_w)[:, None])  # (n, w)
    covered = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]  # (n, 1, h, w)
    return torch.where(covered, context.mean.expand_as(x), x)


@_register("contrast", "image")
def _contrast(x, severity, context):
    """Contrast lost toward each picture's own mean brightness (flat grey at severity 1)."""
    centre = x.mean(dim=(2, 3), keepdim=True)
    return centre + (1 - severity) * (x - centre)


@_register("salt_and_pepper", "image")
def _salt_and_pepper(x, severity, context):
    """The severity fraction of pixels set to the picture's own brightest or darkest value."""
    shape = context.modality.shape
    hit_draw = context.draw(lambda g: torch.rand(2, *shape, generator=g), x)  # (n, 2, c, h, w)
    hit, salt = hit_draw[:, 0] < severity, hit_draw[:, 1] < 0.5
    brightest = x.amax(dim=(2, 3), keepdim=True).expand_as(x)
    darkest = x.amin(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.where(hit, torch.where(salt, brightest, darkest), x)


# --------------------------------------------------------------------------- timeseries: (n, channels, steps)


def _hold_over_gaps(x: torch.Tensor, missing: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Fill missing steps the way a data logger does: repeat the last reading.

    ``missing: (n, steps)`` bool, the same steps for all channels. A gap at the start
    takes the first reading after it; a series with no reading left gets the training mean.
    """
    steps = x.shape[2]
    t = torch.arange(steps, device=x.device).expand_as(missing)
    kept = ~missing
    last_kept = torch.where(kept, t, torch.full_like(t, -1)).cummax(dim=1).values
    first_kept = torch.where(kept, t, torch.full_like(t, steps)).amin(dim=1, keepdim=True)
    source = torch.where(last_kept >= 0, last_kept, first_kept).clamp(max=steps - 1)
    held = x.gather(2, source[:, None, :].expand_as(x))
    nothing_left = (first_kept == steps)[:, :, None]
    return torch.where(nothing_left, mean.expand_as(x), held)


@_register("dropout", "timeseries")
def _dropout(x, severity, context):
    """The severity fraction of time steps lost (all channels), each gap holding the last reading."""
    steps = x.shape[2]
    lost = round(severity * steps)
    order = context.draw(lambda g: torch.randperm(steps, generator=g), x)  # (n, steps)
    missing = torch.zeros(order.shape, dtype=torch.bool, device=x.device)
    missing.scatter_(1, order[:, :lost], True)  # the first `lost` steps of a fixed order: nested in severity
    return _hold_over_gaps(x, missing, context.mean)


@_register("window_dropout", "timeseries")
def _window_dropout(x, severity, context):
    """One contiguous window of severity x steps lost, holding the last reading; placed per case."""
    steps = x.shape[2]
    length = round(severity * steps)
    where = context.draw(lambda g: torch.rand((), generator=g, dtype=torch.float64), x)  # (n,)
    start = (where * (steps - length + 1)).floor().long()[:, None]
    t = torch.arange(steps, device=x.device)
    missing = (t >= start) & (t < start + length)
    return _hold_over_gaps(x, missing, context.mean)


@_register("spikes", "timeseries")
def _spikes(x, severity, context):
    """Isolated spikes of 5 training standard deviations, at up to 1 in 5 readings at severity 1."""
    shape = context.modality.shape
    draws = context.draw(lambda g: torch.rand(2, *shape, generator=g), x)
    hit = draws[:, 0] < SPIKE_RATE * severity
    sign = torch.where(draws[:, 1] < 0.5, -1.0, 1.0).to(x.dtype)
    return x + torch.where(hit, sign * SPIKE_HEIGHT * context.scale, torch.zeros((), dtype=x.dtype, device=x.device))


@_register("drift", "timeseries")
def _drift(x, severity, context):
    """A linear drift per channel, up or down, reaching 3 training standard deviations at severity 1."""
    channels, steps = x.shape[1:]
    sign = torch.where(context.draw(lambda g: torch.rand(channels, generator=g), x) < 0.5, -1.0, 1.0).to(x.dtype)
    ramp = torch.linspace(0, 1, steps, dtype=x.dtype, device=x.device)
    return x + severity * DRIFT_AT_END * context.scale * sign[:, :, None] * ramp


# --------------------------------------------------------------------------- text: (n, max_tokens) token ids


def _note_words(row: torch.Tensor) -> list[int]:
    """Non-padding token ids of one note, in order."""
    return [int(t) for t in row.tolist() if t != 0]


def _pack(ids: list[int], max_tokens: int) -> list[int]:
    ids = ids[:max_tokens]
    return ids + [0] * (max_tokens - len(ids))


def _per_note(x: torch.Tensor, context: _Context, change: Callable[[list[int], torch.Generator], list[int]]):
    """Apply ``change(word ids, generator) -> word ids`` to each note and repack it."""
    max_tokens = x.shape[1]
    rows = [_pack(change(_note_words(row), g), max_tokens) for row, g in zip(x.cpu(), context.generators)]
    return torch.tensor(rows, dtype=x.dtype).reshape(x.shape).to(x.device)


def _first_positions(count: int, severity: float, generator: torch.Generator) -> list[int]:
    """round(severity x count) positions, the first ones of a random order fixed by the generator."""
    order = torch.randperm(count, generator=generator).tolist() if count else []
    return order[: round(severity * count)]


@_register("drop", "text")
def _drop_text(x, severity, context):
    """The whole note replaced by padding: the note is missing."""
    return torch.zeros_like(x)


@_register("token_dropout", "text")
def _token_dropout(x, severity, context):
    """The severity fraction of the note's words deleted; the rest close up."""

    def change(ids, g):
        gone = set(_first_positions(len(ids), severity, g))
        return [t for i, t in enumerate(ids) if i not in gone]

    return _per_note(x, context, change)


@_register("word_shuffle", "text")
def _word_shuffle(x, severity, context):
    """The severity fraction of the note's words moved: each chosen word takes another chosen word's place."""

    def change(ids, g):
        chosen = _first_positions(len(ids), severity, g)
        out = list(ids)
        for i, position in enumerate(chosen):  # a cycle over the chosen places, so every chosen word moves
            out[chosen[(i + 1) % len(chosen)]] = ids[position]
        return out

    return _per_note(x, context, change)


@_register("random_words", "text")
def _random_words(x, severity, context):
    """The severity fraction of the note's words replaced by other random vocabulary words."""
    real = len(context.modality.vocabulary) - 2  # real words are ids 2 .. V-1 (0 is <pad>, 1 is <unk>)

    def change(ids, g):
        # A uniform pick among the real words other than the current one: an offset of
        # 1 .. real-1 within ids 2 .. V-1 (for <unk>, any real word).
        picks = torch.rand(len(ids), generator=g, dtype=torch.float64).tolist()
        out = list(ids)
        for position in _first_positions(len(ids), severity, g):
            token = ids[position]
            if token >= 2 and real >= 2:
                out[position] = 2 + (token - 2 + 1 + int(picks[position] * (real - 1))) % real
            elif token < 2 and real >= 1:
                out[position] = 2 + int(picks[position] * real)
            # a vocabulary with a single real word has nothing to replace it with
        return out

    return _per_note(x, context, change)


_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Keys next to each key on a QWERTY keyboard (rows staggered by half a key)."""
    neighbours: dict[str, str] = {}
    for r, row in enumerate(_KEYBOARD_ROWS):
        for c, key in enumerate(row):
            near = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
            if r > 0:
                above = _KEYBOARD_ROWS[r - 1]
                near += [above[i] for i in (c, c + 1) if i < len(above)]
            if r + 1 < len(_KEYBOARD_ROWS):
                below = _KEYBOARD_ROWS[r + 1]
                near += [below[i] for i in (c - 1, c) if 0 <= i < len(below)]
            neighbours[key] = "".join(sorted(set("".join(near))))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def misspell(word: str, draws: Sequence[float]) -> str:
    """One typo in ``word``: swap two adjacent different letters, or hit a neighbouring key.

    ``draws``: three numbers in [0, 1) choosing the typo's type, place and key.
    """
    swaps = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
    keys = [i for i, ch in enumerate(word) if ch in KEYBOARD_NEIGHBOURS]
    kind_draw, place_draw, key_draw = draws
    if swaps and (kind_draw < 0.5 or not keys):
        i = swaps[int(place_draw * len(swaps))]
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if keys:
        i = keys[int(place_draw * len(keys))]
        options = KEYBOARD_NEIGHBOURS[word[i]]
        return word[:i] + options[int(key_draw * len(options))] + word[i + 1 :]
    return word


@lru_cache(maxsize=16)
def _vocabulary_index(vocabulary: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(vocabulary)}


@_register("typos", "text")
def _typos(x, severity, context):
    """The severity fraction of the note's words misspelt (adjacent swap or keyboard neighbour), then re-tokenised."""
    vocabulary = context.modality.vocabulary
    index = _vocabulary_index(vocabulary)

    def change(ids, g):
        draws = torch.rand(len(ids), 3, generator=g, dtype=torch.float64).tolist()
        chosen = set(_first_positions(len(ids), severity, g))
        out: list[int] = []
        for i, token in enumerate(ids):
            if i in chosen and token >= 2:  # an <unk> word's spelling is unknown; misspelt it stays <unk>
                # The same rules as deq_core.engine.text.tokenize: a typo may split a word or land on another word.
                out += [index.get(w, 1) for w in words(misspell(vocabulary[token], draws[i]))]
            else:
                out.append(token)
        return out

    return _per_note(x, context, change)


# --------------------------------------------------------------------------- vector: (n, features)


@_register("feature_dropout", "vector")
def _feature_dropout(x, severity, context):
    """The severity fraction of features (chosen per case) replaced by their training mean."""
    features = x.shape[1]
    order = context.draw(lambda g: torch.randperm(features, generator=g), x)
    missing = torch.zeros(order.shape, dtype=torch.bool, device=x.device)
    missing.scatter_(1, order[:, : round(severity * features)], True)
    return torch.where(missing, context.mean.expand_as(x), x)


ALL_KINDS = frozenset(name for table in CORRUPTIONS.values() for name in table)


# --------------------------------------------------------------------------- applying specs


def _case_generators(spec: CorruptionSpec, case_keys: Sequence[CaseKey]) -> tuple[torch.Generator, ...]:
    generators = []
    for key in case_keys:
        # Tag ints and strings apart, so case id "3" and row 3 draw differently.
        tagged = f"s:{key}" if isinstance(key, str) else f"i:{operator.index(key)}"
        digest = hashlib.sha256(f"{spec.seed}|{spec.modality}|{spec.kind}|{tagged}".encode()).digest()
        generators.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))
    return tuple(generators)


def _as_reference(reference, modalities: Sequence[Modality]) -> InputReference:
    if reference is None:
        return InputReference.neutral(modalities)
    if isinstance(reference, InputReference):
        return reference
    if hasattr(reference, "input_means") and hasattr(reference, "encoders"):
        return InputReference.of_model(reference)
    means = tuple(reference)  # training means only: noise is then measured in raw units
    return InputReference(means, tuple(torch.ones(()) for _ in means))


def _as_specs(specs) -> tuple[CorruptionSpec, ...]:
    if isinstance(specs, CorruptionSpec):
        return (specs,)
    return tuple(CorruptionSet(tuple(specs)).specs)


def apply(
    inputs: Sequence[torch.Tensor],
    modalities: Sequence[Modality],
    specs: CorruptionSpec | CorruptionSet | Sequence[CorruptionSpec],
    reference: InputReference | Sequence[torch.Tensor] | None = None,
    case_keys: Sequence[CaseKey] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Corrupt a batch of cases.

    Args:
        inputs: one tensor per modality, ``(n, *modality.shape)``, aligned with
            ``modalities`` (float; text as int64 token ids).
        modalities: the inputs' modalities, in the same order.
        specs: one spec, a ``CorruptionSet`` or a sequence of specs, applied in order.
        reference: an ``InputReference`` (``InputReference.of_model(model)``), a
            ``FusionModel`` (its reference), or a tuple of training means ``(*shape)``
            (``model.input_means()``; noise is then in raw units). None: zero means, unit scales.
        case_keys: n stable identities of the cases (ints or case ids). Row r draws its
            randomness from (seed, modality, kind, case_keys[r]); default 0 .. n-1.
            Pass ``[case_id]`` to replay one case of a batch that was corrupted with ids.

    Returns:
        One tensor per modality, same shapes and dtypes. Corrupted modalities are new
        tensors; the others are the input tensors themselves (nothing is changed in place).
    """
    if len(inputs) != len(modalities):
        raise ValueError(f"expected one input per modality ({len(modalities)}), got {len(inputs)}")
    names = [m.name for m in modalities]
    n = inputs[0].shape[0] if inputs else 0
    keys = tuple(range(n)) if case_keys is None else tuple(case_keys)
    if len(keys) != n:
        raise ValueError(f"expected {n} case keys, got {len(keys)}")
    ref = _as_reference(reference, modalities)
    out = list(inputs)
    for spec in _as_specs(specs):
        if spec.modality not in names:
            raise ValueError(f"corruption of unknown modality {spec.modality!r}; modalities are {names}")
        i = names.index(spec.modality)
        modality, x = modalities[i], out[i]
        table = CORRUPTIONS[modality.kind]
        if spec.kind not in table:
            raise ValueError(
                f"{spec.kind!r} does not apply to {modality.kind} modality {modality.name!r}; "
                f"choose one of {tuple(table)}"
            )
        if tuple(x.shape[1:]) != modality.shape:
            raise ValueError(
                f"modality {modality.name!r}: input shape {tuple(x.shape)}, expected (n, *{modality.shape})"
            )
        if spec.severity == 0:
            continue  # the identity, exactly
        dtype = x.dtype if x.is_floating_point() else torch.float32
        context = _Context(
            modality=modality,
            mean=ref.means[i].to(device=x.device, dtype=dtype).expand(modality.shape),
            scale=ref.scales[i].to(device=x.device, dtype=dtype).expand(modality.shape),
            generators=_case_generators(spec, keys),
        )
        corrupted = table[spec.kind](x, spec.severity, context)
        # The contract every registered function keeps; a new one that breaks it fails here.
        if corrupted.shape != x.shape or corrupted.dtype != x.dtype:
            raise RuntimeError(f"corruption {spec.kind!r} returned {corrupted.dtype} {tuple(corrupted.shape)}")
        out[i] = corrupted
    return tuple(out)


__all__ = [
    "CORRUPTIONS", "CorruptionSet", "CorruptionSpec", "InputReference", "KEYBOARD_NEIGHBOURS",
    "apply", "available_corruptions", "corrupt", "describe_corruption", "misspell",
]  # fmt: skip
