"""Datasets: the shipped Handwritten benchmark, the inspection demo, and users' folders.

``load_dataset(name_or_path, split)`` is the one entry point the CLIs and the app use;
``dataset_reference`` gives a dataset's own yardstick for a case, where it has one
(``references``: the inspection data's ideal classifier).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deq_core._lazy import lazy_exports
from deq_core.engine.modality import Modality
from .base import MultimodalDataset
from .references import BUILT_IN_REFERENCES, Reference, ReferenceProvider, dataset_reference, reference_provider, register_reference

SPLITS = ("train", "val", "test")


def _handwritten(split: str, modalities: tuple[Modality, ...] | None) -> MultimodalDataset:
    from .handwritten import load_handwritten

    return load_handwritten(split)


def _inspection(split: str, modalities: tuple[Modality, ...] | None) -> MultimodalDataset:
    from .inspection import generate_inspection

    return generate_inspection(split, modalities=modalities)


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


# Every other public name of the data modules, imported on first use (see tests/test_layout.py).
_EXPORTS = {
    'MultimodalDataset': '.base',
    'DATASET_FILE': '.folder',
    'MANIFEST_FILE': '.folder',
    'SPLIT_FRACTIONS': '.folder',
    'DEFAULT_MAX_TOKENS': '.folder',
    'RESERVED_COLUMNS': '.folder',
    'MAX_PROBLEMS_SHOWN': '.folder',
    'MAX_PROBLEMS': '.folder',
    'TEXT_FILE_SUFFIX': '.folder',
    'Problem': '.folder',
    'DatasetError': '.folder',
    'FolderDescription': '.folder',
    'ManifestRow': '.folder',
    'read_description': '.folder',
    'read_manifest': '.folder',
    'assign_splits': '.folder',
    'load_folder': '.folder',
    'export_folder': '.folder',
    'GENERATORS': '.generate',
    'DEFAULT_SEED': '.generate',
    'generate_inspection_cases': '.generate',
    'generate_folder': '.generate',
    'N_ROWS': '.handwritten',
    'ROWS_PER_CLASS': '.handwritten',
    'N_TEST_ROWS': '.handwritten',
    'DEFAULT_ROOT': '.handwritten',
    'REBUILD_HINT': '.handwritten',
    'TEST_ROWS_FILE': '.handwritten',
    'CHECKSUM_FILE': '.handwritten',
    'VIEWS': '.handwritten',
    'MODALITIES': '.handwritten',
    'VIEW_FEATURES': '.handwritten',
    'view_feature_name': '.handwritten',
    'HandwrittenTable': '.handwritten',
    'HandwrittenSplits': '.handwritten',
    'read_handwritten_table': '.handwritten',
    'handwritten_split_rows': '.handwritten',
    'load_handwritten': '.handwritten',
    'NORMAL_CLASS': '.inspection',
    'PHOTO_SIZE': '.inspection',
    'SENSOR_STEPS': '.inspection',
    'SENSOR_CHANNELS': '.inspection',
    'NOTE_MAX_TOKENS': '.inspection',
    'CASES_PER_CLASS': '.inspection',
    'SPLIT_STREAMS': '.inspection',
    'VOCABULARY_SEED': '.inspection',
    'EvidenceRates': '.inspection',
    'RATES': '.inspection',
    'CaseEvidence': '.inspection',
    'InspectionCase': '.inspection',
    'case_id': '.inspection',
    'inspection_case': '.inspection',
    'inspection_vocabulary': '.inspection',
    'inspection_modalities': '.inspection',
    'inspection_cases': '.inspection',
    'generate_inspection': '.inspection',
    'IDEAL_MODALITIES': '.inspection',
    'note_reading': '.inspection',
    'evidence_likelihoods': '.inspection',
    'ideal_posteriors': '.inspection',
    'Source': '.readers',
    'MAX_FILE_BYTES': '.readers',
    'MAX_IMAGE_PIXELS': '.readers',
    'MAX_TEXT_CHARACTERS': '.readers',
    'IMAGE_FORMATS': '.readers',
    'IMAGE_MODES': '.readers',
    'NPY_MAGIC': '.readers',
    'InputError': '.readers',
    'read_source': '.readers',
    'pixels_to_tensor': '.readers',
    'read_image': '.readers',
    'read_timeseries': '.readers',
    'read_vector': '.readers',
    'check_text': '.readers',
    'read_plain_text': '.readers',
    'text_to_tokens': '.readers',
    'read_text': '.readers',
    'Reader': '.readers',
    'READERS': '.readers',
    'Reference': '.references',
    'ReferenceProvider': '.references',
    'BUILT_IN_REFERENCES': '.references',
    'register_reference': '.references',
    'reference_provider': '.references',
    'dataset_reference': '.references',
}

__all__ = sorted({*_EXPORTS, "BUILT_IN", "SPLITS", "load_dataset"})
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
