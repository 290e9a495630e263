"""Datasets: the shipped Handwritten benchmark, the inspection demo, and users' folders.

``load_dataset(name_or_path, split)`` is the one entry point the CLIs and the app use;
``dataset_reference`` gives a dataset's own yardstick for a case, where it has one
(``references``: the inspection data's ideal classifier).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deq_core.engine.modality import Modality
from .base import MultimodalDataset
from .references import BUILT_IN_REFERENCES, Reference, ReferenceProvider, dataset_reference, reference_provider, register_reference

SPLITS = ("train", "val", "test")


def _handwritten(split: str, modalities: tuple[Modality, ...] | None) -> MultimodalDataset:
    from .handwritten import load_handwritten

    return load_handwritten(split)


def _inspection(split: str, modalities: tuple[Modality, ...] | None) -> MultimodalDataset:
    from .inspection import generate_inspection

    return generate_inspection(split)


BUILT_IN: dict[str, Callable[[str, tuple[Modality, ...] | None], MultimodalDataset]] = {
    "handwritten": _handwritten,
    "inspection": _inspection,
}


def load_dataset(name: str, split: str, modalities: tuple[Modality, ...] | None = None) -> MultimodalDataset:
    """One split of a built-in dataset (by name) or of a dataset folder (by path).

    ``modalities`` (a trained model's) makes a folder's text use the model's vocabulary.
    Splits and generator seeds are fixed, so every model of a dataset sees the same cases.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    if name in BUILT_IN:
        return BUILT_IN[name](split, modalities)
    path = Path(name)
    if path.is_dir():
        from .folder import load_folder

        return load_folder(path, split, modalities=modalities)
    raise ValueError(
        f"unknown dataset {name!r}: use one of {sorted(BUILT_IN)} or the path of a folder "
        "with dataset.json and manifest.csv"
    )


__all__ = [
    "BUILT_IN", "BUILT_IN_REFERENCES", "MultimodalDataset", "Reference", "ReferenceProvider", "SPLITS",
    "dataset_reference", "load_dataset", "reference_provider", "register_reference",
]
