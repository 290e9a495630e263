"""What a modality is: a name, a kind and the shape of one raw input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# One raw input tensor per modality, in the model's modality order, each ``(batch, *shape)``:
# what the model, the attributions and the Shapley values take. Any sequence is accepted
# (callers build lists); functions that assemble a new batch return a tuple of them.
Inputs = Sequence[torch.Tensor]

KINDS = ("image", "timeseries", "text", "vector")

PAD_TOKEN = "<pad>"
UNKNOWN_TOKEN = "<unk>"

# Limits on a modality read from a model folder (``check_modality_data``). Every array a
# model allocates for one input (its training mean, the encoder's activations, an
# attribution's integration path) grows with these, so a config may ask for no more.
# The shipped models use at most 3 x 128 (sensors), 1 x 64 x 64 (photo), 216 features
# and 119 tokens: the limits are far above them and far below what a server cannot hold.
SHAPE_LIMITS: dict[str, tuple[int, ...]] = {  # the largest size of each dimension, by kind
    "image": (16, 1024, 1024),  # channels, height, width
    "timeseries": (1024, 65536),  # channels, steps
    "text": (4096,),  # tokens
    "vector": (65536,),  # features
}
MAX_INPUT_VALUES = 1 << 20  # one raw input: 4 MB of float32 (a 1 x 1024 x 1024 picture)
MAX_VOCABULARY = 50_000  # an embedding of 50000 x 1024 floats is 200 MB
MAX_NAMES = 65_536  # feature names
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class Range:
    """The allowed values of one number of a config file, and the message when it is not one.

    ``low_open`` excludes ``low`` itself (a mixing weight of 0 never moves the iterate).
    """

    low: float
    high: float
    integer: bool = True
    low_open: bool = False
    why: str = ""

    def __str__(self) -> str:
        return f"{self.low:g}{' (excluded)' if self.low_open else ''} to {self.high:g}"

    def check(self, field: str, value: object) -> None:
        """Raise ``ValueError`` naming ``field``, ``value`` and the range unless ``value`` is inside it.

        Booleans are refused as numbers (JSON ``true`` is not a width); NaN is outside every range.
        """
        kind = "an integer" if self.integer else "a number"
        number = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"{field} = {show(value)} must be {kind} from {self}")
        above_low = value > self.low if self.low_open else value >= self.low
        if not (above_low and value <= self.high):
            reason = f" ({self.why})" if self.why else ""
            raise ValueError(f"{field} = {show(value)} is outside the allowed range {self}{reason}")


def show(value: object, limit: int = 60) -> str:
    """``repr`` of a value from a config, cut short: a message names a value, it does not dump it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_strings(field: str, value: object, count: Range, chars: int = MAX_NAME_CHARS) -> list[str]:
    """``value`` as a list of at most ``count.high`` strings of at most ``chars`` characters each."""
    if not isinstance(value, list):
        raise ValueError(f"{field} = {show(value)} must be a list of strings")
    if not count.low <= len(value) <= count.high:
        raise ValueError(f"{field}: {len(value)} entries, outside the allowed range {count}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"{field}[{i}] = {show(item)} must be a string")
        if len(item) > chars:
            raise ValueError(f"{field}[{i}]: {len(item)} characters, over the limit of {chars}")
    return value


def check_modality_data(data: object, where: str) -> None:
    """Refuse a modality entry of a config file before anything is built from it.

    Checks the types, each dimension against ``SHAPE_LIMITS``, the values per input
    against ``MAX_INPUT_VALUES`` and the vocabulary against ``MAX_VOCABULARY``; the
    rest (kind, rank, the text vocabulary's first tokens) is ``Modality``'s own check.
    Raises ``ValueError`` naming ``where`` (``modalities[2] 'note'``), the field and the range.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where} = {show(data)} must be an object with a name, a kind and a shape")
    name = data.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"{where}: name = {show(name)} must be a string of 1 to {MAX_NAME_CHARS} characters")
    where = f"{where} {name!r}"
    kind, shape = data.get("kind"), data.get("shape")
    if not isinstance(kind, str):
        raise ValueError(f"{where}: kind = {show(kind)} must be one of {KINDS}")
    if not isinstance(shape, list) or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise ValueError(f"{where}: shape = {show(shape)} must be a list of integers")
    limits = SHAPE_LIMITS.get(kind, ())
    if len(limits) == len(shape):
        for j, (size, largest) in enumerate(zip(shape, limits)):
            Range(1, largest).check(f"{where}: shape[{j}]", size)
    values = math.prod(shape) if all(s > 0 for s in shape) else 0
    if values > MAX_INPUT_VALUES:
        raise ValueError(f"{where}: shape {shape} holds {values} values per input, over the limit of {MAX_INPUT_VALUES}")
    if "vocabulary" in data:
        check_strings(f"{where}: vocabulary", data["vocabulary"], Range(0, MAX_VOCABULARY))
    if "feature_names" in data:
        check_strings(f"{where}: feature_names", data["feature_names"], Range(0, MAX_NAMES))


@dataclass(frozen=True)
class Modality:
    """One input channel of a multimodal case.

    Attributes:
        name: identifier used in configs, manifests and the app (``"photo"``).
        kind: one of ``KINDS``; selects the encoder, corruptions and baselines.
        shape: shape of one raw input, without the batch dimension:
            image ``(channels, height, width)``, timeseries ``(channels, steps)``,
            text ``(max_tokens,)`` (token ids), vector ``(features,)``.
        vocabulary: text only; token strings, index 0 is ``<pad>``, 1 is ``<unk>``.
        feature_names: optional names of a vector's features or a series' channels.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    vocabulary: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "vocabulary", tuple(self.vocabulary))
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        expected_rank = {"image": 3, "timeseries": 2, "text": 1, "vector": 1}[self.kind]
        if len(self.shape) != expected_rank or any(s <= 0 for s in self.shape):
            raise ValueError(
                f"modality {self.name!r}: a {self.kind} needs a positive shape of rank "
                f"{expected_rank}, got {self.shape}"
            )
        if self.kind == "text":
            if len(self.vocabulary) < 2 or self.vocabulary[:2] != (PAD_TOKEN, UNKNOWN_TOKEN):
                raise ValueError(
                    f"modality {self.name!r}: a text vocabulary must start with "
                    f"{PAD_TOKEN!r}, {UNKNOWN_TOKEN!r}"
                )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "vocabulary": list(self.vocabulary),
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Modality":
        unknown = set(data) - {"name", "kind", "shape", "vocabulary", "feature_names"}
        if unknown:
            raise ValueError(f"modality: unknown keys {sorted(unknown)}")
        return cls(
            name=data["name"],
            kind=data["kind"],
            shape=tuple(data["shape"]),
            vocabulary=tuple(data.get("vocabulary", ())),
            feature_names=tuple(data.get("feature_names", ())),
        )
