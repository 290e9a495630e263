"""deq_core.cache: where results live, how they are keyed, written, bounded and shared."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deq_core import cache
from deq_core.cache import DiskCache, MemoryCache, cache_root, data_fingerprint, key
from deq_core.data import MultimodalDataset

from conftest import tiny_inputs, tiny_modalities


def _dataset(inputs=None, ids=None, name="tiny") -> MultimodalDataset:
    inputs = inputs if inputs is not None else tiny_inputs(4, seed=3)
    return MultimodalDataset(name, "test", tiny_modalities(), ("a", "b", "c"), inputs, torch.tensor([0, 1, 2, 0]),
                             ids or ("c0", "c1", "c2", "c3"))  # fmt: skip


# ----------------------------------------------------------------------------- root and keys


def test_the_root_is_the_environment_variable_or_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEQ_LENS_CACHE", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here"
    assert DiskCache("robustness").folder == tmp_path / "here" / "robustness"
    monkeypatch.delenv("DEQ_LENS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "deq-lens"
    repo = Path(cache.__file__).resolve().parents[1]
    assert repo not in cache_root().parents


def test_the_size_bound_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DEQ_LENS_CACHE_MAX_MB", raising=False)
    assert DiskCache("n", tmp_path).max_bytes == 512 * 1024 * 1024
    monkeypatch.setenv("DEQ_LENS_CACHE_MAX_MB", "2")
    assert DiskCache("n", tmp_path).max_bytes == 2 * 1024 * 1024
    assert DiskCache("n", tmp_path, max_bytes=10).max_bytes == 10
    monkeypatch.setenv("DEQ_LENS_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="DEQ_LENS_CACHE_MAX_MB"):
        DiskCache("n", tmp_path)


@dataclasses.dataclass(frozen=True)
class _Settings:
    tol: float
    method: str


def test_keys_are_canonical_and_tell_values_apart():
    assert key({"b": 1, "a": (1, 2)}, "x") == key({"a": [1, 2], "b": 1}, "x")
    assert key(_Settings(1e-3, "anderson")) == key({"method": "anderson", "tol": 1e-3})
    assert key(np.float64(0.5), Path("m")) == key(0.5, "m")
    assert len(key("a")) == 64
    distinct = {key(*parts) for parts in [("a",), ("b",), ("a", "b"), (["a", "b"],), (1,), (1.5,), ({"a": 1},)]}
    assert len(distinct) == 7
    with pytest.raises(TypeError):
        key(object())


def test_the_data_fingerprint_follows_every_byte_and_nothing_else():
    base = _dataset()
    assert data_fingerprint(base) == data_fingerprint(_dataset())  # equal data, separate tensors
    photo, *rest = tiny_inputs(4, seed=3)
    raw = photo.numpy().view(np.uint8).copy()
    raw.reshape(-1)[17] ^= 1  # one bit of one input byte
    changed = (torch.from_numpy(raw.view(np.float32).reshape(photo.shape)), *rest)
    assert data_fingerprint(_dataset(changed)) != data_fingerprint(base)
    assert data_fingerprint(_dataset(ids=("c0", "c1", "c2", "x"))) != data_fingerprint(base)
    assert data_fingerprint(_dataset(name="other")) != data_fingerprint(base)
    labels = dataclasses.replace(base, labels=torch.tensor([0, 1, 2, 1]))
    assert data_fingerprint(labels) != data_fingerprint(base)
    assert data_fingerprint(dataclasses.replace(base, split="val")) != data_fingerprint(base)


def test_the_data_fingerprint_includes_the_library_version(monkeypatch):
    import deq_core

    before = data_fingerprint(_dataset())
    monkeypatch.setattr(deq_core, "__version__", "0.0.0-test")
    assert data_fingerprint(_dataset()) != before


# ----------------------------------------------------------------------------- on disk


def test_json_and_arrays_round_trip(tmp_path):
    store = DiskCache("n", tmp_path)
    assert store.get_json("k") is None and store.get_arrays("k") is None
    store.put_json("k", {"rows": [1, 2.5, None], "nan": float("nan")})
    value = store.get_json("k")
    assert value["rows"] == [1, 2.5, None] and np.isnan(value["nan"])
    arrays = {"x": np.arange(6.0).reshape(2, 3), "ids": np.array(["a", "bc"])}
    store.put_arrays("a", arrays)
    back = store.get_arrays("a")
    assert set(back) == {"x", "ids"} and np.array_equal(back["x"], arrays["x"]) and list(back["ids"]) == ["a", "bc"]
    assert store.contains("k") and store.contains("a") and not store.contains("z")
    with pytest.raises(TypeError, match="objects"):
        store.put_arrays("o", {"o": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError):
        store.get_json("../escape")


def test_a_write_that_fails_before_the_rename_leaves_the_old_entry_and_no_partial_file(tmp_path, monkeypatch):
    store = DiskCache("n", tmp_path)
    store.put_json("k", {"version": 1})

    def crash(src, dst):
        raise OSError("disk pulled out mid-write")

    monkeypatch.setattr(cache.os, "replace", crash)
    with pytest.raises(OSError, match="mid-write"):
        store.put_json("k", {"version": 2})
    with pytest.raises(OSError):
        store.put_json("fresh", {"version": 2})
    with pytest.raises(OSError):
        store.put_arrays("arrays", {"x": np.zeros(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in store.folder.iterdir()) == ["k.json"]  # no staging file, no new entry
    assert store.get_json("k") == {"version": 1}
    assert store.get_json("fresh") is None and store.get_arrays("arrays") is None


def test_a_corrupt_entry_is_a_miss_and_is_removed(tmp_path):
    store = DiskCache("n", tmp_path)
    store.put_json("j", {"a": 1})
    store.put_arrays("a", {"x": np.zeros(4)})
    (store.folder / "j.json").write_text('{"a": 1')  # truncated
    data = (store.folder / "a.npz").read_bytes()
    (store.folder / "a.npz").write_bytes(data[: len(data) // 2])
    assert store.get_json("j") is None and not (store.folder / "j.json").exists()
    assert store.get_arrays("a") is None and not (store.folder / "a.npz").exists()
    (store.folder / "p.npz").write_bytes(b"not a zip at all")
    assert store.get_arrays("p") is None and not store.contains("p")


def _age(store: DiskCache, entry: str, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(store.folder / f"{entry}.json", (t, t))


def test_eviction_removes_the_least_recently_used_until_under_the_bound(tmp_path):
    payload = "x" * 1000  # each entry ~1 kB
    store = DiskCache("n", tmp_path, max_bytes=3500)
    for i, name in enumerate(["a", "b", "c"]):
        store.put_json(name, payload)
        _age(store, name, 100 - i)  # a oldest, then b, then c
    assert store.get_json("a") == payload  # a read makes a the most recently used
    store.put_json("d", payload)  # four entries do not fit: b goes, the least recently used
    assert sorted(p.stem for p, _, _ in store.entries()) == ["a", "c", "d"]
    assert store.size() <= store.max_bytes
    store.put_json("e", payload * 2)  # ~2 kB more: c then a go
    assert [p.stem for p, _, _ in store.entries()] == ["d", "e"]
    assert store.size() <= store.max_bytes
    store.put_json("huge", payload * 5)  # larger than the bound on its own: nothing can stay
    assert store.entries() == [] and store.get_json("huge") is None


def test_eviction_leaves_other_namespaces_and_staging_files_alone(tmp_path):
    small = DiskCache("small", tmp_path, max_bytes=1500)
    other = DiskCache("other", tmp_path, max_bytes=10**6)
    other.put_json("keep", "y" * 1000)
    staging = small.folder / ".k.json.abc.tmp"
    small.folder.mkdir(parents=True)
    staging.write_text("someone else is writing this")
    small.put_json("one", "x" * 1000)
    small.put_json("two", "x" * 1000)
    assert [p.stem for p, _, _ in small.entries()] == ["two"]
    assert other.get_json("keep") == "y" * 1000 and staging.exists()


# ----------------------------------------------------------------------------- in memory


def test_memory_cache_computes_a_key_once_under_concurrent_threads():
    memory, calls, start = MemoryCache(8), [], threading.Barrier(8)

    def slow():
        calls.append(threading.current_thread().name)
        time.sleep(0.2)
        return object()

    results = [None] * 8

    def ask(i):
        start.wait()
        results[i] = memory.get_or_compute(("sweep", "m"), slow)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and all(r is results[0] for r in results) and len(memory) == 1


def test_memory_cache_other_keys_do_not_wait_for_a_slow_one():
    memory, release, started = MemoryCache(8), threading.Event(), threading.Event()

    def blocked():
        started.set()
        release.wait(10)
        return "slow"

    thread = threading.Thread(target=memory.get_or_compute, args=("slow", blocked))
    thread.start()
    assert started.wait(10)
    assert memory.get_or_compute("fast", lambda: "fast") == "fast"  # would hang if the lock were global
    release.set()
    thread.join(10)
    assert memory.get("slow") == "slow"


def test_memory_cache_is_bounded_lru_and_does_not_keep_failures():
    memory = MemoryCache(2)
    memory.get_or_compute("a", lambda: 1)
    memory.get_or_compute("b", lambda: 2)
    assert memory.get_or_compute("a", lambda: -1) == 1  # a is now the most recently used
    memory.get_or_compute("c", lambda: 3)
    assert "b" not in memory and "a" in memory and "c" in memory and len(memory) == 2

    def fail():
        raise RuntimeError("transient")

    with pytest.raises(RuntimeError):
        memory.get_or_compute("d", fail)
    assert "d" not in memory and memory.get_or_compute("d", lambda: 4) == 4
    memory.clear()
    assert len(memory) == 0
    with pytest.raises(ValueError):
        MemoryCache(0)
