"""PROVISIONAL (replaced by the cache module being written in parallel): in-memory LRU and the data fingerprint."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class MemoryCache:
    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict = {}

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = compute()
            with self._lock:
                self._items[key] = value
                self._key_locks.pop(key, None)
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def data_fingerprint(data) -> str:
    import deq_core

    h = hashlib.sha256(f"{data.name}|{data.split}|{len(data)}|{deq_core.__version__}".encode())
    for x in (*data.inputs, data.labels):
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update("\n".join(data.ids).encode())
    return h.hexdigest()[:24]
