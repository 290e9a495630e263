"""Tests for deq_core.data.readers: strict per-kind readers of files and uploads."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deq_core.data.readers import (
    MAX_IMAGE_PIXELS,
    READERS,
    InputError,
    pixels_to_tensor,
    read_image,
    read_plain_text,
    read_text,
    read_timeseries,
    read_vector,
    text_to_tokens,
)
from deq_core.engine.modality import KINDS, Modality
from deq_core.engine.text import build_vocabulary

GRAY = Modality("photo", "image", (1, 8, 6))
RGB = Modality("picture", "image", (3, 8, 6))
SERIES = Modality("sensors", "timeseries", (2, 4), feature_names=("vibration", "temperature"))
UNNAMED_SERIES = Modality("log", "timeseries", (2, 4))
VECTOR = Modality("stats", "vector", (3,))
NOTE = Modality("note", "text", (5,), vocabulary=build_vocabulary(["small scratch near the bore"]))


def png_bytes(pixels: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def gray_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(8, 6), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    pixels = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def csv_bytes(text: str) -> bytes:
    return text.encode("utf-8")


GOOD_SERIES = "vibration,temperature\n0.1,40\n-0.2,40.5\n0.3,41\n0.25,41.5\n"


def test_the_registry_covers_every_kind():
    assert set(READERS) == set(KINDS)
    assert READERS["image"] is read_image and READERS["text"] is read_text


# ----------------------------------------------------------------------------- images


def test_a_grayscale_png_reads_as_exact_k_over_255_from_bytes_and_from_a_path(tmp_path):
    pixels = gray_pixels()
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(pixels))
    from_bytes, from_path = read_image(path.read_bytes(), GRAY), read_image(path, GRAY)
    assert from_bytes.shape == (1, 8, 6) and from_bytes.dtype == torch.float32
    assert torch.equal(from_bytes, from_path)
    assert torch.equal(from_bytes[0], torch.from_numpy(pixels.astype(np.float32) / np.float32(255)))
    assert torch.equal(read_image(str(path), GRAY), from_path)


def test_channels_are_converted_to_what_the_modality_needs():
    rgb = np.random.default_rng(1).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    as_rgb = read_image(png_bytes(rgb), RGB)
    assert torch.equal(as_rgb, pixels_to_tensor(rgb).permute(2, 0, 1))
    as_gray = read_image(png_bytes(rgb), GRAY)
    assert torch.equal(as_gray[0], pixels_to_tensor(np.asarray(Image.fromarray(rgb).convert("L"))))
    gray_as_rgb = read_image(png_bytes(gray_pixels()), RGB)
    assert torch.equal(gray_as_rgb[0], gray_as_rgb[2]) and gray_as_rgb.shape == (3, 8, 6)


def test_jpeg_and_16_bit_png_are_read():
    for image in (Image.fromarray(gray_pixels()), Image.fromarray(gray_pixels()).convert("CMYK")):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        assert read_image(buffer.getvalue(), GRAY).shape == (1, 8, 6)
    deep = (gray_pixels().astype(np.uint16) * 257)
    image = read_image(png_bytes(deep), GRAY)
    assert torch.equal(image[0], torch.from_numpy(deep.astype(np.float32) / np.float32(65535)))


def test_an_opaque_alpha_channel_is_accepted_a_transparent_pixel_is_not():
    rgba = np.full((8, 6, 4), 200, dtype=np.uint8)
    rgba[..., 3] = 255
    assert read_image(png_bytes(rgba, mode="RGBA"), GRAY).shape == (1, 8, 6)
    rgba[0, 0, 3] = 10
    with pytest.raises(InputError, match="transparent"):
        read_image(png_bytes(rgba, mode="RGBA"), GRAY)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (png_bytes(gray_pixels())[:-30], "not a readable PNG or JPEG"),  # truncated
        (png_bytes(gray_pixels())[:40], "not a readable PNG or JPEG"),  # cut inside the header chunks
        (b"hello, I am a text file that someone named photo.png\n", "not a readable PNG or JPEG"),
        (b"", "not a readable PNG or JPEG"),
        (png_bytes(np.zeros((8, 7), dtype=np.uint8)), r"7x8 pixels \(width x height\), expected 6x8"),
        (png_bytes(np.zeros((6, 8), dtype=np.uint8)), "is 8x6 pixels"),
    ],
    ids=["truncated", "header-only", "text-named-png", "empty", "wrong-width", "transposed"],
)
def test_bad_images_raise_input_error(content, message):
    with pytest.raises(InputError, match=message):
        read_image(content, GRAY)


def test_other_image_formats_are_refused():
    for image_format in ("GIF", "BMP", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(gray_pixels()).save(buffer, format=image_format)
        with pytest.raises(InputError, match="PNG or JPEG"):
            read_image(buffer.getvalue(), GRAY)


@pytest.mark.parametrize(
    ("side", "message"),
    # 25 M pixels is over our limit only; 100 M over PIL's warning limit (made an error); 10 G over its error limit.
    [(5_000, "over the limit"), (10_000, "too large to decode safely"), (100_000, "too large to decode safely")],
)
def test_decompression_bombs_are_refused_from_the_header_alone(side, message):
    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match=message):
        read_image(png_header_only(side, side), GRAY)


def test_a_missing_file_and_a_folder_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.png", GRAY)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(tmp_path, GRAY)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_give_a_valid_image_or_an_input_error(content):
    try:
        image = read_image(content, GRAY)
    except InputError:
        return
    assert image.shape == GRAY.shape and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1


VALID_PNG = png_bytes(gray_pixels(7))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(VALID_PNG) - 1), st.integers(0, 255)), max_size=4),
    st.integers(8, len(VALID_PNG)),
)
def test_corrupted_pngs_give_a_valid_image_or_an_input_error(flips, length):
    content = bytearray(VALID_PNG[:length])
    for position, value in flips:
        if position < len(content):
            content[position] = value
    try:
        image = read_image(bytes(content), GRAY)
    except InputError:
        return
    assert image.shape == GRAY.shape and torch.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 1


# ----------------------------------------------------------------------------- time series


def test_a_series_csv_is_read_channels_first():
    series = read_timeseries(csv_bytes(GOOD_SERIES), SERIES)
    assert series.shape == (2, 4) and series.dtype == torch.float32
    assert torch.equal(series[1], torch.tensor([40, 40.5, 41, 41.5]))
    assert torch.equal(series[0], torch.tensor([0.1, -0.2, 0.3, 0.25], dtype=torch.float32))
    # A byte-order mark (spreadsheet export) and trailing blank lines are harmless.
    assert torch.equal(read_timeseries(b"\xef\xbb\xbf" + csv_bytes(GOOD_SERIES + "\n\n"), SERIES), series)
    # Without channel names in the modality, any header is accepted.
    assert torch.equal(read_timeseries(csv_bytes(GOOD_SERIES.replace("vibration", "x")), UNNAMED_SERIES), series)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_SERIES.replace("-0.2", "nan"), r"line 3, column 'vibration'.*NaN"),
        (GOOD_SERIES.replace("-0.2", "NaN"), r"line 3.*NaN"),
        (GOOD_SERIES.replace("-0.2", ""), r"line 3.*missing"),
        (GOOD_SERIES.replace("41.5", "inf"), r"line 5, column 'temperature'.*infinite"),
        (GOOD_SERIES.replace("41.5", "1e999"), r"line 5.*too large"),
        (GOOD_SERIES.replace("41.5", "1e39"), r"line 5.*too large for float32"),
        (GOOD_SERIES.replace("0.3", "high"), r"line 4.*'high' is not a number"),
        (GOOD_SERIES.replace("0.3", "1_0"), r"not a number"),
        (GOOD_SERIES + "0.2,42\n", "5 rows of values, expected 4"),
        ("vibration,temperature\n0.1,40\n", "1 rows of values, expected 4"),
        (GOOD_SERIES.replace("0.3,41", "0.3,41,7"), r"line 4: 3 values, expected 2"),
        (GOOD_SERIES.replace("vibration,temperature", "temperature,vibration"), "expected .*in this order"),
        (GOOD_SERIES.replace("vibration,temperature", "vibration"), "header has 1 columns, expected 2"),
        (GOOD_SERIES.replace("vibration,temperature\n", "") + "0.1,40\n", "must be a header"),
        ("", "empty"),
        ('vibration,temperature\n"0.1,40\n', "rows of values|not valid CSV"),
    ],
    ids=["nan", "NaN", "empty-cell", "inf", "overflow", "float32-overflow", "text", "underscore", "too-many-rows",
         "too-few-rows", "ragged", "reordered", "narrow-header", "no-header", "empty-file", "open-quote"],
)
def test_bad_series_raise_input_error_naming_the_place(text, message):
    with pytest.raises(InputError, match=message):
        read_timeseries(csv_bytes(text), SERIES)


def test_non_utf8_csv_is_refused():
    with pytest.raises(InputError, match="not UTF-8"):
        read_timeseries(GOOD_SERIES.encode("utf-16"), SERIES)


# ----------------------------------------------------------------------------- vectors


def test_a_vector_reads_from_csv_and_from_npy(tmp_path):
    from_csv = read_vector(csv_bytes("a,b,c\n1,2.5,-3\n"), VECTOR)
    assert torch.equal(from_csv, torch.tensor([1, 2.5, -3]))
    path = tmp_path / "v.npy"
    np.save(path, np.array([1, 2.5, -3], dtype=np.float64))
    assert torch.equal(read_vector(path, VECTOR), from_csv)
    np.save(path, np.array([1, 2, 3], dtype=np.int32))
    assert read_vector(path, VECTOR).dtype == torch.float32


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (npy_bytes(np.zeros(4)), r"shape \(4,\), expected \(3,\)"),
        (npy_bytes(np.zeros((1, 3))), r"shape \(1, 3\)"),
        (npy_bytes(np.array([1.0, np.nan, 2.0])), "NaN or infinite"),
        (npy_bytes(np.array(["a", "b", "c"])), "real numbers"),
        (npy_bytes(np.array([{"a": 1}, 2, 3], dtype=object), allow_pickle=True), "not a readable .npy"),
        (npy_bytes(np.zeros(3))[:-5], "not a readable .npy"),
        (csv_bytes("a,b,c\n1,2\n"), "2 values, expected 3"),
        (csv_bytes("a,b,c\n1,2,3\n4,5,6\n"), "2 rows of values, expected 1"),
        (csv_bytes("a,b,c\n1,nan,3\n"), "NaN"),
    ],
    ids=["long", "2d", "nan", "strings", "pickle", "truncated", "short-row", "two-rows", "csv-nan"],
)
def test_bad_vectors_raise_input_error(content, message):
    with pytest.raises(InputError, match=message):
        read_vector(content, VECTOR)


# ----------------------------------------------------------------------------- text


def test_text_reads_to_token_ids_and_raw_text(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text("Small scratch near the flange.", encoding="utf-8")
    ids = read_text(path, NOTE)
    vocabulary = NOTE.vocabulary
    assert ids.dtype == torch.int64 and ids.shape == (5,)
    assert ids.tolist() == [vocabulary.index(w) for w in ("small", "scratch", "near", "the")] + [1]
    assert torch.equal(read_text(path.read_bytes(), NOTE), ids)
    assert torch.equal(text_to_tokens("Small scratch near the flange.", NOTE), ids)
    assert read_plain_text(path) == "Small scratch near the flange."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\t ", "empty"),
        ("Kratzer am Flansch ist groß".encode("latin-1"), "not UTF-8"),
        (b"\xff\xfe\x00\x00", "not UTF-8"),
        (b"scratch\x00\x00\x01", "control characters"),
        ("!!! ??? ...".encode(), "no words"),
    ],
    ids=["empty", "blank", "latin-1", "garbage", "binary", "no-words"],
)
def test_bad_text_raises_input_error(content, message):
    with pytest.raises(InputError, match=message):
        read_text(content, NOTE)


def test_a_reader_refuses_a_modality_of_another_kind():
    with pytest.raises(ValueError, match="not a image"):
        read_image(png_bytes(gray_pixels()), VECTOR)


def test_pixels_to_tensor_is_exact_and_refuses_other_dtypes():
    pixels = np.arange(256, dtype=np.uint8)
    assert torch.equal(pixels_to_tensor(pixels) * 255, torch.arange(256, dtype=torch.float32))
    with pytest.raises(ValueError):
        pixels_to_tensor(pixels.astype(np.float32))
