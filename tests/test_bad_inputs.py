"""The corpus under tests/data/bad_inputs: every file is refused with a message a person can act on."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import time
from pathlib import Path

import pytest
import torch

from deq_core import Modality
from deq_core.data.folder import DatasetError, export_folder, load_folder
from deq_core.data.inspection import generate_inspection
from deq_core.data.readers import MAX_FILE_BYTES, READERS, InputError, read_image
from deq_core.engine.text import build_vocabulary

CORPUS = Path(__file__).resolve().parent / "data" / "bad_inputs"


def _make():
    spec = importlib.util.spec_from_file_location("bad_inputs_make", CORPUS / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make()
MODALITIES = {
    "image": Modality("photo", "image", (1, MAKE.HEIGHT, MAKE.WIDTH)),
    "timeseries": Modality("sensors", "timeseries", (len(MAKE.CHANNELS), MAKE.STEPS), feature_names=MAKE.CHANNELS),
    "text": Modality("note", "text", (24,), vocabulary=build_vocabulary(["bearing noise heard", "scratch near the rim"])),
}


def test_committed_files_are_what_the_generator_writes():
    corpus = MAKE.corpus()
    assert set(corpus) == set(MAKE.EXPECTED) | set(MAKE.NOTED)
    for name, content in corpus.items():
        assert (CORPUS / name).read_bytes() == content, f"{name} differs: rerun tests/data/bad_inputs/make.py"


@pytest.mark.parametrize("name", sorted(MAKE.EXPECTED))
@pytest.mark.parametrize("as_upload", [False, True], ids=["path", "upload"])
def test_every_bad_file_is_refused_with_a_clear_message(name, as_upload):
    kind, fragment = MAKE.EXPECTED[name]
    source = (CORPUS / name).read_bytes() if as_upload else CORPUS / name
    with pytest.raises(InputError) as error:
        READERS[kind](source, MODALITIES[kind])
    message = str(error.value)
    assert fragment in message
    assert "Traceback" not in message and len(message) < 300


def test_decompression_bombs_are_refused_before_any_pixel_is_decoded():
    for name in ("bomb.png", "bomb_moderate.png"):
        assert (CORPUS / name).stat().st_size < 1000  # tiny on disk, billions of pixels declared
        start = time.perf_counter()
        with pytest.raises(InputError):
            READERS["image"](CORPUS / name, MODALITIES["image"])
        assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", sorted(MAKE.NOTED))
@pytest.mark.parametrize("as_upload", [False, True], ids=["path", "upload"])
def test_a_file_read_by_its_content_is_not_converted_silently(name, as_upload):
    kind, fragment = MAKE.NOTED[name]
    source = (CORPUS / name).read_bytes() if as_upload else CORPUS / name
    notes: list[str] = []
    image = read_image(source, MODALITIES[kind], notes, name=name if as_upload else None)
    assert image.shape == MODALITIES[kind].shape and image.dtype == torch.float32
    assert len(notes) == 1 and fragment in notes[0], notes
    clean: list[str] = []
    read_image(source, MODALITIES[kind])  # without a notes list the reader still reads it
    read_image(source, MODALITIES[kind], clean, name=name.replace(".png", ".jpg") if "jpeg" in name else name)
    assert ("jpeg" in name) == (not clean)  # named .jpg, the JPEG needs no note; the RGB photo still does


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    big = tmp_path / "huge.csv"
    with big.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    for source in (big, big.read_bytes()):
        with pytest.raises(InputError, match="file is larger than 32 MiB"):
            READERS["timeseries"](source, MODALITIES["timeseries"])


def test_a_dataset_folder_with_bad_files_of_every_kind_names_each_row_in_one_run(tmp_path):
    """The corpus planted in a dataset folder: a bad photo (line 2), NaN sensors (3), a latin-1 note (6)."""
    folder = export_folder(generate_inspection("test", n_per_class=2), tmp_path / "cases")
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    shutil.copy(CORPUS / "corrupt.png", folder / rows[1][header.index("photo")])
    shutil.copy(CORPUS / "sensors_nan.csv", folder / rows[2][header.index("sensors")])
    shutil.copy(CORPUS / "note_latin1.txt", folder / "note_latin1.txt")
    rows[5][header.index("note")] = "note_latin1.txt"
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    with pytest.raises(DatasetError) as caught:
        load_folder(folder)
    problems = caught.value.problems
    assert [(p.line, p.column) for p in problems] == [(2, "photo"), (3, "sensors"), (6, "note")]
    assert "3 problems" in str(caught.value) and "Traceback" not in str(caught.value)
