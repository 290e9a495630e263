"""One place for cached results: where they live, how they are keyed, how they are bounded.

Sweeps and evaluations take minutes on a small CPU and are asked for again and again
(every app restart, every repeated CLI run), so their results are kept:

- ``cache_root()``: ``$DEQ_LENS_CACHE``, else ``~/.cache/deq-lens``; never the source tree,
  so a checkout stays clean and read-only installs work.
- ``data_fingerprint(data)``: the one identity of a dataset split every cache keys on.
- ``key(*parts)``: a stable hash of plain values (dataclasses and tuples included).
- ``DiskCache``: JSON and numpy entries on disk, written atomically, bounded in size
  (least recently used entries go first), unreadable entries treated as absent.
- ``MemoryCache``: a thread-safe in-process LRU that computes each key once, however
  many threads ask for it at the same time.

No streamlit here: the app and the CLIs share it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ENV_ROOT = "DEQ_LENS_CACHE"
ENV_MAX_MB = "DEQ_LENS_CACHE_MAX_MB"
DEFAULT_MAX_MB = 512
_JSON, _ARRAYS = ".json", ".npz"

T = TypeVar("T")


def cache_root() -> Path:
    """``$DEQ_LENS_CACHE`` if set, else ``~/.cache/deq-lens``: outside the source tree."""
    chosen = os.environ.get(ENV_ROOT, "").strip()
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "deq-lens"


def default_max_bytes() -> int:
    """``$DEQ_LENS_CACHE_MAX_MB`` megabytes (default 512) per cache namespace."""
    value = os.environ.get(ENV_MAX_MB, "").strip()
    try:
        megabytes = float(value) if value else DEFAULT_MAX_MB
    except ValueError:
        raise ValueError(f"{ENV_MAX_MB} must be a number of megabytes, got {value!r}") from None
    if megabytes < 0:
        raise ValueError(f"{ENV_MAX_MB} must not be negative, got {value!r}")
    return int(megabytes * 1024 * 1024)


# --------------------------------------------------------------------------- keys


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses as dicts, tuples and sets as lists, paths as strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot key a cache on a {type(value).__name__}: use plain values, tuples or dataclasses")


def canonical_json(*parts: Any) -> str:
    """The parts as one JSON text that is the same for equal values (sorted keys, no spaces)."""
    return json.dumps(_plain(list(parts)), sort_keys=True, separators=(",", ":"), allow_nan=True)


def key(*parts: Any) -> str:
    """sha256 (hex) of the parts' canonical JSON: equal values give equal keys across processes."""
    return hashlib.sha256(canonical_json(*parts).encode()).hexdigest()


def data_fingerprint(data) -> str:
    """The identity of a dataset split: name, split, case ids, every input byte, labels, library version.

    Every cache keyed on data uses this one, so two caches never disagree about
    whether data changed. ``data``: a ``deq_core.data.MultimodalDataset``.
    """
    from deq_core import __version__

    digest = hashlib.sha256(canonical_json(data.name, data.split, len(data), __version__).encode())
    for x in (*data.inputs, data.labels):
        array = x.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype.str}{array.shape}".encode())  # same bytes, another shape: other data
        digest.update(array.tobytes())
    digest.update("\n".join(data.ids).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- on disk


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, then rename it over ``path``.

    A reader (another process, another thread) sees the old entry or the whole new
    one, never half a file; if anything fails the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(staging, path)
    except BaseException:
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        raise


def _touch(path: Path) -> None:
    """Stamp ``path`` as used now, to the nanosecond.

    The kernel's own stamp on a write is coarse (a few ms on many filesystems), so
    entries written in quick succession would tie and the eviction order would be a guess.
    """
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class DiskCache:
    """Entries of one namespace in ``root/namespace``: ``<key>.json`` or ``<key>.npz`` files.

    Bounded: after each put, the least recently used entries (by modification time,
    which a read refreshes) are removed until the namespace holds at most ``max_bytes``.
    An entry that cannot be read is a miss and is removed, so it is computed again.
    """

    def __init__(self, namespace: str, root: str | Path | None = None, max_bytes: int | None = None):
        if not namespace or Path(namespace).name != namespace or namespace.startswith("."):
            raise ValueError(f"a cache namespace is one plain folder name, got {namespace!r}")
        self._setup(namespace, Path(root if root is not None else cache_root()).expanduser() / namespace, max_bytes)

    @classmethod
    def at(cls, folder: str | Path, max_bytes: int | None = None) -> DiskCache:
        """A cache in exactly ``folder`` (a CLI's ``--cache-dir``), which then belongs to the cache:
        its ``.json`` and ``.npz`` files are entries, evicted like any other."""
        folder = Path(folder).expanduser()
        store = cls.__new__(cls)
        store._setup(folder.name or str(folder), folder, max_bytes)
        return store

    def _setup(self, namespace: str, folder: Path, max_bytes: int | None) -> None:
        self.namespace = namespace
        self.folder = folder
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self._lock = threading.Lock()  # one process's puts evict one at a time

    def __repr__(self) -> str:
        return f"DiskCache({str(self.folder)!r}, max_bytes={self.max_bytes})"

    def _path(self, entry: str, suffix: str) -> Path:
        if not entry or Path(entry).name != entry or entry.startswith("."):
            raise ValueError(f"a cache key is one plain file name, got {entry!r}")
        return self.folder / f"{entry}{suffix}"

    # ---- JSON

    def get_json(self, entry: str) -> Any | None:
        """The stored value, or None when absent or unreadable."""
        return self._read(self._path(entry, _JSON), lambda f: json.loads(f.read().decode()))

    def put_json(self, entry: str, value: Any) -> Path:
        """Store a JSON-ready value (NaN allowed, as ``json`` writes it)."""
        text = json.dumps(value).encode()
        return self._write(self._path(entry, _JSON), lambda out: out.write(text))

    # ---- arrays

    def get_arrays(self, entry: str) -> dict[str, np.ndarray] | None:
        """The stored arrays by name, or None when absent or unreadable (no pickled objects)."""

        def read(f) -> dict[str, np.ndarray]:
            with np.load(f, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}

        return self._read(self._path(entry, _ARRAYS), read)

    def put_arrays(self, entry: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Store named arrays as one ``.npz``; object arrays are refused (they would need pickle)."""
        plain = {name: np.asarray(a) for name, a in arrays.items()}
        for name, a in plain.items():
            if a.dtype.hasobject:
                raise TypeError(f"array {name!r} holds Python objects; store strings as a str dtype instead")
        return self._write(self._path(entry, _ARRAYS), lambda out: np.savez(out, **plain))

    # ---- shared

    def contains(self, entry: str) -> bool:
        """Whether an entry of either kind is stored (not whether it is readable)."""
        return any(self._path(entry, suffix).is_file() for suffix in (_JSON, _ARRAYS))

    def _read(self, path: Path, parse: Callable[[Any], T]) -> T | None:
        try:
            with open(path, "rb") as f:
                value = parse(f)
        except FileNotFoundError:
            return None
        except Exception:  # truncated, corrupt, wrong format: recompute rather than fail
            self._discard(path)
            return None
        try:
            _touch(path)  # a read makes it recently used
        except OSError:
            pass  # evicted meanwhile by another process: the value read is still good
        return value

    def _write(self, path: Path, write: Callable[[Any], None]) -> Path:
        _atomic_write(path, write)
        _touch(path)
        self.evict()
        return path

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def entries(self) -> list[tuple[Path, float, int]]:
        """(path, last use, bytes) of every stored entry, least recently used first."""
        found = []
        try:
            candidates = list(self.folder.iterdir())
        except FileNotFoundError:
            return []
        for path in candidates:
            if path.name.startswith(".") or path.suffix not in (_JSON, _ARRAYS):
                continue  # another writer's staging file, or not ours
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((path, stat.st_mtime_ns, stat.st_size))
        return sorted(found, key=lambda item: (item[1], item[0].name))

    def size(self) -> int:
        """Bytes stored in this namespace."""
        return sum(size for _, _, size in self.entries())

    def evict(self) -> list[Path]:
        """Remove least recently used entries until at most ``max_bytes`` remain; the removed paths."""
        with self._lock:
            entries = self.entries()
            total = sum(size for _, _, size in entries)
            removed = []
            for path, _, size in entries:
                if total <= self.max_bytes:
                    break
                self._discard(path)
                removed.append(path)
                total -= size
            return removed

    def clear(self) -> None:
        """Remove every entry of this namespace."""
        for path, _, _ in self.entries():
            self._discard(path)


# --------------------------------------------------------------------------- in memory


class MemoryCache:
    """A thread-safe least-recently-used map that computes each key once.

    ``get_or_compute(key, fn)`` runs ``fn()`` outside the registry lock, under a lock of
    its own key: two threads asking for the same key wait for one computation, threads
    asking for other keys are not held up. A computation that raises stores nothing.
    """

    def __init__(self, max_entries: int = 128):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, threading.Lock] = {}

    def get_or_compute(self, entry: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if entry in self._values:
                self._values.move_to_end(entry)
                return self._values[entry]
            key_lock = self._computing.setdefault(entry, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have finished it while this one waited
                if entry in self._values:
                    self._values.move_to_end(entry)
                    return self._values[entry]
            try:
                value = compute()
                with self._lock:
                    self._values[entry] = value
                    self._values.move_to_end(entry)
                    while len(self._values) > self.max_entries:
                        self._values.popitem(last=False)
                return value
            finally:
                with self._lock:
                    if self._computing.get(entry) is key_lock:
                        del self._computing[entry]

    def get(self, entry: Hashable, default: Any = None) -> Any:
        with self._lock:
            if entry not in self._values:
                return default
            self._values.move_to_end(entry)
            return self._values[entry]

    def __contains__(self, entry: Hashable) -> bool:
        with self._lock:
            return entry in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
