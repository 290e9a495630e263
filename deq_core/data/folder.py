"""Users' own data: a folder with ``dataset.json``, ``manifest.csv`` and one file per input.

``dataset.json`` describes the data::

    {"name": "pumps",
     "modalities": [{"name": "photo", "kind": "image", "shape": [1, 64, 64]},
                    {"name": "sensors", "kind": "timeseries", "shape": [3, 128],
                     "feature_names": ["vibration", "temperature", "motor_current"]},
                    {"name": "note", "kind": "text"}],
     "class_names": ["ok", "worn"], "normal_class": "ok", "max_tokens": 24}

A text modality's shape is ``[max_tokens]``: give ``shape``, or the top-level
``max_tokens`` (default 32). A text modality may carry its ``vocabulary``
(``export_folder`` writes it); otherwise one is built from the training rows.

``manifest.csv`` has one row per case and the columns ``id``, ``label``, one per
modality, and optionally ``split`` (``train``, ``val`` or ``test``); other columns
are ignored. Image, timeseries and vector cells are file paths relative to the
folder (PNG/JPEG; CSV; CSV or .npy, read by ``readers.READERS``); a text cell is
the text itself, or the path of a UTF-8 ``.txt`` file.

Without a ``split`` column, each class's rows are split 70/15/15 at random with
``seed``. Loading never writes anything. Every problem found (up to MAX_PROBLEMS
bad files, every file stage at once) is reported in one
``DatasetError`` that names the manifest line, the column and the file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deq_core.engine.modality import KINDS, Modality
from deq_core.engine.text import build_vocabulary
from .base import MultimodalDataset
from .readers import READERS, InputError, read_plain_text, text_to_tokens

DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.csv"
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}  # the rest of each class is train
DEFAULT_MAX_TOKENS = 32
RESERVED_COLUMNS = ("id", "label", "split")
MAX_PROBLEMS_SHOWN = 20
# Reading stops after this many bad files: a folder of thousands of bad rows is reported in seconds.
MAX_PROBLEMS = 200
TEXT_FILE_SUFFIX = ".txt"
_SAFE_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset folder.

    Attributes:
        message: what is wrong, in words.
        line: line of ``manifest.csv`` (the header is line 1), if the problem is in a row.
        column: the manifest column, if one is concerned.
        file: the file concerned, as written in the manifest (or ``dataset.json``).
        case_id: the row's id, when it has one.
    """

    message: str
    line: int | None = None
    column: str | None = None
    file: str | None = None
    case_id: str | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"{MANIFEST_FILE} line {self.line}" + (f" (id {self.case_id!r})" if self.case_id else ""))
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.file is not None:
            where.append(f"file {self.file!r}")
        return (", ".join(where) + ": " if where else "") + self.message


class DatasetError(ValueError):
    """A dataset folder that cannot be loaded; ``problems`` lists everything found wrong."""

    def __init__(self, folder: Path | str, problems: Sequence[Problem]):
        self.folder = Path(folder)
        self.problems = tuple(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        super().__init__(f"dataset folder {str(self.folder)!r}: {count}\n{shown}{tail}")


@dataclass(frozen=True)
class FolderDescription:
    """What ``dataset.json`` says."""

    name: str
    modalities: tuple[Modality, ...]
    class_names: tuple[str, ...]
    normal_class: str | None
    has_vocabulary: tuple[bool, ...]  # per modality: did dataset.json give a text vocabulary


@dataclass(frozen=True)
class ManifestRow:
    """One case of ``manifest.csv``, checked for structure but with no file read yet."""

    line: int
    case_id: str
    label: int
    cells: dict[str, str]  # modality name -> cell text
    split: str | None


# ----------------------------------------------------------------------------- dataset.json


def _problem(folder: Path, message: str, **where) -> DatasetError:
    return DatasetError(folder, [Problem(message, **where)])


def read_description(folder: Path | str) -> FolderDescription:
    """Parse and check ``dataset.json`` of ``folder``."""
    folder = Path(folder)
    path = folder / DATASET_FILE
    if not path.is_file():
        raise _problem(folder, "dataset.json not found", file=DATASET_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _problem(folder, f"not valid JSON ({error})", file=DATASET_FILE) from None
    problems: list[str] = []
    if not isinstance(data, dict):
        raise _problem(folder, "must be a JSON object", file=DATASET_FILE)
    allowed = {"name", "modalities", "class_names", "normal_class", "max_tokens", "description"}
    if unknown := sorted(set(data) - allowed):
        problems.append(f"unknown keys {unknown}; allowed: {sorted(allowed)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("'name' must be a non-empty string")
    class_names = data.get("class_names")
    if (
        not isinstance(class_names, list)
        or len(class_names) < 2
        or not all(isinstance(c, str) and c.strip() == c and c for c in class_names)
        or len(set(class_names)) != len(class_names)
    ):
        problems.append("'class_names' must list at least two distinct, non-empty class names")
        class_names = []
    normal_class = data.get("normal_class")
    if normal_class is not None and normal_class not in class_names:
        problems.append(f"'normal_class' {normal_class!r} is not one of class_names")
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 4096
    ):
        problems.append(f"'max_tokens' must be an integer from 1 to 4096, got {max_tokens!r}")
        max_tokens = None
    entries = data.get("modalities")
    modalities, has_vocabulary = [], []
    if not isinstance(entries, list) or not entries:
        problems.append("'modalities' must be a non-empty list")
        entries = []
    for number, entry in enumerate(entries, start=1):
        try:
            modality = _modality_from_entry(entry, max_tokens)
        except (ValueError, TypeError, KeyError) as error:
            problems.append(f"modality {number}: {error}")
            continue
        if modality.name in RESERVED_COLUMNS:
            problems.append(f"modality {number}: the name {modality.name!r} is a reserved manifest column")
        modalities.append(modality)
        has_vocabulary.append(bool(entry.get("vocabulary")))
    names = [m.name for m in modalities]
    if len(set(names)) != len(names):
        problems.append(f"modality names must be unique, got {names}")
    if problems:
        raise DatasetError(folder, [Problem(p, file=DATASET_FILE) for p in problems])
    return FolderDescription(name, tuple(modalities), tuple(class_names), normal_class, tuple(has_vocabulary))


def _modality_from_entry(entry: object, max_tokens: int | None) -> Modality:
    if not isinstance(entry, dict):
        raise ValueError("must be an object with name, kind and shape")
    allowed = {"name", "kind", "shape", "feature_names", "vocabulary"}
    if unknown := sorted(set(entry) - allowed):
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(allowed)}")
    name, kind = entry.get("name"), entry.get("kind")
    if not isinstance(name, str) or not name.strip() or name.strip() != name:
        raise ValueError("'name' must be a non-empty string without surrounding spaces")
    if kind not in KINDS:
        raise ValueError(f"{name!r}: 'kind' must be one of {KINDS}, got {kind!r}")
    shape = entry.get("shape")
    if kind == "text" and shape is None:
        shape = [max_tokens or DEFAULT_MAX_TOKENS]
    elif kind == "text" and max_tokens is not None and shape != [max_tokens]:
        raise ValueError(f"{name!r}: shape {shape} disagrees with max_tokens {max_tokens}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise ValueError(f"{name!r}: 'shape' must be a list of integers, got {shape!r}")
    feature_names = entry.get("feature_names", [])
    if not isinstance(feature_names, list) or not all(isinstance(f, str) for f in feature_names):
        raise ValueError(f"{name!r}: 'feature_names' must be a list of strings")
    if feature_names and kind in ("timeseries", "vector") and shape and len(feature_names) != shape[0]:
        raise ValueError(f"{name!r}: {len(feature_names)} feature_names for {shape[0]} channels or features")
    vocabulary = entry.get("vocabulary", [])
    if kind != "text" and vocabulary:
        raise ValueError(f"{name!r}: only a text modality has a vocabulary")
    if kind == "text" and not vocabulary:
        vocabulary = build_vocabulary([])  # a placeholder until one is built from the training rows
    return Modality(name, kind, tuple(shape), tuple(vocabulary), tuple(feature_names))


# ----------------------------------------------------------------------------- manifest.csv


def _inside(folder: Path, relative: str) -> Path | None:
    """``folder / relative`` if it stays inside the folder, else None (no absolute paths, no ``..`` out)."""
    if not relative or Path(relative).is_absolute():
        return None
    path = (folder / relative).resolve()
    root = folder.resolve()
    return path if path == root or root in path.parents else None


def _is_file_cell(modality: Modality, cell: str) -> bool:
    return modality.kind != "text" or cell.lower().endswith(TEXT_FILE_SUFFIX)


def read_manifest(folder: Path | str, description: FolderDescription, names: Sequence[str]) -> list[ManifestRow]:
    """Rows of ``manifest.csv``, checking structure and that every named file exists.

    Every row is checked, not only those of the split being loaded, so a problem
    does not stay hidden until another split is used.

    Args:
        folder: the dataset folder.
        description: its parsed ``dataset.json``.
        names: the modality columns to check (the ones being loaded).
    """
    folder = Path(folder)
    records = _manifest_records(folder)
    header = [c.strip() for c in records[0][1]]
    problems: list[Problem] = []
    if len(set(header)) != len(header):
        problems.append(Problem(f"header repeats a column: {header}", line=1, file=MANIFEST_FILE))
    for column in ("id", "label", *names):
        if column not in header:
            problems.append(Problem("column is missing from the header", line=1, column=column, file=MANIFEST_FILE))
    if problems:
        raise DatasetError(folder, problems)
    check = _RowCheck(folder, description, names, {column: header.index(column) for column in header})
    rows = []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            problems.append(Problem(f"{len(cells)} cells, the header has {len(header)}", line=line))
            continue
        row, row_problems = check(line, cells)
        problems.extend(row_problems)
        if row is not None:
            rows.append(row)
    if problems:
        raise DatasetError(folder, problems)
    if not rows:
        raise _problem(folder, "manifest.csv has no rows", file=MANIFEST_FILE)
    return rows


def _manifest_records(folder: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records of ``manifest.csv`` with the line each starts on; the header first."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise _problem(folder, "manifest.csv not found", file=MANIFEST_FILE)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _problem(folder, f"not UTF-8 text (byte {error.start})", file=MANIFEST_FILE) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                records.append((line, cells))
            line = reader.line_num + 1  # a quoted cell may span lines
    except csv.Error as error:
        raise _problem(folder, f"not valid CSV ({error})", line=reader.line_num, file=MANIFEST_FILE) from None
    if not records:
        raise _problem(folder, "manifest.csv is empty", file=MANIFEST_FILE)
    return records


class _RowCheck:
    """Checks one manifest row at a time, remembering ids already seen."""

    def __init__(self, folder: Path, description: FolderDescription, names: Sequence[str], position: dict[str, int]):
        self.folder = folder
        self.names = names
        self.position = position
        self.modalities = {m.name: m for m in description.modalities}
        self.class_names = description.class_names
        self.first_line: dict[str, int] = {}

    def __call__(self, line: int, cells: list[str]) -> tuple[ManifestRow | None, list[Problem]]:
        cell = {column: cells[i].strip() for column, i in self.position.items()}
        case_id = cell["id"]
        where = {"line": line, "case_id": case_id or None}
        problems = []
        if not case_id:
            problems.append(Problem("id is empty", column="id", **where))
        elif case_id in self.first_line:
            problems.append(Problem(f"duplicate id, first on line {self.first_line[case_id]}", column="id", **where))
        else:
            self.first_line[case_id] = line
        if cell["label"] not in self.class_names:
            message = f"label {cell['label']!r} is not one of {list(self.class_names)}"
            problems.append(Problem(message, column="label", **where))
        split = cell.get("split")
        if split is not None and split not in SPLITS:
            problems.append(Problem(f"split {split!r} is not one of {SPLITS}", column="split", **where))
        for name in self.names:
            if not cell[name]:
                problems.append(Problem("cell is empty", column=name, **where))
            elif _is_file_cell(self.modalities[name], cell[name]):
                target = _inside(self.folder, cell[name])
                if "\\" in cell[name]:
                    message = "write paths with forward slashes (photos/a.png), not backslashes"
                    problems.append(Problem(message, column=name, file=cell[name], **where))
                elif target is None:
                    message = "path must be relative and stay inside the folder"
                    problems.append(Problem(message, column=name, file=cell[name], **where))
                elif not target.is_file():
                    problems.append(Problem("file not found", column=name, file=cell[name], **where))
        if problems:
            return None, problems
        label = self.class_names.index(cell["label"])
        return ManifestRow(line, case_id, label, {name: cell[name] for name in self.names}, split), []


def assign_splits(rows: Sequence[ManifestRow], seed: int) -> list[str]:
    """The manifest's own splits, or a stratified seeded 70/15/15 draw per class.

    A class with fewer than 3 rows keeps them all in train.
    """
    if all(row.split is not None for row in rows):
        return [row.split for row in rows]
    rng = np.random.default_rng(seed)
    splits = ["train"] * len(rows)
    labels = np.array([row.label for row in rows])
    for label in np.unique(labels):  # ascending, so the draw does not depend on row order of classes
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 3:
            continue
        n_val = max(1, round(SPLIT_FRACTIONS["val"] * len(members)))
        n_test = max(1, round(SPLIT_FRACTIONS["test"] * len(members)))
        for i in members[:n_val]:
            splits[i] = "val"
        for i in members[n_val : n_val + n_test]:
            splits[i] = "test"
    return splits


# ----------------------------------------------------------------------------- loading


def _match_modalities(folder: Path, description: FolderDescription, wanted: Sequence[Modality]) -> None:
    """Check that a model's modalities fit the folder's: same kinds, shapes and channel names."""
    by_name = {m.name: m for m in description.modalities}
    problems = []
    for modality in wanted:
        found = by_name.get(modality.name)
        if found is None:
            problems.append(f"the model's modality {modality.name!r} is not in dataset.json ({list(by_name)})")
        elif found.kind != modality.kind:
            problems.append(f"modality {modality.name!r} is a {found.kind} here, the model expects a {modality.kind}")
        elif modality.kind != "text" and found.shape != modality.shape:
            # Text is tokenised to the model's max_tokens, so only non-text shapes must agree.
            problems.append(
                f"modality {modality.name!r} has shape {found.shape} here, the model expects {modality.shape}"
            )
        elif found.feature_names and modality.feature_names and found.feature_names != modality.feature_names:
            problems.append(
                f"modality {modality.name!r} has feature_names {list(found.feature_names)} here, "
                f"the model expects {list(modality.feature_names)}"
            )
    if problems:
        raise DatasetError(folder, [Problem(p, file=DATASET_FILE) for p in problems])


def _raw_text(folder: Path, cell: str) -> str:
    return read_plain_text(folder / cell) if cell.lower().endswith(TEXT_FILE_SUFFIX) else cell


def load_folder(
    path: Path | str,
    split: str = "all",
    modalities: tuple[Modality, ...] | None = None,
    seed: int = 0,
) -> MultimodalDataset:
    """Load a dataset folder (see the module docstring for the format).

    Args:
        path: the folder holding ``dataset.json`` and ``manifest.csv``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every row, manifest order).
        modalities: a trained model's modalities. They override dataset.json's, so
            text is tokenised with the model's vocabulary and max_tokens; kinds,
            shapes and channel names must agree. Their order is the input order.
        seed: seed of the stratified split when the manifest has no ``split`` column.

    Returns:
        A ``MultimodalDataset`` with one float32 tensor per image, timeseries and vector
        modality, ``(n, max_tokens)`` int64 token ids per text modality, and the raw
        texts in ``texts``.

    Raises:
        DatasetError: naming the manifest line, column and file of every problem found.
    """
    folder = Path(path)
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split {split!r} is not one of {(*SPLITS, 'all')}")
    if not folder.is_dir():
        raise DatasetError(folder, [Problem("folder not found")])
    description = read_description(folder)
    if modalities is not None:
        _match_modalities(folder, description, modalities)
        chosen = tuple(modalities)
    else:
        chosen = description.modalities
    names = [m.name for m in chosen]
    rows = read_manifest(folder, description, names)
    splits = assign_splits(rows, seed)
    selected = [i for i, s in enumerate(splits) if split in ("all", s)]
    if not selected:
        raise _problem(folder, f"no rows in split {split!r}", file=MANIFEST_FILE)

    problems: list[Problem] = []
    texts: dict[str, list[str]] = {}
    # Without a model's vocabulary, text modalities get one built from the training rows
    # (all rows if there are none), so val and test are tokenised the way train was.
    needs_vocabulary = {
        m.name
        for m, given in zip(description.modalities, description.has_vocabulary)
        if m.kind == "text" and not given and modalities is None
    }
    vocabulary_rows = [i for i, s in enumerate(splits) if s == "train"] or list(range(len(rows)))
    # Every file is read before anything is raised, so one run names every bad row
    # (up to MAX_PROBLEMS), not one stage's: the notes, then the other files.
    raw: dict[str, dict[int, str]] = {}
    for modality in chosen:
        if modality.kind != "text":
            continue
        wanted = sorted(set(selected) | (set(vocabulary_rows) if modality.name in needs_vocabulary else set()))
        raw[modality.name] = {}
        for i in wanted:
            if len(problems) >= MAX_PROBLEMS:
                break
            cell = rows[i].cells[modality.name]
            try:
                raw[modality.name][i] = _raw_text(folder, cell)
            except InputError as error:
                file = cell if cell.lower().endswith(TEXT_FILE_SUFFIX) else None
                problems.append(Problem(str(error), rows[i].line, modality.name, file, rows[i].case_id))
    resolved = []
    for modality in chosen:
        if modality.name in needs_vocabulary:
            vocabulary = build_vocabulary(raw[modality.name][i] for i in vocabulary_rows if i in raw[modality.name])
            modality = Modality(modality.name, modality.kind, modality.shape, vocabulary, modality.feature_names)
        resolved.append(modality)

    inputs = []
    for modality in resolved:
        tensors = []
        for i in selected:
            if len(problems) >= MAX_PROBLEMS:
                break
            row, cell = rows[i], rows[i].cells[modality.name]
            if modality.kind == "text" and i not in raw[modality.name]:
                continue  # its problem is already listed
            try:
                if modality.kind == "text":
                    tensors.append(text_to_tokens(raw[modality.name][i], modality))
                else:
                    tensors.append(READERS[modality.kind](folder / cell, modality))
            except InputError as error:
                file = cell if _is_file_cell(modality, cell) else None
                problems.append(Problem(str(error), row.line, modality.name, file, row.case_id))
        if modality.kind == "text" and not problems:
            texts[modality.name] = [raw[modality.name][i] for i in selected]
        inputs.append(tensors)
    if problems:
        order = {m.name: k for k, m in enumerate(chosen)}
        problems.sort(key=lambda p: (p.line or 0, order.get(p.column, len(order))))  # as the manifest reads
        if len(problems) >= MAX_PROBLEMS:
            problems.append(Problem(f"stopped reading files after {MAX_PROBLEMS} problems", file=MANIFEST_FILE))
        raise DatasetError(folder, problems)
    return MultimodalDataset(
        name=description.name,
        split=split,
        modalities=tuple(resolved),
        class_names=description.class_names,
        inputs=tuple(torch.stack(tensors) for tensors in inputs),
        labels=torch.tensor([rows[i].label for i in selected], dtype=torch.int64),
        ids=tuple(rows[i].case_id for i in selected),
        texts={name: tuple(values) for name, values in texts.items()},
        normal_class=description.normal_class,
    )


# ----------------------------------------------------------------------------- export


def _write_png(path: Path, x: torch.Tensor) -> None:
    """``(channels, h, w)`` in [0, 1] as an 8-bit PNG (values that are k/255 round-trip exactly)."""
    values = x.detach().cpu().double().numpy()
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError(f"{path.name}: image values must be finite and in [0, 1] to be saved as PNG")
    pixels = np.round(values * 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB"}.get(pixels.shape[0])
    if mode is None:
        raise ValueError(f"{path.name}: a PNG holds 1 or 3 channels, not {pixels.shape[0]}")
    Image.fromarray(pixels[0] if mode == "L" else pixels.transpose(1, 2, 0), mode=mode).save(path, format="PNG")


def _csv_number(value: float) -> str:
    # The shortest text that reads back as the same float32.
    return str(np.float32(value))


def _write_table(path: Path, names: Sequence[str], rows: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_csv_number(v) for v in row] for row in rows])


def _write_timeseries(path: Path, x: torch.Tensor, modality: Modality) -> None:
    names = modality.feature_names or [f"channel_{i + 1}" for i in range(modality.shape[0])]
    _write_table(path, names, x.detach().cpu().numpy().T)


def _write_vector(path: Path, x: torch.Tensor, modality: Modality) -> None:
    names = modality.feature_names or [f"feature_{i + 1}" for i in range(modality.shape[0])]
    _write_table(path, names, x.detach().cpu().numpy()[None])


# kind -> (file suffix, writer); text goes into the manifest itself.
_WRITERS = {
    "image": (".png", lambda path, x, modality: _write_png(path, x)),
    "timeseries": (".csv", _write_timeseries),
    "vector": (".csv", _write_vector),
}


def _folder_for(modality: Modality) -> str:
    # One folder per modality, named in the plural ("photos/"), as a person would name it.
    return modality.name if modality.name.endswith("s") else f"{modality.name}s"


def _file_stems(ids: Sequence[str]) -> list[str]:
    """File names for case ids: the id itself where it is a safe name, else ``case-000012``."""
    if all(_SAFE_FILE_STEM.fullmatch(i) for i in ids) and len({i.lower() for i in ids}) == len(ids):
        return list(ids)
    return [f"case-{row:06d}" for row in range(len(ids))]


def _description_dict(dataset: MultimodalDataset) -> dict:
    entries = []
    for modality in dataset.modalities:
        entry = {"name": modality.name, "kind": modality.kind, "shape": list(modality.shape)}
        if modality.feature_names:
            entry["feature_names"] = list(modality.feature_names)
        if modality.kind == "text":
            entry["vocabulary"] = list(modality.vocabulary)
        entries.append(entry)
    data = {"name": dataset.name, "modalities": entries, "class_names": list(dataset.class_names)}
    if dataset.normal_class is not None:
        data["normal_class"] = dataset.normal_class
    return data


def _write_folder(dataset: MultimodalDataset, target: Path) -> None:
    stems = _file_stems(dataset.ids)
    with_split = dataset.split in SPLITS
    for modality in dataset.modalities:
        if modality.kind != "text":
            (target / _folder_for(modality)).mkdir()
        elif modality.name not in dataset.texts:
            raise ValueError(f"modality {modality.name!r}: the raw text is needed, dataset.texts lacks it")
    header = ["id", "label", *(m.name for m in dataset.modalities)] + (["split"] if with_split else [])
    with (target / MANIFEST_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row, (case_id, stem) in enumerate(zip(dataset.ids, stems)):
            cells = [case_id, dataset.class_names[int(dataset.labels[row])]]
            for modality, x in zip(dataset.modalities, dataset.inputs):
                if modality.kind == "text":
                    cells.append(dataset.texts[modality.name][row])
                    continue
                suffix, write = _WRITERS[modality.kind]
                relative = f"{_folder_for(modality)}/{stem}{suffix}"
                write(target / relative, x[row], modality)
                cells.append(relative)
            writer.writerow(cells + ([dataset.split] if with_split else []))
    text = json.dumps(_description_dict(dataset), indent=2)
    # Lists of plain values on one line ("shape": [1, 64, 64]), so a person can read the file.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s*\n\s*", ", ", m.group(1)) + "]", text)
    (target / DATASET_FILE).write_text(text + "\n", encoding="utf-8")


def export_folder(dataset: MultimodalDataset, path: Path | str) -> Path:
    """Write ``dataset`` as a folder ``load_folder`` reads back: PNG, CSV, text in the manifest.

    The folder is written under a temporary name beside ``path`` and renamed at the
    end, so an interrupted export leaves no half-written dataset behind.

    Returns:
        The folder's path.

    Raises:
        FileExistsError: ``path`` exists and is not an empty folder.
    """
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _write_folder(dataset, staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private to the user
        os.replace(staging, target)  # an empty folder at target is replaced; a non-empty one fails
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
