"""Tests for deq_core.data.handwritten and the vendored sample_data/handwritten files."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from deq_core.data.handwritten import (
    CLASS_NAMES,
    DEFAULT_ROOT,
    SPLITS,
    VIEWS,
    handwritten_split_rows,
    load_handwritten,
    read_handwritten_table,
)

EXPECTED_MODALITIES = (
    ("fourier", "vector", (76,)),
    ("profile", "vector", (216,)),
    ("karhunen_loeve", "vector", (64,)),
    ("pixels", "image", (1, 16, 15)),
    ("zernike", "vector", (47,)),
    ("morphology", "vector", (6,)),
)
SPLIT_SIZES = {"train": 1440, "val": 160, "test": 400, "train_full": 1600}

# Row 0 of mfeat-pix.csv (a "0") as the 16 x 15 image; checked by eye to be an upright zero.
ROW_0_PIXELS = np.array(
    [
        [0, 3, 4, 4, 6, 6, 6, 6, 6, 5, 3, 1, 0, 0, 0],
        [1, 6, 6, 6, 6, 5, 2, 3, 6, 6, 6, 6, 2, 0, 0],
        [3, 6, 6, 6, 3, 0, 0, 0, 5, 6, 6, 6, 6, 3, 0],
        [5, 6, 6, 6, 0, 0, 0, 0, 0, 4, 6, 6, 6, 6, 0],
        [6, 6, 6, 6, 0, 0, 0, 0, 0, 3, 6, 6, 6, 6, 0],
        [5, 6, 6, 6, 0, 0, 0, 0, 0, 2, 6, 6, 6, 6, 0],
        [4, 6, 6, 6, 0, 0, 0, 0, 0, 0, 1, 6, 6, 6, 3],
        [6, 6, 6, 1, 0, 0, 0, 0, 0, 0, 5, 6, 6, 6, 3],
        [6, 6, 6, 5, 0, 0, 0, 0, 0, 0, 3, 6, 6, 6, 5],
        [6, 6, 6, 6, 0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 4],
        [6, 6, 6, 6, 0, 0, 0, 0, 0, 2, 6, 6, 6, 6, 3],
        [6, 6, 6, 6, 0, 0, 0, 0, 0, 3, 6, 6, 6, 6, 0],
        [6, 6, 6, 6, 0, 0, 0, 0, 0, 5, 6, 6, 6, 5, 0],
        [5, 6, 6, 6, 3, 1, 0, 0, 3, 6, 6, 6, 6, 0, 0],
        [1, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 1, 0, 0],
        [0, 0, 3, 4, 4, 4, 4, 4, 4, 4, 3, 0, 0, 0, 0],
    ],
    dtype=np.float32,
)


def _rows(dataset) -> list[int]:
    return [int(case_id.removeprefix("hw-")) for case_id in dataset.ids]


def _listed_test_rows() -> list[int]:
    return [int(line) for line in (DEFAULT_ROOT / "test-rows.txt").read_text().split()]


@pytest.mark.parametrize("split", SPLITS)
def test_split_sizes_and_shapes(split):
    dataset = load_handwritten(split)
    n = SPLIT_SIZES[split]
    assert len(dataset) == n
    assert dataset.split == split
    assert [(m.name, m.kind, m.shape) for m in dataset.modalities] == list(EXPECTED_MODALITIES)
    for modality, x in zip(dataset.modalities, dataset.inputs):
        assert x.dtype == torch.float32
        assert tuple(x.shape) == (n, *modality.shape)
    assert dataset.labels.dtype == torch.int64
    assert dataset.class_names == tuple(str(d) for d in range(10))
    assert dataset.normal_class is None


def test_ten_classes_and_forty_test_rows_per_class():
    test = load_handwritten("test")
    assert len(CLASS_NAMES) == 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [40] * 10


def test_train_and_val_are_stratified():
    assert torch.bincount(load_handwritten("train").labels, minlength=10).tolist() == [144] * 10
    assert torch.bincount(load_handwritten("val").labels, minlength=10).tolist() == [16] * 10
    assert torch.bincount(load_handwritten("val", val_fraction=0.2).labels, minlength=10).tolist() == [32] * 10


def test_splits_are_disjoint_and_cover_every_row():
    train, val, test = (set(_rows(load_handwritten(s))) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(2000))
    assert set(_rows(load_handwritten("train_full"))) == train | val


def test_test_rows_are_exactly_the_listed_rows():
    listed = _listed_test_rows()
    # The head and tail of the published split, so a changed vendored list is caught too.
    assert listed[:5] == [4, 5, 14, 15, 27] and listed[-1] == 1998 and len(listed) == 400
    assert _rows(load_handwritten("test")) == sorted(listed)


def test_labels_follow_class_order_of_the_rows():
    dataset = load_handwritten("train_full")
    assert dataset.labels.tolist() == [row // 200 for row in _rows(dataset)]


def test_validation_split_is_reproducible_for_a_seed_and_changes_with_it():
    assert _rows(load_handwritten("val", seed=3)) == _rows(load_handwritten("val", seed=3))
    assert _rows(load_handwritten("val", seed=0)) != _rows(load_handwritten("val", seed=1))
    # The test split never depends on the seed.
    assert _rows(load_handwritten("test", seed=0)) == _rows(load_handwritten("test", seed=1))


def test_split_rows_match_the_loaded_ids():
    splits = handwritten_split_rows(seed=5)
    for split in SPLITS:
        assert list(splits.rows(split)) == _rows(load_handwritten(split, seed=5))
    assert splits.to_dict()["val"] == list(splits.val)


def test_decompressed_files_match_sha256sums():
    sums = dict(
        reversed(line.split()) for line in (DEFAULT_ROOT / "SHA256SUMS").read_text().splitlines() if line
    )
    assert sorted(sums) == sorted(view.file_name for view in VIEWS)
    for name, digest in sums.items():
        data = gzip.decompress((DEFAULT_ROOT / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, name


def test_vendored_gzip_files_are_byte_reproducible():
    spec = importlib.util.spec_from_file_location("rebuild", DEFAULT_ROOT / "rebuild.py")
    rebuild = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rebuild)
    for view in VIEWS:
        stored = (DEFAULT_ROOT / f"{view.file_name}.gz").read_bytes()
        assert rebuild.compress(gzip.decompress(stored)) == stored, view.file_name


def test_pixels_of_row_0_are_an_upright_zero():
    pixels = read_handwritten_table().inputs[3]
    np.testing.assert_array_equal(pixels[0, 0], ROW_0_PIXELS)


def test_pixels_are_row_major_16_by_15_and_upright():
    # Properties of the class-mean images, each checked by eye on the rendered digits.
    # Reading the 240 values column-major or as 15 x 16, or flipping them, breaks at least one.
    dataset = load_handwritten("train_full")
    images = dataset.inputs[3][:, 0].numpy()  # (1600, 16, 15)
    labels = dataset.labels.numpy()

    def mean_image(digit: int) -> np.ndarray:
        return images[labels == digit].mean(axis=0)

    # A "1" is a vertical stroke: its mean varies across columns far more than across rows.
    one = mean_image(1)
    assert one.mean(axis=0).var() > 3 * one.mean(axis=1).var()
    # A "6" has its loop at the bottom, a "9" at the top.
    six, nine = mean_image(6), mean_image(9)
    assert six[8:].mean() > 1.5 * six[:8].mean()
    assert nine[:8].mean() > 1.5 * nine[8:].mean()
    # A "3" opens to the left.
    three = mean_image(3)
    assert three[:, 8:].mean() > 1.4 * three[:, :7].mean()
    # Strokes are as smooth down a column as along a row.
    vertical_step = np.abs(np.diff(images, axis=1)).mean()
    horizontal_step = np.abs(np.diff(images, axis=2)).mean()
    assert 0.8 < vertical_step / horizontal_step < 1.25


def test_inputs_are_raw_values():
    table = read_handwritten_table()
    pixels = table.inputs[3]
    assert pixels.min() == 0 and pixels.max() == 6 and np.array_equal(pixels, np.round(pixels))
    # First data line of mfeat-mor.csv: unstandardised, in file column order.
    np.testing.assert_allclose(table.inputs[5][0], [1, 0, 0, 133.15, 1.3117, 1620.2], rtol=1e-6)


def test_loaded_tensors_are_copies_of_the_cache():
    before = load_handwritten("test").inputs[0].clone()
    load_handwritten("test").inputs[0].add_(100.0)  # must not reach the cached arrays
    assert torch.equal(load_handwritten("test").inputs[0], before)


def test_missing_files_name_the_path_and_the_rebuild_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"rebuild\.py") as error:
        load_handwritten("train", root=tmp_path)
    assert str(tmp_path) in str(error.value)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        load_handwritten("validation")
    with pytest.raises(ValueError, match="val_fraction"):
        load_handwritten("val", val_fraction=0.0)
