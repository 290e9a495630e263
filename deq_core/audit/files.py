"""Reports on disk: safe folder names for case ids, checkpoints read from files, and the files against the log.

Kept apart from the log (which knows nothing of files) and the CLI (which only
prints): the kill test and the app read the same answers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deq_core.audit.hashing import record_sha256
from deq_core.audit.log import AuditLog
from deq_core.audit.report import read_claim
from deq_core.audit.signing import Checkpoint

_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
MAX_NAME = 120  # bytes; file systems allow 255, and the escaped form of a long id can triple


def safe_name(case_id: str) -> str:
    """A folder name for ``case_id`` that is one plain name, and another id's never.

    Lower-case letters, digits, ``-``, ``_`` and ``.`` are kept (``.`` not first or
    last, so no ``.``, ``..`` or hidden name); every other byte of the UTF-8 id,
    ``%`` and upper case included (case-insensitive file systems), becomes ``%XX``.
    The mapping is injective; a name that would be too long keeps its start and
    gains the id's SHA-256, so collisions stay out of reach.
    """
    if not case_id:
        raise ValueError("a case id must not be empty")
    escaped = []
    last = len(case_id) - 1
    for i, char in enumerate(case_id):
        if char in _KEPT and not (char == "." and i in (0, last)):
            escaped.append(char)
        else:
            escaped.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    name = "".join(escaped)
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(case_id.encode("utf-8")).hexdigest()
        name = f"{name[:MAX_NAME - 66].rstrip('.')}%~{digest}"
    return name


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The signed checkpoint in ``path``: an exported checkpoint, or the one a signed ``report.json`` carries."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({type(error).__name__})") from error
    if isinstance(data, dict) and "report_sha256" in data:
        signature = data.get("signature")
        if not isinstance(signature, dict):
            raise ValueError(f"{path}: a report without a signature carries no checkpoint")
        data = signature.get("checkpoint")
    try:
        return Checkpoint.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def check_files(log: AuditLog) -> tuple[list[str], list[str]]:
    """(problems, notes): every entry's report file against the entry, newest first.

    A file that is there must hold the logged report (same content hash). A missing
    file is "not written" (a note) when the claim its run left is still beside
    where it should be, naming the same report: the run was stopped after logging
    it. Missing without a claim: removed afterwards (a problem). Entries with no
    path (the app's downloads, in-memory reports) have no file to check.
    """
    problems, notes = [], []
    for entry in log.entries():
        if not entry.report_path:
            continue
        path = Path(entry.report_path)
        if not path.is_file():
            claim = read_claim(path.parent)
            if claim is not None and claim.get("report_sha256") == entry.report_sha256:
                notes.append(f"entry {entry.id}: {path} was not written (its run stopped after logging it)")
            else:
                problems.append(f"entry {entry.id}: {path} is missing (removed after it was written)")
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            content = record_sha256(record) if isinstance(record, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            content = None
        if content != entry.report_sha256 or record.get("report_sha256") != entry.report_sha256:
            problems.append(f"entry {entry.id}: {path} is not the report the log recorded")
    return problems, notes
