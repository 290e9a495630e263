"""The deployment's signing key (Ed25519) and signed checkpoints of the audit log's head.

A report's own SHA-256 proves nothing about who wrote it: anyone can recompute it.
Reports and the log's checkpoints are therefore signed with a private key that
lives OUTSIDE the repository (``$DEQ_LENS_KEY_DIR``, else ``~/.config/deq-lens/``,
file mode 0600), created on first use. Only the public half travels: in every
checkpoint row of the log and in every report. Verifying never needs the private key.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deq_core.audit.hashing import canonical_json

KEY_DIR_ENV = "DEQ_LENS_KEY_DIR"
KEY_FILE = "audit-signing-key.pem"
ALGORITHM = "ed25519"
CHECKPOINT_FORMAT = "deq-fusion-lens/audit-checkpoint"
REPORT_SIGNATURE_FORMAT = "deq-fusion-lens/report-signature"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class SigningKeyError(ValueError):
    """The signing key cannot be used (inside the repository, readable by others, unreadable)."""


def key_dir() -> Path:
    """Where the deployment key lives: ``$DEQ_LENS_KEY_DIR``, else ``~/.config/deq-lens``."""
    return Path(os.environ.get(KEY_DIR_ENV) or Path.home() / ".config" / "deq-lens").expanduser()


def _outside_repository(folder: Path) -> None:
    resolved = folder.resolve()
    if resolved == _REPO_ROOT or _REPO_ROOT in resolved.parents:
        raise SigningKeyError(f"the signing key folder {folder} is inside the repository {_REPO_ROOT}: a key there would be "
                        f"committed or shipped; set ${KEY_DIR_ENV} to a folder outside it")  # fmt: skip


@dataclass(frozen=True)
class SigningKey:
    """The deployment's private key; ``public_key`` is its raw public half in hex (what reports carry)."""

    private: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()

    def sign(self, payload: Mapping[str, Any]) -> str:
        """Hex Ed25519 signature of ``payload``'s canonical JSON."""
        return self.private.sign(canonical_json(payload).encode()).hex()

    @classmethod
    def generate(cls) -> "SigningKey":
        """A fresh key in memory (tests, and the forger of the tests)."""
        return cls(Ed25519PrivateKey.generate())


def signature_valid(public_key: str, payload: Mapping[str, Any], signature: str) -> bool:
    """Whether ``signature`` (hex) is ``public_key``'s (hex, raw) signature of ``payload``'s canonical JSON."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))
        key.verify(bytes.fromhex(signature), canonical_json(payload).encode())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def load_deployment_key(folder: Path | None = None) -> SigningKey:
    """The deployment key, created (0600, in a 0700 folder) on first use; never inside the repository.

    Two processes creating it at once agree: the key is written under a temporary
    name and hard-linked to its final name, which fails for the second writer, who
    then reads the first's complete file.
    """
    folder = folder or key_dir()
    _outside_repository(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / KEY_FILE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        handle, staging = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=folder)  # mode 0600
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(staging, path)
            except FileExistsError:
                pass  # another process won: use its key
        finally:
            os.unlink(staging)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(f"the signing key {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise SigningKeyError(f"the signing key {path} cannot be read: {error}") from error
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"the signing key {path} is not an Ed25519 key")
    return SigningKey(private)


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the log held ``count`` entries, the newest hashing to ``head_hash``".

    Every append writes one into the log; reports and exports carry a copy, so a log
    cut back below a checkpoint someone kept is caught (see ``AuditLog.verify``).
    """

    count: int
    head_hash: str
    created_at: str
    public_key: str
    signature: str

    def payload(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "count": self.count, "head_hash": self.head_hash,
                "created_at": self.created_at, "public_key": self.public_key}  # fmt: skip

    def valid(self) -> bool:
        return signature_valid(self.public_key, self.payload(), self.signature)

    def to_dict(self) -> dict:
        return {**self.payload(), "algorithm": ALGORITHM, "signature": self.signature}

    @classmethod
    def from_dict(cls, data: Any) -> "Checkpoint":
        """Read one back; ValueError when it is not a checkpoint."""
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not an audit checkpoint (format {CHECKPOINT_FORMAT!r})")
        try:
            count, head, created, key, sig = (data[k] for k in ("count", "head_hash", "created_at", "public_key", "signature"))
        except KeyError as error:
            raise ValueError(f"audit checkpoint field {error.args[0]!r} is missing") from error
        if not isinstance(count, int) or isinstance(count, bool) or not all(isinstance(v, str) for v in (head, created, key, sig)):
            raise ValueError("audit checkpoint fields have the wrong types")
        return cls(count, head, created, key, sig)

    @classmethod
    def sign(cls, key: SigningKey, count: int, head_hash: str) -> "Checkpoint":
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        unsigned = cls(count, head_hash, created, key.public_key, "")
        return cls(count, head_hash, created, key.public_key, key.sign(unsigned.payload()))


def report_signature_payload(report_sha256: str, checkpoint: Checkpoint) -> dict:
    """What a report's signature covers: the report's own hash and the log's head just after it was recorded."""
    return {"format": REPORT_SIGNATURE_FORMAT, "report_sha256": report_sha256, "checkpoint": checkpoint.to_dict()}
