"""Shared by the audit tests: a deployment key outside the repository, a log, and issuing a report into it."""

from __future__ import annotations

import pytest

from deq_core.audit import AuditLog, issue, record_sha256


@pytest.fixture(autouse=True)
def key_dir(tmp_path_factory, monkeypatch):
    """Every test signs with a key of its own session folder, never one under ~/.config."""
    folder = tmp_path_factory.getbasetemp() / "deq-lens-keys"
    monkeypatch.setenv("DEQ_LENS_KEY_DIR", str(folder))
    return folder


@pytest.fixture
def audit(tmp_path, key_dir) -> AuditLog:
    return AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}")


def issued(report, log: AuditLog, folder=None):
    """``report`` as handed out: logged, signed, written into ``folder`` if given."""
    return issue(report, log, folder)


def resealed(record: dict) -> dict:
    """``record`` edited, with its signature dropped and its own hash recomputed: a forgery consistent in itself."""
    record.pop("signature", None)
    record["report_sha256"] = record_sha256(record)
    return record
