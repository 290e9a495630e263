import os
import sqlite3
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_helpers import key_dir  # noqa: F401  (fixture: checkpoints are signed with a test key)
from deq_core.audit import AuditLog

# .ci/run starts a throwaway PostgreSQL server and names it here; elsewhere those cases skip.
POSTGRES = os.environ.get("DEQ_LENS_TEST_POSTGRES")


def record(log, i, **overrides):
    values = dict(model_name="inspection-deq", model_checksum="ab" * 32, case_id=f"case-{i}",
                  prediction="ok", report_sha256=f"{i:064x}", summary={"p": 0.9})  # fmt: skip
    return log.append(**{**values, **overrides})


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path):
    if request.param == "sqlite":
        return AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set DEQ_LENS_TEST_POSTGRES (bash .ci/run starts one)")
    fresh = AuditLog(POSTGRES)
    with fresh.engine.begin() as connection:  # each test starts from an empty log
        connection.execute(text("DROP TABLE IF EXISTS audit_entries, audit_head CASCADE"))
    return AuditLog(POSTGRES)


def raw(log):
    """A direct connection that lifts the append-only triggers, as an attacker with database rights would."""
    if log.url.startswith("sqlite"):
        connection = sqlite3.connect(log.url.removeprefix("sqlite:///"))
        connection.execute("DROP TRIGGER audit_entries_no_update")
        connection.execute("DROP TRIGGER audit_entries_no_delete")
        return connection
    import psycopg

    connection = psycopg.connect(log.url.replace("postgresql+psycopg://", "postgresql://"))
    connection.execute("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only")
    return connection


def test_appended_entries_chain_and_verify(log):
    entries = [record(log, i) for i in range(5)]
    assert [e.id for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].previous_hash == entries[0].entry_hash
    assert log.verify().ok and log.verify().entries == 5
    assert [e.case_id for e in log.entries()] == [f"case-{i}" for i in reversed(range(5))]
    assert [e.case_id for e in log.entries(case_id="case-3")] == ["case-3"]


def test_updates_and_deletes_are_refused_by_the_database(log):
    record(log, 0)
    with pytest.raises(DBAPIError, match="append-only"):
        with log.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE audit_entries SET prediction = 'crack'")
    with pytest.raises(DBAPIError, match="append-only"):
        with log.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM audit_entries")
    assert log.verify().ok


def test_an_edited_row_is_detected(log):
    for i in range(4):
        record(log, i)
    with raw(log) as connection:
        connection.execute("UPDATE audit_entries SET prediction = 'crack' WHERE id = 2")
    result = log.verify()
    assert not result.ok
    assert any("entry 2: content does not match" in p for p in result.problems)


def test_a_removed_row_is_detected(log):
    for i in range(4):
        record(log, i)
    with raw(log) as connection:
        connection.execute("DELETE FROM audit_entries WHERE id = 2")
    result = log.verify()
    assert not result.ok
    assert any("entry 2 is missing" in p for p in result.problems)


def test_removing_the_newest_rows_is_detected(log):
    for i in range(4):
        record(log, i)
    with raw(log) as connection:
        connection.execute("DELETE FROM audit_entries WHERE id >= 3")
    result = log.verify()
    assert not result.ok
    assert any("should hold 4 entries" in p for p in result.problems)


def test_concurrent_writers_keep_one_unbroken_chain(log):
    def write(worker):
        for i in range(5):
            record(log, worker * 100 + i, source=f"session-{worker}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = log.verify()
    assert result.ok, result.problems
    assert result.entries == 40


def test_a_second_process_view_of_the_same_file_continues_the_chain(log, tmp_path):
    record(log, 0)
    other = AuditLog(log.url)
    record(other, 1)
    assert log.verify().ok and log.verify().entries == 2
