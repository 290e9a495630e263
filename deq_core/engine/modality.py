"""What a modality is: a name, a kind and the shape of one raw input."""

from __future__ import annotations

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
