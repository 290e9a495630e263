"""The hashes a report and the audit log rest on: canonical JSON, tensors, embedded inputs, the record itself.

Kept apart from the report so the log, the record and verification share one
definition of "the same bytes": a change here changes every hash ever written.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

import numpy as np
import torch


def canonical_json(value) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, UTF-8 safe."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_sha256(value) -> str:
    """SHA-256 of ``value``'s canonical JSON (a corruption spec, say)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's canonical form: ``"<dtype>|<shape>|"`` then its little-endian C-order bytes."""
    array = _canonical_array(tensor)
    digest = hashlib.sha256(f"{array.dtype.name}|{','.join(map(str, array.shape))}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _canonical_array(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def embed_tensor(tensor: torch.Tensor) -> dict:
    """A tensor as JSON: dtype, shape, hash and base64 of the raw bytes (exact, compact)."""
    array = _canonical_array(tensor)
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "sha256": tensor_sha256(tensor),
        "base64": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def unembed_tensor(data: Mapping) -> torch.Tensor:
    """The tensor ``embed_tensor`` wrote; raises ValueError when its bytes do not match its hash."""
    array = np.frombuffer(base64.b64decode(data["base64"]), dtype=np.dtype(data["dtype"]).newbyteorder("<"))
    tensor = torch.from_numpy(array.astype(np.dtype(data["dtype"])).reshape(data["shape"]))
    if tensor_sha256(tensor) != data["sha256"]:
        raise ValueError("embedded bytes do not match their SHA-256")
    return tensor


UNHASHED = ("report_sha256", "signature")  # the hash itself, and the signature over it


def record_sha256(record: Mapping) -> str:
    """The report's own hash: SHA-256 of its canonical JSON without ``report_sha256`` and ``signature``.

    This hash only says the record is whole; anyone can recompute it, so it is no
    proof of origin: the ``signature`` over it is (``deq_core.audit.signing``).
    """
    return json_sha256({k: v for k, v in record.items() if k not in UNHASHED})
