"""Write the corpus of bad inputs the readers and the app's upload path must refuse politely.

    python tests/data/bad_inputs/make.py

Deterministic: running it again rewrites identical bytes. Shapes follow the
inspection dataset (photo 64x64 grayscale, sensors 3 channels x 128 steps).
``EXPECTED`` names, per file, the modality kind it is offered as and a fragment
of the message the reader must give. ``NOTED`` names the files that are read by
their content but not silently: the reader's note must contain the fragment.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
WIDTH = HEIGHT = 64
CHANNELS = ("vibration", "temperature", "motor_current")
STEPS = 128

# file -> (modality kind, fragment of the InputError message)
EXPECTED = {
    "corrupt.png": ("image", "not a readable PNG or JPEG image"),
    "truncated.png": ("image", "not a readable PNG or JPEG image"),
    "gif_renamed.png": ("image", "not a readable PNG or JPEG image"),
    "text_renamed.png": ("image", "not a readable PNG or JPEG image"),
    "bomb.png": ("image", "too large"),
    "bomb_moderate.png": ("image", "over the limit"),
    "empty.png": ("image", "not a readable PNG or JPEG image"),
    "sensors_nan.csv": ("timeseries", "missing or NaN"),
    "sensors_inf.csv": ("timeseries", "infinite"),
    "sensors_text.csv": ("timeseries", "is not a number"),
    "sensors_wrong_shape.csv": ("timeseries", "expected 128 (one per time step)"),
    "sensors_wrong_columns.csv": ("timeseries", "the header has 2 columns, expected 3"),
    "sensors_binary.csv": ("timeseries", "not UTF-8"),
    "sensors_semicolon.csv": ("timeseries", "looks ';'-separated"),
    "note_empty.txt": ("text", "text is empty"),
    "note_latin1.txt": ("text", "not UTF-8"),
    "note_binary.txt": ("text", "control characters"),
}

# file -> (modality kind, fragment of the note the reader adds): accepted, and said so
NOTED = {
    "jpeg_renamed.png": ("image", "is a JPEG image although its name ends in .png"),
    "rgb.png": ("image", "RGB colour image converted to grayscale"),
}


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid-looking PNG header declaring width x height 8-bit grayscale pixels; under 200 bytes on disk."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)  # a few rows of zeros; the rest is never there
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def _sensors(values: np.ndarray, header=CHANNELS) -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in values]
    return ("\n".join(lines) + "\n").encode()


def corpus() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    good = _png(pixels)
    corrupt = bytearray(good)
    start = good.index(b"IDAT") + 8
    corrupt[start : start + 64] = bytes(64)  # zero the compressed data: zlib and CRC both fail
    gif = io.BytesIO()
    Image.fromarray(pixels).save(gif, format="GIF")
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=90)
    rgb = np.stack([pixels, pixels[::-1], pixels[:, ::-1]], axis=2)
    readings = np.round(rng.normal(size=(STEPS, 3)), 4).astype(object)
    nan, inf, text = readings.copy(), readings.copy(), readings.copy()
    nan[10, 1], inf[20, 0], text[5, 2] = "nan", "inf", "hot"
    return {
        "corrupt.png": bytes(corrupt),
        "truncated.png": good[: len(good) // 2],
        "gif_renamed.png": gif.getvalue(),
        "text_renamed.png": b"vibration,temperature,motor_current\n1,2,3\n",
        "bomb.png": _bomb(),
        "bomb_moderate.png": _bomb(5_000, 5_000),
        "empty.png": b"",
        "sensors_nan.csv": _sensors(nan),
        "sensors_inf.csv": _sensors(inf),
        "sensors_text.csv": _sensors(text),
        "sensors_wrong_shape.csv": _sensors(readings[:100]),
        "sensors_wrong_columns.csv": _sensors(readings[:, :2], CHANNELS[:2]),
        "sensors_binary.csv": b"\xff\xfe\x00\x01" + bytes(range(128, 256)),
        "sensors_semicolon.csv": _sensors(readings).replace(b",", b";"),
        "jpeg_renamed.png": jpeg.getvalue(),
        "rgb.png": _png(rgb),
        "note_empty.txt": b"   \n\t\n",
        "note_latin1.txt": "Rayure sur la pièce, bruit élevé".encode("latin-1"),
        "note_binary.txt": b"bearing\x00noise\x01\x02 heard",
    }


def main() -> None:
    for name, content in corpus().items():
        (HERE / name).write_bytes(content)
    print(f"wrote {len(corpus())} files to {HERE}")


if __name__ == "__main__":
    main()
