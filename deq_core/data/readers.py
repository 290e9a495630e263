"""Strict readers of one raw input, chosen by the modality's kind from ``READERS``.

They read the files of a dataset folder and validate users' uploads in the app,
so anything that is not exactly one input of the modality raises ``InputError``
with a message a person can act on; nothing is resized, clipped or guessed.

A source is a path (``str`` or ``Path``) or the file's contents (``bytes``, an
upload). Messages do not name the source: the caller knows the file, row or
upload and adds that context.

    kind        file                         result
    image       PNG or JPEG                  (channels, height, width) float32 in [0, 1]
    timeseries  CSV, header of channel       (channels, steps) float32
                names, one row per step
    vector      CSV (header, one row) or     (features,) float32
                .npy (1-D, numeric)
    text        UTF-8 text                   (max_tokens,) int64 token ids
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deq_core.engine.modality import Modality
from deq_core.engine.text import tokenize, words

Source = str | Path | bytes

# An upload larger than this is refused before it is parsed; real inputs are kilobytes.
MAX_FILE_BYTES = 32 * 2**20
# Checked on the header, before any pixel is decoded: the guard against decompression bombs.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_TEXT_CHARACTERS = 100_000
IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_MODES = {1: "L", 3: "RGB"}  # channels -> the mode pixels are converted to
NPY_MAGIC = b"\x93NUMPY"
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MISSING = {"", "nan", "-nan", "+nan", "na", "n/a", "null", "none"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INFINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class InputError(ValueError):
    """A file or upload that cannot be one input of its modality."""


def read_source(source: Source) -> bytes:
    """The bytes of a path or an upload, refusing missing, non-regular and oversized files."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        content = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError("file not found" if not path.exists() else "not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        content = path.read_bytes()
    else:
        raise TypeError(f"a source is a path or bytes, got {type(source).__name__}")
    if len(content) > MAX_FILE_BYTES:
        raise InputError(f"file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return content


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")  # a byte-order mark from spreadsheet exports is dropped
    except UnicodeDecodeError as error:
        raise InputError(f"not UTF-8 text (byte {error.start} is invalid)") from None


def _require_kind(modality: Modality, kind: str) -> None:
    if modality.kind != kind:
        raise ValueError(f"modality {modality.name!r} is a {modality.kind}, not a {kind}")


# ----------------------------------------------------------------------------- images


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """8- or 16-bit pixels, any shape, as float32 in [0, 1]: k / 255 or k / 65535.

    The one conversion from stored pixels to model input; generators that produce
    8-bit photos use it too, so a PNG round trip gives back identical tensors.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    return torch.from_numpy(pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max))


# How a person names PIL's modes in a note about a conversion.
_MODE_WORDS = {"1": "black-and-white", "L": "grayscale", "LA": "grayscale", "P": "palette (indexed colour)",
               "PA": "palette (indexed colour)", "RGB": "RGB colour", "RGBA": "RGB colour", "CMYK": "CMYK colour",
               "YCbCr": "YCbCr colour"}  # fmt: skip
_FORMAT_SUFFIXES = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif")}


def _conversion_note(mode: str, channels: int) -> str | None:
    """What converting a ``mode`` image to the modality's channels did, or None when nothing was converted."""
    target = IMAGE_MODES[channels]
    if mode == target or mode.startswith("I"):  # 16-bit grayscale is read as it is (k / 65535)
        return None if channels == 1 or mode == target else "16-bit grayscale image repeated into 3 RGB channels"
    if channels == 1:
        return f"{_MODE_WORDS[mode]} image converted to grayscale (the model reads one channel)"
    return f"{_MODE_WORDS[mode]} image converted to RGB colour (the model reads three channels)"


def _format_note(image_format: str, name: str | None) -> str | None:
    """A note when the file's content is not the format its name says (a JPEG named ``.png``)."""
    if not name or "." not in name:
        return None
    suffix = "." + name.rsplit(".", 1)[1].lower()
    known = {s: f for f, suffixes in _FORMAT_SUFFIXES.items() for s in suffixes}
    if suffix in known and known[suffix] != image_format:
        return f"the file is a {image_format} image although its name ends in {suffix}; read as {image_format}"
    return None


def _image_pixels(image: Image.Image, channels: int) -> np.ndarray:
    """Pixels ``(height, width)`` or ``(height, width, 3)``, uint8 or uint16, without transparency."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale PNG
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise InputError("16-bit image has values outside 0-65535")
        values = values.astype(np.uint16)
        return values if channels == 1 else np.repeat(values[..., None], 3, axis=2)
    if image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr"):
        raise InputError(f"image mode {image.mode} is not supported; save it as 8-bit grayscale or RGB")
    if image.mode in ("CMYK", "YCbCr"):  # JPEG colour spaces without a direct grayscale conversion
        image = image.convert("RGB")
    if image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
        if alpha.min() < 255:
            raise InputError("image has transparent pixels; save it without transparency (alpha)")
    return np.asarray(image.convert(IMAGE_MODES[channels]))


def read_image(
    source: Source, modality: Modality, notes: list[str] | None = None, name: str | None = None
) -> torch.Tensor:
    """A PNG or JPEG as ``(channels, height, width)`` float32 in [0, 1].

    Grayscale and RGB files are converted to the modality's channel count (1 or 3);
    the size must match exactly. Truncated or corrupt files, other formats, fully
    or partly transparent pixels and oversized headers raise ``InputError``.

    A file is read by its content, whatever its name says, but never converted
    silently: ``notes`` (when given) gets one sentence per thing a person should
    know, such as a JPEG named ``.png`` (``name``: the file's name; a path's own by
    default) or a colour picture converted to the model's grayscale.
    """
    _require_kind(modality, "image")
    channels, height, width = modality.shape
    if channels not in IMAGE_MODES:
        raise InputError(f"an image file has 1 or 3 channels; modality {modality.name!r} needs {channels}")
    content = read_source(source)
    try:
        # PIL only warns between its pixel limit and twice that; an upload that large is refused.
        # (catch_warnings is process-wide; should threads race, the pixel check below still holds.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content), formats=IMAGE_FORMATS) as image:
                image_width, image_height = image.size
                if image_width * image_height > MAX_IMAGE_PIXELS:
                    raise InputError(
                        f"image header says {image_width}x{image_height} pixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS} pixels"
                    )
                if (image_width, image_height) != (width, height):
                    raise InputError(
                        f"image is {image_width}x{image_height} pixels (width x height), expected "
                        f"{width}x{height}; images are not resized"
                    )
                if getattr(image, "n_frames", 1) != 1:
                    raise InputError("image is animated; one frame is expected")
                image.load()
                pixels = _image_pixels(image, channels)
                own_name = Path(source).name if isinstance(source, (str, Path)) else None
                found = [_format_note(image.format, name or own_name), _conversion_note(image.mode, channels)]
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"image is too large to decode safely ({error})") from None
    except Image.UnidentifiedImageError:  # PIL's message names an in-memory buffer, not the user's file
        raise InputError("not a readable PNG or JPEG image (the file is not an image, or it is damaged)") from None
    except Exception as error:  # anything PIL raises on untrusted bytes means "not a usable image"
        raise InputError(f"not a readable PNG or JPEG image ({type(error).__name__}: {error})") from None
    if notes is not None:
        notes.extend(note for note in found if note)
    tensor = pixels_to_tensor(pixels)
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- numbers in CSV files


def _parse_number(cell: str, where: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        raise InputError(f"{where}: value {cell!r} is missing or NaN")
    if text.lower() in _INFINITE:
        raise InputError(f"{where}: value {cell!r} is infinite")
    if not _NUMBER.fullmatch(text):
        raise InputError(f"{where}: value {cell!r} is not a number")
    value = float(text)
    if not abs(value) <= _FLOAT32_MAX:  # also catches 1e999, which float() turns into inf
        raise InputError(f"{where}: value {cell!r} is too large for float32")
    return value


def _csv_rows(content: bytes) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their line numbers (1-based, as an editor shows them)."""
    reader = csv.reader(io.StringIO(_decode(content), newline=""))
    rows, line = [], 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"line {reader.line_num}: not valid CSV ({error})") from None
    if not rows:
        raise InputError("CSV file is empty")
    return rows


# Separators spreadsheets write instead of commas (a ';' in locales with a decimal comma).
_OTHER_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}


def _separator_hint(header: list[str], count: int) -> str:
    """`` (it looks ';'-separated ...)`` when the header splits into ``count`` names on another separator."""
    if len(header) != 1:
        return ""
    for separator, name in _OTHER_SEPARATORS.items():
        if len(header[0].split(separator)) == count:
            return f"; the file looks {name}-separated: save it as comma-separated CSV"
    return ""


def _check_header(header: list[str], expected_names: tuple[str, ...], count: int, what: str) -> list[str]:
    names = [cell.strip() for cell in header]
    if len(names) != count:
        hint = _separator_hint(header, count)
        raise InputError(f"line 1: the header has {len(names)} columns, expected {count} {what}{hint}")
    if all(_NUMBER.fullmatch(name) for name in names):
        raise InputError(f"line 1 must be a header naming the {what}, found numbers")
    if expected_names and tuple(names) != expected_names:
        raise InputError(f"line 1: columns are {names}, expected {list(expected_names)} in this order")
    return names


def _numeric_table(rows: list[tuple[int, list[str]]], names: list[str]) -> np.ndarray:
    """``(len(rows), len(names))`` float32 of data rows, every cell finite."""
    values = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, (line, cells) in enumerate(rows):
        if len(cells) != len(names):
            raise InputError(f"line {line}: {len(cells)} values, expected {len(names)}")
        for j, cell in enumerate(cells):
            values[i, j] = _parse_number(cell, f"line {line}, column {names[j]!r}")
    return values.astype(np.float32)


def read_timeseries(source: Source, modality: Modality) -> torch.Tensor:
    """A CSV with a header of channel names and one row per time step, as ``(channels, steps)`` float32.

    When the modality names its channels, the header must list exactly those, in order.
    """
    _require_kind(modality, "timeseries")
    channels, steps = modality.shape
    rows = _csv_rows(read_source(source))
    names = _check_header(rows[0][1], modality.feature_names, channels, "channels")
    if len(rows) - 1 != steps:
        raise InputError(f"{len(rows) - 1} rows of values, expected {steps} (one per time step)")
    return torch.from_numpy(np.ascontiguousarray(_numeric_table(rows[1:], names).T))


def _read_npy(content: bytes, features: int) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except Exception as error:  # a corrupt or pickled .npy: refuse, never unpickle
        raise InputError(f"not a readable .npy array ({type(error).__name__}: {error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf":
        raise InputError(f".npy array must hold real numbers, got {getattr(array, 'dtype', type(array))}")
    if array.shape != (features,):
        raise InputError(f".npy array has shape {array.shape}, expected ({features},)")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(f".npy array has {int((~np.isfinite(values)).sum())} NaN or infinite values")
    return values


def read_vector(source: Source, modality: Modality) -> torch.Tensor:
    """A ``.npy`` 1-D array, or a CSV with a header of feature names and one row, as ``(features,)`` float32."""
    _require_kind(modality, "vector")
    (features,) = modality.shape
    content = read_source(source)
    if content.startswith(NPY_MAGIC):
        return torch.from_numpy(_read_npy(content, features))
    rows = _csv_rows(content)
    names = _check_header(rows[0][1], modality.feature_names, features, "features")
    if len(rows) != 2:
        raise InputError(f"{len(rows) - 1} rows of values, expected 1")
    return torch.from_numpy(_numeric_table(rows[1:], names)[0])


# ----------------------------------------------------------------------------- text


def check_text(text: str) -> str:
    """``text`` unchanged if it can be a note: not blank, some words, no control characters, not huge."""
    if not text.strip():
        raise InputError("text is empty")
    if len(text) > MAX_TEXT_CHARACTERS:
        raise InputError(f"text has {len(text)} characters, more than {MAX_TEXT_CHARACTERS}")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise InputError("text contains control characters; is it a binary file?")
    if not words(text):
        raise InputError("text contains no words")
    return text


def read_plain_text(source: Source) -> str:
    """The raw text of a UTF-8 file or upload, checked by ``check_text``."""
    return check_text(_decode(read_source(source)))


def text_to_tokens(text: str, modality: Modality) -> torch.Tensor:
    """``(max_tokens,)`` int64 token ids of already-read text, in the modality's vocabulary."""
    _require_kind(modality, "text")
    return torch.tensor(tokenize(check_text(text), modality.vocabulary, modality.shape[0]), dtype=torch.int64)


def read_text(source: Source, modality: Modality) -> torch.Tensor:
    """A UTF-8 text file or upload as ``(max_tokens,)`` int64 token ids (words outside the vocabulary: ``<unk>``)."""
    return text_to_tokens(read_plain_text(source), modality)


Reader = Callable[[Source, Modality], torch.Tensor]
READERS: dict[str, Reader] = {
    "image": read_image,
    "timeseries": read_timeseries,
    "vector": read_vector,
    "text": read_text,
}
