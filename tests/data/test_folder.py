"""Tests for deq_core.data.folder: users' dataset folders, and the shipped inspection sample."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deq_core.data.base import MultimodalDataset
from deq_core.data.folder import DatasetError, export_folder, load_folder
from deq_core.data.inspection import generate_inspection, inspection_modalities
from deq_core.engine.modality import Modality
from deq_core.engine.text import tokenize

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "inspection" / "test"


@pytest.fixture(scope="module")
def small():
    """12 inspection cases, two per class."""
    return generate_inspection("test", n_per_class=2)


@pytest.fixture
def folder(small, tmp_path):
    return export_folder(small, tmp_path / "cases")


def assert_same(a, b) -> None:
    assert a.ids == b.ids and a.texts == b.texts and a.modalities == b.modalities
    assert a.class_names == b.class_names and a.normal_class == b.normal_class
    assert torch.equal(a.labels, b.labels)
    for x, y in zip(a.inputs, b.inputs):
        assert x.dtype == y.dtype and torch.equal(x, y)


def read_manifest(folder: Path) -> list[list[str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write_manifest(folder: Path, rows: list[list[str]]) -> None:
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def load_error(folder: Path, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        load_folder(folder, **kwargs)
    return caught.value


# ----------------------------------------------------------------------------- round trips


def test_export_then_load_gives_back_identical_tensors(small, folder):
    assert_same(load_folder(folder, split="test"), small)
    assert_same(load_folder(folder, split="test", modalities=small.modalities), small)
    assert (folder / "photos" / "insp-test-0003.png").is_file()
    assert (folder / "sensors" / "insp-test-0003.csv").is_file()
    header = read_manifest(folder)[0]
    assert header == ["id", "label", "photo", "sensors", "note", "split"]


def test_any_float32_values_rgb_images_vectors_and_awkward_ids_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    vocabulary = ("<pad>", "<unk>", "worn", "edge")
    modalities = (
        Modality("camera", "image", (3, 4, 5)),
        Modality("stats", "vector", (4,), feature_names=("mean", "peak", "tiny", "huge")),
        Modality("trace", "timeseries", (2, 6)),
        Modality("remark", "text", (3,), vocabulary=vocabulary),
    )
    values = rng.standard_normal((n, 4)) * np.array([1.0, 1e3, 1e-8, 3e20])
    remarks = ("worn edge", 'worn, said "Bob"', "edge\nsecond line", "odd worn", "worn worn edge")
    dataset = MultimodalDataset(
        name="awkward",
        split="all",  # no split column is written
        modalities=modalities,
        class_names=("good", "bad"),
        inputs=(
            torch.from_numpy(rng.integers(0, 256, (n, 3, 4, 5)).astype(np.float32) / np.float32(255)),
            torch.from_numpy(values.astype(np.float32)),
            torch.from_numpy(rng.standard_normal((n, 2, 6)).astype(np.float32)),
            torch.tensor([tokenize(remark, vocabulary, 3) for remark in remarks]),
        ),
        labels=torch.tensor([0, 1, 0, 1, 1]),
        ids=("a/b", "A", "a", "x y", "ünï"),  # not usable as file names: files become case-000000.*
        texts={"remark": remarks},
    )
    folder = export_folder(dataset, tmp_path / "awkward")
    assert (folder / "cameras" / "case-000004.png").is_file() and (folder / "stats" / "case-000000.csv").is_file()
    assert "split" not in read_manifest(folder)[0]
    assert_same(load_folder(folder), dataset)


def test_the_shipped_sample_equals_the_generated_test_split():
    shipped = load_folder(SAMPLE, split="test", modalities=generate_inspection("train", n_per_class=1).modalities)
    assert_same(shipped, generate_inspection("test"))
    size = sum(f.stat().st_size for f in SAMPLE.parent.rglob("*") if f.is_file())
    assert size < 5 * 2**20


def test_export_refuses_a_non_empty_folder_and_leaves_nothing_half_written(small, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_folder(small, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_folder(small, empty) == empty and (empty / "dataset.json").is_file()
    # A failure midway (no raw text for the note) leaves neither the folder nor a staging folder.
    broken = type(small)(**{**small.__dict__, "texts": {}})
    with pytest.raises(ValueError, match="raw text"):
        export_folder(broken, tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_loading_writes_nothing(folder):
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    load_folder(folder)
    load_folder(folder, split="test", modalities=inspection_modalities())
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


# ----------------------------------------------------------------------------- splits and vocabulary


def drop_column(folder: Path, column: str) -> None:
    rows = read_manifest(folder)
    index = rows[0].index(column)
    write_manifest(folder, [row[:index] + row[index + 1 :] for row in rows])


def test_without_a_split_column_the_split_is_stratified_seeded_and_complete(tmp_path):
    folder = export_folder(generate_inspection("train", n_per_class=10), tmp_path / "train")
    drop_column(folder, "split")
    parts = {s: load_folder(folder, split=s) for s in ("train", "val", "test")}
    ids = [i for part in parts.values() for i in part.ids]
    assert sorted(ids) == sorted(load_folder(folder).ids)  # disjoint and complete
    for part, share in ((parts["val"], 2), (parts["test"], 2), (parts["train"], 6)):
        assert Counter(part.labels.tolist()) == {c: share for c in range(6)}
    assert load_folder(folder, split="val", seed=0).ids == parts["val"].ids
    assert load_folder(folder, split="val", seed=1).ids != parts["val"].ids


def test_the_split_column_selects_rows(folder):
    rows = read_manifest(folder)
    for row in rows[1:5]:
        row[-1] = "train"
    for row in rows[5:7]:
        row[-1] = "val"
    write_manifest(folder, rows)
    assert load_folder(folder, split="train").ids == tuple(row[0] for row in rows[1:5])
    assert load_folder(folder, split="val").ids == tuple(row[0] for row in rows[5:7])
    assert len(load_folder(folder, split="test")) == 6
    assert len(load_folder(folder)) == 12


def test_without_a_vocabulary_one_is_built_from_the_training_rows(folder):
    description = json.loads((folder / "dataset.json").read_text())
    del description["modalities"][2]["vocabulary"]
    del description["modalities"][2]["shape"]
    (folder / "dataset.json").write_text(json.dumps(description))
    rows = read_manifest(folder)
    for i, row in enumerate(rows[1:]):
        row[-1] = "train" if i < 8 else "test"
    rows[1][4] = "Zebra stripes near the bore."  # a training word
    rows[-1][4] = "Walrus tusk near the bore."  # a word seen only in a test row
    write_manifest(folder, rows)
    test = load_folder(folder, split="test")
    vocabulary = test.modalities[2].vocabulary
    assert "zebra" in vocabulary and "walrus" not in vocabulary
    assert test.inputs[2][-1, 0].item() == 1  # "walrus" is <unk>
    assert test.modalities[2].shape == (32,)  # the default max_tokens


def test_a_models_modalities_must_agree_with_the_folder(folder, small):
    photo, sensors, note = small.modalities
    cases = {
        "shape": (Modality("photo", "image", (1, 32, 32)), sensors, note),
        "kind": (Modality("photo", "vector", (4096,)), sensors, note),
        "missing": (photo, sensors, note, Modality("audio", "vector", (3,))),
        "channels": (photo, Modality("sensors", "timeseries", (3, 128), feature_names=("a", "b", "c")), note),
    }
    messages = {"shape": "shape", "kind": "is a image here", "missing": "'audio' is not in dataset.json",
                "channels": "feature_names"}  # fmt: skip
    for name, modalities in cases.items():
        error = load_error(folder, modalities=modalities)
        assert messages[name] in str(error), name
    # A model that uses only some modalities, in its own order, is fine; its max_tokens wins.
    short_note = Modality("note", "text", (6,), vocabulary=note.vocabulary)
    loaded = load_folder(folder, modalities=(short_note, photo))
    assert [m.name for m in loaded.modalities] == ["note", "photo"] and loaded.inputs[0].shape == (12, 6)


# ----------------------------------------------------------------------------- manifest problems


def only_problem(error: DatasetError):
    assert len(error.problems) == 1, error
    return error.problems[0]


def test_a_missing_file_names_line_column_and_file(folder):
    (folder / "photos" / "insp-test-0002.png").unlink()
    rows = read_manifest(folder)
    rows[3][-1] = "train"  # even outside the split being loaded, a missing file is reported
    write_manifest(folder, rows)
    problem = only_problem(load_error(folder, split="test"))
    assert (problem.line, problem.column, problem.file) == (4, "photo", "photos/insp-test-0002.png")
    assert "file not found" in str(problem)
    assert "manifest.csv line 4 (id 'insp-test-0002'), column 'photo', file 'photos/insp-test-0002.png'" in str(problem)


def test_a_wrong_shape_names_line_column_and_file(folder):
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(folder / "photos" / "insp-test-0005.png")
    with (folder / "sensors" / "insp-test-0001.csv").open("a") as handle:
        handle.write("0.1,40.0,5.0\n")  # a 129th step
    error = load_error(folder)
    by_column = {p.column: p for p in error.problems}
    assert (by_column["photo"].line, by_column["photo"].file) == (7, "photos/insp-test-0005.png")
    assert "32x32" in by_column["photo"].message
    assert (by_column["sensors"].line, by_column["sensors"].file) == (3, "sensors/insp-test-0001.csv")
    assert "129 rows of values, expected 128" in by_column["sensors"].message


def test_nan_in_a_sensor_csv_names_line_column_and_file(folder):
    path = folder / "sensors" / "insp-test-0004.csv"
    lines = path.read_text().splitlines()
    lines[10] = "nan," + lines[10].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    problem = only_problem(load_error(folder))
    assert (problem.line, problem.column, problem.file) == (6, "sensors", "sensors/insp-test-0004.csv")
    assert "line 11, column 'vibration'" in problem.message and "NaN" in problem.message


def test_bad_files_of_every_kind_are_reported_together_in_manifest_order(folder):
    (folder / "photos" / "insp-test-0000.png").write_bytes(b"not a picture")  # line 2
    sensors = folder / "sensors" / "insp-test-0001.csv"  # line 3
    lines = sensors.read_text().splitlines()
    lines[5] = "nan," + lines[5].split(",", 1)[1]
    sensors.write_text("\n".join(lines) + "\n")
    (folder / "note6.txt").write_bytes("Rayure sur la pièce".encode("latin-1"))
    rows = read_manifest(folder)
    rows[5][4] = "note6.txt"  # line 6
    write_manifest(folder, rows)
    error = load_error(folder)
    assert [(p.line, p.column) for p in error.problems] == [(2, "photo"), (3, "sensors"), (6, "note")]
    assert "3 problems" in str(error)
    assert "not a readable PNG" in error.problems[0].message and "NaN" in error.problems[1].message
    assert "not UTF-8" in error.problems[2].message


def test_reading_stops_after_max_problems_and_says_so(folder, monkeypatch):
    monkeypatch.setattr("deq_core.data.folder.MAX_PROBLEMS", 3)
    for photo in (folder / "photos").iterdir():
        photo.write_bytes(b"not a picture")
    problems = load_error(folder).problems
    assert len(problems) == 4 and all("not a readable PNG" in p.message for p in problems[:3])
    assert problems[3].message == "stopped reading files after 3 problems"


def test_an_unknown_label_and_a_duplicate_id_are_each_named(folder):
    rows = read_manifest(folder)
    rows[3][1] = "dented"
    rows[6][0] = rows[2][0]
    write_manifest(folder, rows)
    error = load_error(folder)
    assert len(error.problems) == 2  # every problem is reported, not only the first
    label, duplicate = error.problems
    assert (label.line, label.column) == (4, "label") and "'dented' is not one of" in label.message
    assert (duplicate.line, duplicate.column) == (7, "id") and "duplicate id, first on line 3" in duplicate.message
    assert "line 4" in str(error) and "line 7" in str(error)


def test_rows_with_too_many_or_too_few_cells_are_named(folder):
    rows = read_manifest(folder)
    rows[5].append("extra")
    rows[8] = rows[8][:2]
    write_manifest(folder, rows)
    long, short = load_error(folder).problems
    assert long.line == 6 and "7 cells, the header has 6" in long.message
    assert short.line == 9 and "2 cells, the header has 6" in short.message


def test_a_missing_column_is_named(folder):
    drop_column(folder, "sensors")
    problem = only_problem(load_error(folder))
    assert problem.column == "sensors" and "missing" in problem.message


@pytest.mark.parametrize(
    ("cell", "message"),
    [("../outside.png", "inside the folder"), ("/etc/passwd", "inside the folder"),
     ("photos\\insp-test-0000.png", "forward slashes")],
)  # fmt: skip
def test_paths_outside_the_folder_or_with_backslashes_are_refused(folder, cell, message):
    (folder.parent / "outside.png").write_bytes((folder / "photos" / "insp-test-0000.png").read_bytes())
    rows = read_manifest(folder)
    rows[1][2] = cell
    write_manifest(folder, rows)
    problem = only_problem(load_error(folder))
    assert (problem.line, problem.file) == (2, cell) and message in problem.message


def test_an_empty_note_and_a_note_file_are_handled(folder):
    rows = read_manifest(folder)
    (folder / "note.txt").write_text("Long crack near the bore.", encoding="utf-8")
    rows[1][4] = "note.txt"
    write_manifest(folder, rows)
    assert load_folder(folder).texts["note"][0] == "Long crack near the bore."
    rows[2][4] = "!!!"
    write_manifest(folder, rows)
    problem = only_problem(load_error(folder))
    assert (problem.line, problem.column) == (3, "note") and "no words" in problem.message


def test_a_bad_dataset_json_is_reported(folder):
    description = json.loads((folder / "dataset.json").read_text())
    description["class_names"] = ["ok"]
    description["colour"] = "blue"
    (folder / "dataset.json").write_text(json.dumps(description))
    error = load_error(folder)
    assert {p.file for p in error.problems} == {"dataset.json"}
    assert "class_names" in str(error) and "unknown keys ['colour']" in str(error)
    os.remove(folder / "dataset.json")
    assert "dataset.json not found" in str(load_error(folder))


def test_a_shared_modality_table_is_what_inspection_modalities_gives(small):
    assert small.modalities == inspection_modalities()
