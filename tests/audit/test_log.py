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
        connection.execute(text("DROP TABLE IF EXISTS audit_entries, audit_head, audit_checkpoints CASCADE"))
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


def lift_all_protection(log):
    """A direct connection with every trigger gone: the attacker of the issue, who also moves the head back."""
    if log.url.startswith("sqlite"):
        connection = sqlite3.connect(log.url.removeprefix("sqlite:///"))
        for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            connection.execute(f"DROP TRIGGER {name}")
        return connection
    import psycopg

    connection = psycopg.connect(log.url.replace("postgresql+psycopg://", "postgresql://"))
    for table in ("audit_entries", "audit_head", "audit_checkpoints"):
        connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
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


def test_the_head_and_the_checkpoints_are_protected_like_the_entries(log):
    for i in range(3):
        record(log, i)
    for statement in ("UPDATE audit_head SET count = 2", "DELETE FROM audit_head",
                      "UPDATE audit_head SET count = 4, last_hash = 'x'", "UPDATE audit_checkpoints SET count = 9",
                      "DELETE FROM audit_checkpoints WHERE count = 3"):  # fmt: skip
        with pytest.raises(DBAPIError, match="append-only"):
            with log.engine.begin() as connection:
                connection.exec_driver_sql(statement)
    assert log.verify().ok
    record(log, 3)  # the code's own move of the head is still allowed
    assert log.verify().ok and log.verify().entries == 4


def test_the_issues_truncation_is_refused_and_caught_once_forced(log):
    """DELETE the newest row and move the head back: refused; forced, the log's own checkpoint names it."""
    for i in range(5):
        record(log, i)
    with raw(log) as connection:  # the entries' triggers are gone, the head's are not
        connection.execute("DELETE FROM audit_entries WHERE id = 5")
    with pytest.raises(DBAPIError, match="append-only"):
        with log.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE audit_head SET count = 4, last_hash = "
                                       "(SELECT entry_hash FROM audit_entries WHERE id = 4)")  # fmt: skip
    with lift_all_protection(log) as connection:
        connection.execute("UPDATE audit_head SET count = 4, last_hash = (SELECT entry_hash FROM audit_entries WHERE id = 4)")
    result = log.verify()
    assert not result.ok
    assert any("checkpoint 5" in p and "entry 5 was removed" in p for p in result.problems), result.problems


def test_a_truncation_that_also_removes_the_checkpoints_is_caught_by_a_kept_checkpoint(log):
    entries = [record(log, i) for i in range(5)]
    kept = entries[-1].checkpoint  # what a report or an export of entry 5 carries
    with lift_all_protection(log) as connection:
        connection.execute("DELETE FROM audit_entries WHERE id >= 4")
        connection.execute("DELETE FROM audit_checkpoints WHERE count >= 4")
        connection.execute("UPDATE audit_head SET count = 3, last_hash = (SELECT entry_hash FROM audit_entries WHERE id = 3)")
    assert log.verify().ok  # consistent in itself: only a copy kept elsewhere can tell (docs/audit.md)
    result = log.verify([("report-5.json", kept)])
    assert not result.ok and result.problems == (
        "checkpoint in report-5.json: the log held 5 entries when it was signed, it now ends at entry 3 "
        "(entries 4-5 were removed)",)
    by_hand = log.verify(expect_count=5, expect_hash=kept.head_hash)
    assert not by_hand.ok and "entries 4-5 were removed" in by_hand.problems[0]
    assert log.verify(expect_count=3, expect_hash=entries[2].entry_hash).ok


def test_a_forged_or_rewritten_checkpoint_is_named(log):
    entries = [record(log, i) for i in range(3)]
    kept = entries[1].checkpoint
    forged = type(kept)(kept.count, "f" * 64, kept.created_at, kept.public_key, kept.signature)
    assert "signature does not verify" in log.verify([("a.json", forged)]).problems[0]
    assert log.verify([("b.json", kept)]).ok
    with raw(log) as connection:
        connection.execute("UPDATE audit_entries SET entry_hash = 'e' WHERE id = 2")
    assert any("entry 2 is not the entry that was signed" in p for p in log.verify([("b.json", kept)]).problems)


def test_a_middle_deletion_names_exactly_the_rows_missing(log):
    for i in range(6):
        record(log, i)
    with raw(log) as connection:
        connection.execute("DELETE FROM audit_entries WHERE id = 2")
    assert log.verify().problems == ("entry 2 is missing",)
    with lift_all_protection(log) as connection:
        connection.execute("DELETE FROM audit_entries WHERE id IN (4, 5)")
    assert log.verify().problems == ("entry 2 is missing", "entries 4-5 are missing (2 rows)")


def test_append_many_chains_in_one_transaction_with_one_checkpoint(log):
    record(log, 0)
    rows = [dict(model_name="inspection-deq", model_checksum="ab" * 32, case_id=f"case-{i}", prediction="ok",
                 report_sha256=f"{i:064x}", summary={"p": 0.5}, source="batch") for i in range(1, 4)]  # fmt: skip
    entries = log.append_many(rows)
    assert [e.id for e in entries] == [2, 3, 4] and entries[0].previous_hash == log.entry(1).entry_hash
    assert entries[1].previous_hash == entries[0].entry_hash and entries[2].checkpoint.count == 4
    assert entries[0].checkpoint is None and [c.count for c in log.checkpoints()] == [1, 4]
    assert log.verify().ok and log.verify().entries == 4
    assert log.append_many([]) == []
    bad = [rows[0], {**rows[1], "case_id": None}]  # the second row cannot be stored: neither is
    with pytest.raises(Exception):
        log.append_many(bad)
    assert log.verify().entries == 4 and log.verify().ok


def test_append_many_starts_an_empty_log_and_moves_its_head_onto_every_entry(log):
    rows = [dict(model_name="inspection-deq", model_checksum="ab" * 32, case_id=f"case-{i}", prediction="ok",
                 report_sha256=f"{i:064x}", summary={"p": 0.5}, source="batch") for i in range(3)]  # fmt: skip
    assert [e.id for e in log.append_many(rows)] == [1, 2, 3]  # the head's first insert, then two moves
    assert [e.id for e in log.append_many(rows[:1])] == [4]  # a one-row chunk: one move, no insert
    check = log.verify()
    assert check.ok and check.entries == 4 and [c.count for c in log.checkpoints()] == [3, 4]
