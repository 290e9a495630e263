"""A tamper-evident, append-only audit log of decision reports, in a real database.

SQLite by default (a file); any SQLAlchemy URL works, PostgreSQL included
(``postgresql+psycopg://...``, tested in CI). Each row
carries the SHA-256 of the previous row's hash and of its own content, so a
removed or edited row breaks the chain, and a head table records how many rows
there should be, so removing the newest rows is caught too. On SQLite and
PostgreSQL, triggers refuse UPDATE and DELETE outright, and let the head only move
forward one entry at a time. Every append also writes a checkpoint of the head
(count and hash) signed with the deployment key (``deq_core.audit.signing``);
reports and exports carry a copy, so a log cut back below any checkpoint someone
kept is caught, even if the database was rewritten consistently (``verify``'s
``checkpoints``). What is and is not detected: ``docs/audit.md``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from deq_core.audit.hashing import canonical_json
from deq_core.audit.signing import Checkpoint, SigningKey, load_deployment_key

REPO_ROOT = Path(__file__).resolve().parents[2]  # deq_core/audit/log.py -> the checkout
DEFAULT_DATABASE = REPO_ROOT / ".cache" / "audit.sqlite"
GENESIS = "0" * 64

_metadata = MetaData()
_entries = Table(
    "audit_entries",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(40), nullable=False),
    Column("source", String(40), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_checksum", String(64), nullable=False),
    Column("case_id", String(200), nullable=False),
    Column("prediction", String(200), nullable=False),
    Column("report_sha256", String(64), nullable=False),
    Column("report_path", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)
_head = Table(
    "audit_head",
    _metadata,
    Column("name", String(20), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
)
_checkpoints = Table(
    "audit_checkpoints",
    _metadata,
    Column("count", Integer, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)
# The database itself refuses to change or remove a recorded row or checkpoint, and
# lets the head move only forward, one entry at a time, onto an entry that exists.
_HEAD_MOVE_IS_BAD = ("NEW.name <> OLD.name OR NEW.count <> OLD.count + 1 OR NEW.last_hash IS DISTINCT FROM "
                     "(SELECT entry_hash FROM audit_entries WHERE id = NEW.count)")  # fmt: skip
_HEAD_INSERT_IS_BAD = ("(SELECT COUNT(*) FROM audit_head) > 0 OR NEW.count <> 1 OR NEW.last_hash IS DISTINCT FROM "
                       "(SELECT entry_hash FROM audit_entries WHERE id = 1)")  # fmt: skip
_APPEND_ONLY = {
    "sqlite": (
        *(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} BEFORE {action} ON {table} "
          "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
          for table in ("audit_entries", "audit_checkpoints") for action in ("UPDATE", "DELETE")),
        "CREATE TRIGGER IF NOT EXISTS audit_head_no_delete BEFORE DELETE ON audit_head "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_head_forward_only BEFORE UPDATE ON audit_head "
        f"WHEN {_HEAD_MOVE_IS_BAD.replace('IS DISTINCT FROM', 'IS NOT')} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: the head moves one entry forward'); END",
        "CREATE TRIGGER IF NOT EXISTS audit_head_one_insert BEFORE INSERT ON audit_head "
        f"WHEN {_HEAD_INSERT_IS_BAD.replace('IS DISTINCT FROM', 'IS NOT')} "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: one head, starting at entry 1'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
        "CREATE OR REPLACE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()",
        "CREATE OR REPLACE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints "
        "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()",
        "CREATE OR REPLACE TRIGGER audit_head_no_delete BEFORE DELETE OR TRUNCATE ON audit_head "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()",
        "CREATE OR REPLACE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()",
        "CREATE OR REPLACE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN IF (TG_OP = 'UPDATE' AND ({_HEAD_MOVE_IS_BAD})) OR (TG_OP = 'INSERT' AND ({_HEAD_INSERT_IS_BAD})) "
        "THEN RAISE EXCEPTION 'the audit log is append-only: the head moves one entry forward'; END IF; "
        "RETURN NEW; END $$",
        "CREATE OR REPLACE TRIGGER audit_head_forward_only BEFORE INSERT OR UPDATE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()",
    ),
}
_FIELDS = ("id", "created_at", "source", "model_name", "model_checksum", "case_id", "prediction",
           "report_sha256", "report_path", "summary", "previous_hash")  # fmt: skip


@dataclass(frozen=True)
class AuditEntry:
    """One recorded report. ``summary`` is a small JSON object (probabilities, flags)."""

    id: int
    created_at: str
    source: str
    model_name: str
    model_checksum: str
    case_id: str
    prediction: str
    report_sha256: str
    report_path: str
    summary: str
    previous_hash: str
    entry_hash: str
    checkpoint: Checkpoint | None = None  # the signed head just after this entry (set by ``append``)


@dataclass(frozen=True)
class LogVerification:
    """What ``AuditLog.verify`` found; ``checkpoints`` counts the external checkpoints compared."""

    ok: bool
    entries: int
    problems: tuple[str, ...]
    checkpoints: int = 0


def entry_hash(fields: dict) -> str:
    return hashlib.sha256(canonical_json({k: fields[k] for k in _FIELDS}).encode()).hexdigest()


def default_url() -> str:
    return os.environ.get("DEQ_LENS_AUDIT_DB") or f"sqlite:///{DEFAULT_DATABASE}"


class AuditLog:
    """Append-only log; one instance may be shared by threads (app sessions)."""

    _lock = threading.Lock()

    def __init__(self, url: str | None = None, signing_key: SigningKey | None = None):
        """``signing_key``: what signs the checkpoints; None: the deployment key, loaded (or created) on first append."""
        self.url = url or default_url()
        self._key = signing_key
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(self.url, connect_args={"timeout": 30} if self._sqlite else {})
        if self._sqlite:
            _serialise_sqlite_writers(self.engine)
        _metadata.create_all(self.engine)
        with self.engine.begin() as connection:
            for statement in _APPEND_ONLY.get(self.engine.dialect.name, ()):
                connection.execute(text(statement))

    @property
    def _sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def signing_key(self) -> SigningKey:
        if self._key is None:
            self._key = load_deployment_key()
        return self._key

    def append(
        self,
        *,
        model_name: str,
        model_checksum: str,
        case_id: str,
        prediction: str,
        report_sha256: str,
        report_path: str = "",
        summary: dict | None = None,
        source: str = "cli",
    ) -> AuditEntry:
        """Record one report; the chain link, the head and its signed checkpoint are written in one transaction."""
        (entry,) = self.append_many([dict(model_name=model_name, model_checksum=model_checksum, case_id=case_id,
                                          prediction=prediction, report_sha256=report_sha256, report_path=report_path,
                                          summary=summary, source=source)])  # fmt: skip
        return entry

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Record several reports in order (each mapping holds ``append``'s arguments), in ONE transaction: all
        of them or none, chained one after the other, with one signed checkpoint of the head after the last.

        A batch audit logs a chunk of cases this way: one commit and one signature per chunk instead of per
        case, and a kill leaves the chunk wholly in the log or wholly out. Only the last entry carries the
        checkpoint (``verify`` needs one at the end of the log, not one per entry).
        """
        if not records:
            return []
        key = self.signing_key
        entries = []
        with self._lock, self.engine.begin() as connection:
            if not self._sqlite:  # other processes may append too: one writer at a time reads the head
                connection.execute(text("LOCK TABLE audit_head IN SHARE ROW EXCLUSIVE MODE"))
            head = connection.execute(select(_head).where(_head.c.name == "head")).first()
            count, previous = (head.count, head.last_hash) if head else (0, GENESIS)
            for record in records:
                fields = {
                    "id": count + 1,
                    "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                    "source": record.get("source", "cli"),
                    "model_name": record["model_name"],
                    "model_checksum": record["model_checksum"],
                    "case_id": record["case_id"],
                    "prediction": record["prediction"],
                    "report_sha256": record["report_sha256"],
                    "report_path": str(record.get("report_path", "")),
                    "summary": canonical_json(record.get("summary") or {}),
                    "previous_hash": previous,
                }
                fields["entry_hash"] = entry_hash(fields)
                entries.append(fields)
                count, previous = fields["id"], fields["entry_hash"]
            # Two statements for the whole chunk, each run once per row by the driver (executemany):
            # the entries, then the head moving forward onto each of them in turn, one entry at a
            # time as the database's trigger demands (each target entry exists by then).
            connection.execute(insert(_entries), entries)
            moves = [{"moved_count": e["id"], "moved_hash": e["entry_hash"]} for e in entries]
            if not head:
                first = moves.pop(0)
                connection.execute(insert(_head).values(name="head", count=first["moved_count"],
                                                        last_hash=first["moved_hash"]))  # fmt: skip
            if moves:
                connection.execute(update(_head).where(_head.c.name == "head").values(
                    count=bindparam("moved_count"), last_hash=bindparam("moved_hash")), moves)  # fmt: skip
            checkpoint = Checkpoint.sign(key, count, previous)
            connection.execute(insert(_checkpoints).values(count=checkpoint.count, head_hash=checkpoint.head_hash,
                                                           created_at=checkpoint.created_at,
                                                           public_key=checkpoint.public_key,
                                                           signature=checkpoint.signature))  # fmt: skip
        last = len(entries) - 1
        return [AuditEntry(**fields, checkpoint=checkpoint if i == last else None) for i, fields in enumerate(entries)]

    def entry(self, entry_id: int) -> AuditEntry | None:
        """The entry with this id, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(_entries).where(_entries.c.id == entry_id)).first()
        return None if row is None else AuditEntry(**row._mapping)

    def checkpoints(self) -> list[Checkpoint]:
        """The signed checkpoints the log holds, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(_checkpoints).order_by(_checkpoints.c.count))
            return [Checkpoint(**row._mapping) for row in rows]

    def checkpoint(self, count: int | None = None) -> Checkpoint | None:
        """The checkpoint at ``count`` entries (None: the newest), as the log holds it."""
        query = select(_checkpoints).order_by(_checkpoints.c.count.desc()).limit(1)
        if count is not None:
            query = select(_checkpoints).where(_checkpoints.c.count == count)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else Checkpoint(**row._mapping)

    def public_keys(self) -> set[str]:
        """The public keys that signed this log's checkpoints (the deployment keys it knows)."""
        with self.engine.connect() as connection:
            return set(connection.execute(select(_checkpoints.c.public_key).distinct()).scalars())

    def entries(self, model_name: str | None = None, case_id: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Recorded entries, newest first, optionally filtered."""
        query = select(_entries).order_by(_entries.c.id.desc())
        if model_name:
            query = query.where(_entries.c.model_name == model_name)
        if case_id:
            query = query.where(_entries.c.case_id.contains(case_id, autoescape=True))  # '%' and '_' are literal
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            return [AuditEntry(**row._mapping) for row in connection.execute(query)]

    def verify(self, checkpoints: Sequence[tuple[str, Checkpoint]] = (), expect_count: int | None = None,
               expect_hash: str | None = None) -> LogVerification:
        """Recompute the chain (every hash, link and id), the head, and the signed checkpoints.

        ``checkpoints``: (where it came from, checkpoint) pairs kept outside the log (in
        reports, exports); each must be signed and must be a state this log passed
        through, so a log cut back below it, or rewritten under it, fails.
        ``expect_count``/``expect_hash``: a head given by hand, checked the same way.
        """
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(select(_entries).order_by(_entries.c.id))]
            head = connection.execute(select(_head).where(_head.c.name == "head")).first()
        problems = _chain_problems(rows)
        last = rows[-1]["id"] if rows else 0
        recorded = head.count if head else 0
        if recorded != last:
            problems.append(f"the log should hold {recorded} entries, its last entry is {last}")
        elif head and head.last_hash != rows[-1]["entry_hash"]:
            problems.append("the newest entry does not match the recorded head of the chain")
        hashes = {row["id"]: row["entry_hash"] for row in rows}
        own = self.checkpoints()
        for checkpoint in own:
            problems += _checkpoint_problems(f"the log's checkpoint {checkpoint.count}", checkpoint, hashes, last)
        if own and own[-1].count < last:
            problems.append(f"entries {own[-1].count + 1}-{last} have no signed checkpoint (written around the log's code)")
        for where, checkpoint in checkpoints:
            problems += _checkpoint_problems(f"checkpoint in {where}", checkpoint, hashes, last)
        if expect_count is not None:
            problems += _expected_head_problems(expect_count, expect_hash, hashes, last)
        return LogVerification(ok=not problems, entries=len(rows), problems=tuple(problems), checkpoints=len(checkpoints))


def _chain_problems(rows: Sequence[dict]) -> list[str]:
    """Missing ids (named exactly, as ranges), broken links and edited rows."""
    problems: list[str] = []
    previous, expected = GENESIS, 1
    for row in rows:
        gap = row["id"] > expected
        if gap:
            problems.append(_missing(expected, row["id"] - 1))
        elif row["id"] < expected:
            problems.append(f"entry {row['id']} appears out of order")
        # After a gap the previous entry is unknown: the gap is the finding, not the link.
        if not gap and row["previous_hash"] != previous:
            problems.append(f"entry {row['id']}: link to the previous entry is broken (a row was removed or edited)")
        if entry_hash(row) != row["entry_hash"]:
            problems.append(f"entry {row['id']}: content does not match its hash (the row was edited)")
        previous, expected = row["entry_hash"], row["id"] + 1
    return problems


def _missing(first: int, last: int) -> str:
    if first == last:
        return f"entry {first} is missing"
    return f"entries {first}-{last} are missing ({last - first + 1} rows)"


def _removed(first: int, last: int) -> str:
    return f"entry {first} was removed" if first == last else f"entries {first}-{last} were removed"


def _checkpoint_problems(where: str, checkpoint: Checkpoint, hashes: dict[int, str], last: int) -> list[str]:
    if not checkpoint.valid():
        return [f"{where}: its signature does not verify (the checkpoint was forged or edited)"]
    if checkpoint.count > last:
        return [f"{where}: the log held {checkpoint.count} entries when it was signed, it now ends at entry {last} "
                f"({_removed(last + 1, checkpoint.count)})"]
    if checkpoint.count in hashes and hashes[checkpoint.count] != checkpoint.head_hash:
        return [f"{where}: entry {checkpoint.count} is not the entry that was signed (the log was rewritten)"]
    return []


def _expected_head_problems(count: int, head_hash: str | None, hashes: dict[int, str], last: int) -> list[str]:
    if count > last:
        return [f"expected head: {count} entries, the log ends at entry {last} ({_removed(last + 1, count)})"]
    if head_hash is not None and hashes.get(count) != head_hash:
        return [f"expected head: entry {count} does not hash to {head_hash[:16]}... (the log was rewritten)"]
    return []


def _serialise_sqlite_writers(engine: Engine) -> None:
    # pysqlite's default transaction handling starts transactions lazily, so two
    # writers can read the same head; BEGIN IMMEDIATE takes the write lock first.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
