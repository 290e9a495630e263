"""A tamper-evident, append-only audit log of decision reports, in a real database.

SQLite by default (a file); any SQLAlchemy URL works, PostgreSQL included
(``postgresql+psycopg://...``, tested in CI). Each row
carries the SHA-256 of the previous row's hash and of its own content, so a
removed or edited row breaks the chain, and a head table records how many rows
there should be, so removing the newest rows is caught too. On SQLite and
PostgreSQL, triggers refuse UPDATE and DELETE outright. This makes tampering evident, not impossible:
someone who can rewrite the whole database file can rebuild a consistent chain,
which is why reports also cite their own hashes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine

from deq_core.audit.hashing import canonical_json

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
# The database itself refuses to change or remove a recorded row.
_APPEND_ONLY = {
    "sqlite": tuple(
        f"CREATE TRIGGER IF NOT EXISTS audit_entries_no_{action.lower()} BEFORE {action} ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        for action in ("UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
        "CREATE OR REPLACE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()",
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


@dataclass(frozen=True)
class LogVerification:
    ok: bool
    entries: int
    problems: tuple[str, ...]


def entry_hash(fields: dict) -> str:
    return hashlib.sha256(canonical_json({k: fields[k] for k in _FIELDS}).encode()).hexdigest()


def default_url() -> str:
    return os.environ.get("DEQ_LENS_AUDIT_DB") or f"sqlite:///{DEFAULT_DATABASE}"


class AuditLog:
    """Append-only log; one instance may be shared by threads (app sessions)."""

    _lock = threading.Lock()

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
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
        """Record one report; the chain link is read and written in one transaction."""
        with self._lock, self.engine.begin() as connection:
            if not self._sqlite:  # other processes may append too: one writer at a time reads the head
                connection.execute(text("LOCK TABLE audit_head IN SHARE ROW EXCLUSIVE MODE"))
            head = connection.execute(select(_head).where(_head.c.name == "head")).first()
            count, previous = (head.count, head.last_hash) if head else (0, GENESIS)
            fields = {
                "id": count + 1,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "source": source,
                "model_name": model_name,
                "model_checksum": model_checksum,
                "case_id": case_id,
                "prediction": prediction,
                "report_sha256": report_sha256,
                "report_path": str(report_path),
                "summary": canonical_json(summary or {}),
                "previous_hash": previous,
            }
            fields["entry_hash"] = entry_hash(fields)
            connection.execute(insert(_entries).values(**fields))
            if head:
                connection.execute(
                    update(_head).where(_head.c.name == "head").values(count=fields["id"], last_hash=fields["entry_hash"])
                )
            else:
                connection.execute(insert(_head).values(name="head", count=1, last_hash=fields["entry_hash"]))
        return AuditEntry(**fields)

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

    def verify(self) -> LogVerification:
        """Recompute the chain: every hash, every link, the ids and the head count."""
        problems: list[str] = []
        with self.engine.connect() as connection:
            rows = [dict(r._mapping) for r in connection.execute(select(_entries).order_by(_entries.c.id))]
            head = connection.execute(select(_head).where(_head.c.name == "head")).first()
        previous = GENESIS
        for expected_id, row in enumerate(rows, start=1):
            if row["id"] != expected_id:
                problems.append(f"entry {expected_id} is missing (next entry found is {row['id']})")
                expected_id = row["id"]
            if row["previous_hash"] != previous:
                problems.append(f"entry {row['id']}: link to the previous entry is broken (a row was removed or edited)")
            if entry_hash(row) != row["entry_hash"]:
                problems.append(f"entry {row['id']}: content does not match its hash (the row was edited)")
            previous = row["entry_hash"]
        recorded = head.count if head else 0
        if recorded != (rows[-1]["id"] if rows else 0):
            problems.append(f"the log should hold {recorded} entries, its last entry is {rows[-1]['id'] if rows else 0}")
        elif head and head.last_hash != previous:
            problems.append("the newest entry does not match the recorded head of the chain")
        return LogVerification(ok=not problems, entries=len(rows), problems=tuple(problems))


def _serialise_sqlite_writers(engine: Engine) -> None:
    # pysqlite's default transaction handling starts transactions lazily, so two
    # writers can read the same head; BEGIN IMMEDIATE takes the write lock first.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
