"""The corpus under tests/data/bad_inputs: every file is refused with a message a person can act on."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from deq_core import Modality
from deq_core.data.readers import READERS, InputError
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
    assert set(corpus) == set(MAKE.EXPECTED)
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
