"""The in-memory form every dataset loader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from deq_core.engine.modality import Modality


@dataclass(frozen=True)
class MultimodalDataset:
    """Cases of one split, aligned across modalities.

    Attributes:
        name: dataset name (``"handwritten"``, ``"inspection"`` or a folder name).
        split: ``"train"``, ``"val"`` or ``"test"``.
        modalities: one ``Modality`` per input, in model order.
        class_names: label names; ``labels`` index into it.
        inputs: one tensor per modality, ``(n, *modality.shape)``; float32, text as int64 token ids.
        labels: ``(n,)`` int64.
        ids: one stable case identifier per row.
        texts: raw text per text modality name, ``n`` strings, for display and reports.
        normal_class: the class that means "nothing wrong" (``"ok"``), if the dataset has one.
    """

    name: str
    split: str
    modalities: tuple[Modality, ...]
    class_names: tuple[str, ...]
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor
    ids: tuple[str, ...]
    texts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    normal_class: str | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.inputs) != len(self.modalities):
            raise ValueError("one input tensor per modality is required")
        for modality, x in zip(self.modalities, self.inputs):
            if tuple(x.shape) != (n, *modality.shape):
                raise ValueError(
                    f"{self.name}/{self.split}: modality {modality.name!r} has shape "
                    f"{tuple(x.shape)}, expected {(n, *modality.shape)}"
                )
        if len(self.ids) != n:
            raise ValueError("one id per case is required")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | torch.Tensor) -> "MultimodalDataset":
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.tolist()
        return MultimodalDataset(
            name=self.name,
            split=self.split,
            modalities=self.modalities,
            class_names=self.class_names,
            inputs=tuple(x[index] for x in self.inputs),
            labels=self.labels[index],
            ids=tuple(self.ids[i] for i in rows),
            texts={k: tuple(v[i] for i in rows) for k, v in self.texts.items()},
            normal_class=self.normal_class,
        )

    def case(self, case_id: str) -> tuple[tuple[torch.Tensor, ...], int]:
        """Inputs with a batch dimension of 1, and the label, of one case by id."""
        try:
            row = self.ids.index(case_id)
        except ValueError:
            raise KeyError(f"{self.name}/{self.split}: no case with id {case_id!r}") from None
        return tuple(x[row : row + 1] for x in self.inputs), int(self.labels[row])
