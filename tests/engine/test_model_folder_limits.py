"""One bad model folder: a clear ModelLoadError, fast and without a big allocation.

Each folder starts as a tiny saved model (``tiny_model`` through ``save_model``) and
is then corrupted. Resealed folders have their checksums rewritten to match, as a
careless or malicious editor would, so the checks behind the checksums are reached.
Every answer must be a ``ModelLoadError`` naming the file or field at fault, within
``SECONDS`` and with at most ``PEAK_BYTES`` of Python allocations: no RecursionError,
no MemoryError, no 256 GB tensor.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from deq_core import ModelLoadError, load_config, load_model, save_model
from deq_core.engine.checkpoint import CHECKSUMS, CONFIG, WEIGHTS, sha256_file

from conftest import tiny_model

SECONDS = 5.0  # generous on two busy cores; the checks themselves take milliseconds
PEAK_BYTES = 64 << 20  # Python allocations while answering (a parsed 100 MB config would pass it)
MODELS = Path(__file__).resolve().parents[2] / "assets" / "models"


def reseal(folder: Path) -> None:
    sums = {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)}
    (folder / CHECKSUMS).write_text(json.dumps(sums))


def saved(tmp_path: Path, architecture: str = "deq", name: str = "m") -> Path:
    return save_model(tiny_model(architecture), tmp_path / name)


def edit_config(folder: Path, change: Callable[[dict], None], seal: bool = True) -> Path:
    config = json.loads((folder / CONFIG).read_text())
    change(config)
    (folder / CONFIG).write_text(json.dumps(config))
    if seal:
        reseal(folder)
    return folder


def answer(call: Callable[[], object]) -> tuple[ModelLoadError, float, int]:
    """The ModelLoadError ``call`` raises, the seconds it took and its peak Python allocation."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelLoadError) as caught:
            call()
        return caught.value, time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_refused(folder: Path, *fragments: str) -> None:
    """Both ways in (the config alone, the whole model) refuse the folder quickly, naming what is wrong."""
    for call in (lambda: load_config(folder), lambda: load_model(folder, device="cpu")):
        error, seconds, peak = answer(call)
        message = str(error)
        assert all(f in message for f in fragments), message
        assert seconds < SECONDS, (message, seconds)
        assert peak < PEAK_BYTES, (message, peak)
        assert len(message) < 600, message  # a message, not a dump of the file


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --------------------------------------------------------------------------- the JSON files themselves


@pytest.mark.parametrize("seal", [False, True], ids=["stale-checksums", "resealed"])
def test_a_100_mb_nested_config_is_refused_by_its_size(tmp_path, seal):
    folder = saved(tmp_path)
    (folder / CONFIG).write_text(nested(50_000_000))
    if seal:
        reseal(folder)
    assert_refused(folder, str(folder / CONFIG), "100000000 bytes", "1048576")


def test_a_small_but_deeply_nested_config_is_refused_without_recursion(tmp_path):
    folder = saved(tmp_path)
    (folder / CONFIG).write_text('{"architecture": ' + nested(100_000) + "}")
    reseal(folder)
    assert_refused(folder, str(folder / CONFIG), "nested deeper than")


def test_a_config_edited_after_saving_is_refused_before_it_is_parsed(tmp_path):
    folder = saved(tmp_path)
    (folder / CONFIG).write_text(nested(100_000))  # stale checksums: the hash is checked first
    assert_refused(folder, str(folder / CONFIG), "changed after the model was saved")


def test_deeply_nested_checksums_are_refused_without_recursion(tmp_path):
    folder = saved(tmp_path)
    (folder / CHECKSUMS).write_text(nested(30_000))  # 60 KB: under the size limit, so the depth is checked
    assert_refused(folder, str(folder / CHECKSUMS), "nested deeper than")


def test_oversized_checksums_are_refused_by_their_size(tmp_path):
    folder = saved(tmp_path)
    sums = json.loads((folder / CHECKSUMS).read_text())
    (folder / CHECKSUMS).write_text(json.dumps(sums) + " " * (1 << 20))
    assert_refused(folder, str(folder / CHECKSUMS), "65536")


@pytest.mark.parametrize("recorded", [5, ["x"], None, "not a hash"])
def test_a_checksum_that_is_not_a_hash_is_named(tmp_path, recorded):
    folder = saved(tmp_path)
    sums = json.loads((folder / CHECKSUMS).read_text())
    sums[CONFIG] = recorded
    (folder / CHECKSUMS).write_text(json.dumps(sums))
    assert_refused(folder, str(folder / CHECKSUMS), "SHA-256")


def test_checksums_that_are_not_an_object_are_named(tmp_path):
    folder = saved(tmp_path)
    (folder / CHECKSUMS).write_text('["weights.safetensors", "config.json"]')
    assert_refused(folder, str(folder / CHECKSUMS), "object")


# --------------------------------------------------------------------------- numbers that would allocate or run forever


BAD_NUMBERS = {  # id -> (change to the config, fragments of the message)
    "width-1e9": (lambda c: c.update(width=10**9), ("width", "1000000000", "1 to 1024")),
    "width-string": (lambda c: c.update(width="128"), ("width", "'128'", "integer")),
    "width-bool": (lambda c: c.update(width=True), ("width", "True", "integer")),
    "groups-0": (lambda c: c.update(groups=0), ("groups", "0", "1 to")),
    "unroll-1e9": (lambda c: c.update(unroll_steps=10**9), ("unroll_steps", "1000000000", "1 to 500")),
    "max_iter-1e9": (lambda c: c["solver"].update(max_iter=10**9), ("solver.max_iter", "1000000000", "1 to 500")),
    "max_iter-1e6-tol-1e-300": (lambda c: c["solver"].update(max_iter=10**6, tol=1e-300),
                                ("solver.max_iter", "1000000", "solver.tol", "1e-300")),  # fmt: skip
    "tol-1e-300": (lambda c: c["solver"].update(tol=1e-300), ("solver.tol", "1e-300", "1e-12 to 1")),
    "tol-nan": (lambda c: c["solver"].update(tol=float("nan")), ("solver.tol", "nan")),
    "backward-max_iter": (lambda c: c["solver"]["backward"].update(max_iter=10**9), ("solver.backward.max_iter",)),
    "backward-tol": (lambda c: c["solver"]["backward"].update(tol=0.0), ("solver.backward.tol", "1e-12 to 1")),
    "memory-1e6": (lambda c: c["solver"].update(memory=10**6), ("solver.memory", "1 to 100")),
    "beta-5": (lambda c: c["solver"].update(beta=5.0), ("solver.beta", "5.0", "0 (excluded) to 1")),
    "beta-nan": (lambda c: c["solver"].update(beta=float("nan")), ("solver.beta", "nan")),
    "damping-0": (lambda c: c["solver"].update(damping=0.0), ("solver.damping", "0 (excluded) to 1")),
    "lam-negative": (lambda c: c["solver"].update(lam=-1.0), ("solver.lam", "-1.0", "0 to 1")),
    "phantom-1e9": (lambda c: c["solver"].update(phantom_steps=10**9), ("solver.phantom_steps",)),
    "channels-1e9": (lambda c: c["encoder"].update(channels=10**9), ("encoder.channels", "2 to 512")),
    "embedding-1e9": (lambda c: c["encoder"].update(embedding_dim=10**9), ("encoder.embedding_dim",)),
    "hidden-1e9": (lambda c: c["encoder"].update(vector_hidden=10**9), ("encoder.vector_hidden",)),
    "dropout-2": (lambda c: c["encoder"].update(dropout=2.0), ("encoder.dropout", "0 to 1")),
    "image-1e5-square": (lambda c: c["modalities"][0].update(shape=[1, 100_000, 100_000]),
                         ("modalities[0] 'photo'", "shape", "100000")),  # fmt: skip
    "series-product": (lambda c: c["modalities"][1].update(shape=[1024, 65536]),
                       ("modalities[1] 'sensors'", "1048576")),  # fmt: skip
    "shape-negative": (lambda c: c["modalities"][3].update(shape=[-5]), ("modalities[3] 'stats'", "-5")),
    "shape-not-a-list": (lambda c: c["modalities"][3].update(shape=5), ("modalities[3] 'stats'", "shape", "list")),
    "vocabulary-60k": (lambda c: c["modalities"][2].update(vocabulary=["<pad>", "<unk>", *map(str, range(60_000))]),
                       ("modalities[2] 'note'", "vocabulary", "60002", "50000")),  # fmt: skip
    "modalities-100": (lambda c: c.update(modalities=[{**c["modalities"][3], "name": f"v{i}"} for i in range(100)]),
                       ("modalities", "100", "1 to 16")),  # fmt: skip
    "modality-not-an-object": (lambda c: c["modalities"].append(["stats"]), ("modalities[4]", "object")),
    "classes-20k": (lambda c: c.update(class_names=[f"c{i}" for i in range(20_000)]), ("class_names", "20000", "2 to 1000")),
    "class-not-a-string": (lambda c: c.update(class_names=["a", {"b": 1}, "c"]), ("class_names[1]", "string")),
    "config-not-an-object": (lambda c: (c.clear(), c.update({"architecture": ["deq"]})), ("architecture",)),
}


@pytest.mark.parametrize("bad", sorted(BAD_NUMBERS))
def test_a_number_out_of_range_is_named_with_its_value_and_range(tmp_path, bad):
    change, fragments = BAD_NUMBERS[bad]
    folder = edit_config(saved(tmp_path), change)
    assert_refused(folder, str(folder / CONFIG), *fragments)


def test_a_config_that_is_not_an_object_is_named(tmp_path):
    folder = saved(tmp_path)
    (folder / CONFIG).write_text("[1, 2, 3]")
    reseal(folder)
    assert_refused(folder, str(folder / CONFIG), "a JSON object")


def test_the_solver_history_per_case_is_bounded_across_fields():
    """Each number in range, their product not: Broyden keeps two max_iter x state matrices per case."""
    from deq_core.engine import check_config_limits

    config = json.loads((MODELS / "inspection-deq" / CONFIG).read_text())
    config["solver"].update(method="broyden", max_iter=500)
    check_config_limits(config)  # 500 iterations of a 4 x 128 state: allowed
    config.update(width=1024)
    with pytest.raises(ValueError, match=r"solver.max_iter x state size .*2048000.*524288"):
        check_config_limits(config)


def test_the_weights_a_config_asks_for_are_bounded_before_they_are_allocated(tmp_path):
    """16 vector inputs of 65536 features at width 512: each number allowed, half a billion weights not."""
    folder = saved(tmp_path)

    def change(c: dict) -> None:
        c.update(width=512, modalities=[{"name": f"v{i}", "kind": "vector", "shape": [65536]} for i in range(16)])

    edit_config(folder, change)
    assert_refused(folder, str(folder / CONFIG), "weights", "parameters")


def test_a_weights_file_larger_than_its_config_allows_is_refused_before_hashing(tmp_path):
    folder = saved(tmp_path)
    with open(folder / WEIGHTS, "r+b") as handle:  # sparse: 8 GB on paper, nothing on disk
        handle.truncate(8 << 30)
    error, seconds, _ = answer(lambda: load_model(folder, device="cpu"))
    assert str(folder / WEIGHTS) in str(error) and "larger than" in str(error), str(error)
    assert seconds < SECONDS


# --------------------------------------------------------------------------- what must not change


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.iterdir() if (p / CONFIG).is_file()))
def test_every_shipped_model_passes_the_limits_and_loads(name):
    from deq_core.engine import check_config_limits

    folder = MODELS / name
    check_config_limits(json.loads((folder / CONFIG).read_text()))
    model = load_model(folder, device="cpu")
    assert model.config == load_config(folder)


def test_eight_shipped_models():
    assert len([p for p in MODELS.iterdir() if (p / CONFIG).is_file()]) == 8


def test_a_good_folder_still_loads_after_the_checks(tmp_path):
    folder = saved(tmp_path, "weight_tied")
    assert load_model(folder, device="cpu").config == tiny_model("weight_tied").config
    assert os.path.getsize(folder / CONFIG) < 1 << 20
