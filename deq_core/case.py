"""One case: its key, its inputs per modality, its texts, its label and where it came from.

Every part of the product that handles "one case" (the app's pages, ``explain_case``,
decision reports, the Lens) takes a :class:`Case`, built in one of three ways:

    Case.from_dataset(data, "insp-0042")            # a row of a dataset split
    Case.from_upload(modalities, {"photo": png_bytes, "sensors": csv_bytes, "note": "Small scratch."})
    case.variant(corrupted_inputs, specs)           # the same case with corruptions applied

and this module holds the two rules every one of those paths shares:

- :func:`batch_of_one`: a case's inputs always carry a batch dimension of 1;
- :func:`absent_input`: an absent modality is its training mean (for text: all
  padding). Modality Shapley values, the "drop" corruption, uploads with a missing
  input and the training-mean IG baseline all call it, so they agree by construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import torch

from deq_core.engine.modality import Inputs, Modality

if TYPE_CHECKING:  # pragma: no cover
    from deq_core.data import MultimodalDataset
    from deq_core.explain.corrupt import CorruptionSpec

CaseInputs = tuple[torch.Tensor, ...]
"""A case's inputs as stored: one ``(1, *shape)`` CPU tensor per modality (``Inputs`` is what functions accept)."""

UPLOAD_PREFIX = "upload-"
SOURCES = ("dataset", "upload", "variant")


# --------------------------------------------------------------------------- the shared rules


def absent_input(mean: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A modality made absent: its training mean ``(*shape)`` broadcast to ``like`` (``(b, *shape)``).

    The one rule for "this input is missing". Text means are zeros, that is all padding,
    so an absent note is an empty one; the result takes ``like``'s dtype and device.
    """
    return mean.to(device=like.device, dtype=like.dtype).expand_as(like).clone()


def batch_of_one(modalities: Sequence[Modality], inputs: Inputs) -> CaseInputs:
    """One case's inputs, each given with or without its batch dimension of 1, as ``(1, *shape)`` CPU tensors.

    Raises ValueError naming the modality when the count or a shape does not fit.
    """
    if len(inputs) != len(modalities):
        names = ", ".join(m.name for m in modalities)
        raise ValueError(f"expected {len(modalities)} inputs ({names}), got {len(inputs)}")
    out = []
    for m, x in zip(modalities, inputs):
        x = torch.as_tensor(x).detach().cpu()
        if x.dim() == len(m.shape):
            x = x.unsqueeze(0)
        if tuple(x.shape) != (1, *m.shape):
            raise ValueError(f"modality {m.name!r}: one case has shape {tuple(m.shape)} (or (1, *shape)), got {tuple(x.shape)}")
        out.append(x)
    return tuple(out)


def digest(*parts: bytes | str) -> str:
    """16 hex digits of SHA-256 over the parts, each followed by a NUL (the upload key)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Provenance:
    """Where a case came from.

    Attributes:
        source: ``"dataset"`` (a row of a split), ``"upload"`` (files a person gave) or
            ``"variant"`` (another case with corruptions applied).
        dataset, split, row: the dataset row (``source == "dataset"``).
        dropped: modalities of an upload that were not given and stand at their training mean.
        parent: the key of the case a variant was made from.
        corruptions: the specs that made a variant, in order.
    """

    source: Literal["dataset", "upload", "variant"]
    dataset: str | None = None
    split: str | None = None
    row: int | None = None
    dropped: tuple[str, ...] = ()
    parent: str | None = None
    corruptions: tuple["CorruptionSpec", ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown case source {self.source!r}; one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------------- uploads


class UploadError(ValueError):
    """Uploaded inputs that cannot be read; ``problems`` has one line per input."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class MissingInputs(ValueError):
    """An upload without some inputs, built without training means to stand in for them."""

    def __init__(self, missing: Sequence[str]):
        self.missing = tuple(missing)
        super().__init__(f"missing: {', '.join(self.missing)}")


def read_input(modality: Modality, content: bytes | str, notes: list[str] | None = None,
               name: str | None = None) -> torch.Tensor:  # fmt: skip
    """One uploaded input as ``(1, *shape)``: text through the tokenizer, files through their kind's reader.

    ``notes`` gets what the image reader converted (``name``: the file's name, to
    tell a JPEG named ``.png``). Raises ``deq_core.data.readers.InputError`` with the reason.
    """
    from deq_core.data.readers import READERS, read_image, text_to_tokens

    if modality.kind == "image":
        content = content.encode() if isinstance(content, str) else content
        return read_image(content, modality, notes, name)[None]

    if modality.kind == "text":
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        return text_to_tokens(text, modality)[None]
    if isinstance(content, str):
        content = content.encode()
    return READERS[modality.kind](content, modality)[None]


# --------------------------------------------------------------------------- the case


@dataclass(frozen=True, eq=False)
class Case:
    """One case.

    Attributes:
        key: its identity: the dataset case id, ``upload-<sha256 of the files>``, or for a
            variant ``<parent key>|<corruptions>``. Corruption randomness is keyed by it.
        inputs: one ``(1, *shape)`` CPU tensor per modality.
        label: the true class index, None where unknown (uploads).
        texts: raw text per text modality, as a person reads it.
        provenance: where it came from.
    """

    key: str
    inputs: CaseInputs
    label: int | None = None
    texts: Mapping[str, str] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=lambda: Provenance("dataset"))

    @classmethod
    def from_dataset(cls, data: "MultimodalDataset", case_id: str) -> "Case":
        """A row of a dataset split by id (KeyError naming the split for an unknown id)."""
        inputs, label = data.case(case_id)
        row = data.ids.index(case_id)
        return cls(
            key=case_id,
            inputs=tuple(x.detach().cpu() for x in inputs),
            label=label,
            texts={name: values[row] for name, values in data.texts.items()},
            provenance=Provenance("dataset", dataset=data.name, split=data.split, row=row),
        )

    @classmethod
    def from_inputs(cls, modalities: Sequence[Modality], inputs: Sequence[torch.Tensor], key: str,
                    label: int | None = None, texts: Mapping[str, str] | None = None,
                    provenance: Provenance | None = None) -> "Case":  # fmt: skip
        """A case from tensors given with or without their batch dimension of 1 (shapes checked)."""
        return cls(key=key, inputs=batch_of_one(modalities, inputs), label=label, texts=dict(texts or {}),
                   provenance=provenance or Provenance("dataset"))  # fmt: skip

    @classmethod
    def from_upload(
        cls,
        modalities: Sequence[Modality],
        contents: Mapping[str, bytes | str | None],
        means: Sequence[torch.Tensor] | None = None,
        file_names: Mapping[str, str] | None = None,
        notes: list[str] | None = None,
    ) -> "Case":
        """A case from what a person uploaded: file bytes per modality, text for text modalities.

        Args:
            contents: modality name -> bytes (a file) or str (text); None or blank: not given.
            means: the model's training means (``model.input_means()``); a missing input
                stands at its mean (``absent_input``), recorded in the provenance and the key.
                None: a missing input raises ``MissingInputs``.
            file_names: shown in the problems (``photo (part.png): ...``).
            notes: when given, gets what was converted to read an input (a JPEG named
                ``.png``, a colour photo made grayscale), named as the problems are.

        Raises:
            UploadError: some inputs cannot be read (every problem is listed).
            MissingInputs: inputs are missing and ``means`` is None.
        """
        from deq_core.data.readers import InputError

        file_names = file_names or {}
        read: list[torch.Tensor | None] = []
        parts: list[bytes | str] = []
        problems, missing, texts = [], [], {}
        for m in modalities:
            content = contents.get(m.name)
            if content is None or (isinstance(content, str) and not content.strip()) or (isinstance(content, bytes) and not content):
                read.append(None)
                missing.append(m.name)
                continue
            where = f"{m.name} ({file_names[m.name]})" if m.name in file_names else m.name
            found: list[str] = []
            try:
                read.append(read_input(m, content, found, file_names.get(m.name)))
            except InputError as error:
                problems.append(f"{where}: {error}")
                read.append(None)
                continue
            if notes is not None:
                notes.extend(f"{where}: {note}" for note in found)
            parts.append(content)
            if m.kind == "text":
                texts[m.name] = content if isinstance(content, str) else content.decode("utf-8")
        if problems:
            raise UploadError(problems)
        if missing:
            if means is None or len(missing) == len(modalities):
                raise MissingInputs(missing)
            read = [
                absent_input(means[i].detach().cpu(), torch.empty((1, *m.shape), dtype=torch.int64 if m.kind == "text" else torch.float32))
                if x is None else x
                for i, (x, m) in enumerate(zip(read, modalities))
            ]  # fmt: skip
            parts.append("dropped:" + ",".join(missing))
        return cls(
            key=UPLOAD_PREFIX + digest(*parts),
            inputs=tuple(read),
            label=None,
            texts=texts,
            provenance=Provenance("upload", dropped=tuple(missing)),
        )

    def variant(self, inputs: Sequence[torch.Tensor], specs: Sequence["CorruptionSpec"]) -> "Case":
        """This case as the model sees it with ``specs`` applied (``inputs``: the corrupted tensors).

        The Lens applies the corruptions (they need the model's training statistics);
        this records what was done. A variant of a variant keeps the first parent.
        """
        specs = tuple(specs)
        parent = self.provenance.parent if self.provenance.source == "variant" else self.key
        chain = (*self.provenance.corruptions, *specs) if self.provenance.source == "variant" else specs
        return Case(
            key=f"{parent}|" + ";".join(s.describe() for s in chain),
            inputs=tuple(torch.as_tensor(x).detach().cpu() for x in inputs),
            label=self.label,
            texts=dict(self.texts),
            provenance=Provenance("variant", dataset=self.provenance.dataset, split=self.provenance.split,
                                  row=self.provenance.row, parent=parent, corruptions=chain),
        )  # fmt: skip

    @property
    def is_upload(self) -> bool:
        return self.provenance.source == "upload"

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the inputs' dtypes, shapes and bytes: what caches key a case by, beside its key."""
        h = hashlib.sha256(self.key.encode())
        for x in self.inputs:
            array = x.detach().cpu().contiguous().numpy()
            h.update(f"|{array.dtype.name}|{array.shape}|".encode())
            h.update(array.tobytes())
        return h.hexdigest()[:24]

    def __repr__(self) -> str:
        shapes = ", ".join("x".join(map(str, x.shape[1:])) for x in self.inputs)
        return f"Case({self.key!r}, {self.provenance.source}, inputs [{shapes}], label={self.label})"
