"""Verification trusts nothing a report says of itself: forgeries with a recomputed hash fail, issued reports pass."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest
import torch

from audit_helpers import audit, issued, key_dir  # noqa: F401  (fixtures)
from conftest import tiny_inputs, tiny_model
from deq_core import save_model
from deq_core.audit import AuditLog, ReportSettings, SigningKey, build_report, main, record_sha256, verify_report
from deq_core.audit.record import ReportRecord
from deq_core.audit.signing import KEY_FILE, SigningKeyError, load_deployment_key
from deq_core.engine.text import tokenize

SETTINGS = ReportSettings(n_steps=8)
TEXT = "bearing noise heard"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report of a case whose note tokens are its text's, as an upload has them."""
    torch.set_num_threads(1)
    model = tiny_model("deq").eval()
    folder = save_model(model, tmp_path_factory.mktemp("issue") / "tiny-deq")
    case = list(x[:1] for x in tiny_inputs())
    note = model.config.modalities[2]
    case[2] = torch.tensor([tokenize(TEXT, note.vocabulary, note.shape[0])], dtype=torch.int64)
    report = build_report(model, folder, case, "upload-0", texts={"note": TEXT}, settings=SETTINGS,
                          source={"upload": True})  # fmt: skip
    return model, folder, report


def forge(record: dict, edit) -> dict:
    forged = copy.deepcopy(record)
    edit(forged)
    forged["report_sha256"] = record_sha256(forged)  # anyone can recompute it
    return forged


def set_tolerances_and_probability(r):
    r["tolerances"] = {"probability": 1.0, "shapley": 1.0, "feature_score": 1.0}
    r["prediction"]["probabilities"][r["prediction"]["class"]] = 0.99


def set_label(r):
    r["prediction"]["label"] = next(c for c in r["prediction"]["probabilities"] if c != r["prediction"]["class"])


def set_iterations(r):
    r["reliability"]["iterations"] += 1


def set_created_at(r):
    r["created_at"] = "2020-01-01T00:00:00+00:00"


def set_note_text(r):
    r["inputs"]["texts"]["note"] = "all fine"


FORGERIES = {
    "tolerances 1.0, probability 0.99": set_tolerances_and_probability,
    "label": set_label,
    "reliability.iterations": set_iterations,
    "created_at": set_created_at,
    "note text of an upload": set_note_text,
}
# What a re-run recomputes, so that even the key's holder, signing and logging the
# forgery as a report of its own, is caught (created_at and the label of a case that is
# no dataset row are not recomputable: they rest on the signature and the log).
RECOMPUTED = {
    "tolerances 1.0, probability 0.99": ("tolerances:", "P("),
    "reliability.iterations": ("reliability.iterations",),
    "note text of an upload": ("inputs.texts.note",),
}


def test_a_genuine_issued_report_verifies_and_the_key_lives_outside_the_repository(built, audit, key_dir, tmp_path):
    model, folder, report = built
    signed = issued(report, audit, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "report.json").read_text())
    assert record["signature"]["checkpoint"]["count"] == 1 == audit.entries()[0].id
    assert record["signature"]["public_key"] in audit.public_keys()
    assert record_sha256(record) == record["report_sha256"] == report.sha256 == signed.sha256  # the signature is outside the hash
    result = verify_report(record, log=audit)
    assert result.ok, result.problems
    assert "signature and audit log entry" in result.checked
    key_file = key_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_deployment_key().public_key == record["signature"]["public_key"]  # created once, then reused


@pytest.mark.parametrize("name", list(FORGERIES))
def test_each_forgery_with_a_recomputed_hash_fails(built, audit, name):
    model, folder, report = built
    genuine = issued(report, audit).record
    assert verify_report(genuine, log=audit).ok
    forged = forge(genuine, FORGERIES[name])
    result = verify_report(forged, log=audit)
    assert not result.ok
    assert any(p.startswith("signature: it does not verify") for p in result.problems), result.problems


@pytest.mark.parametrize("name", list(RECOMPUTED))
def test_forgeries_the_key_holder_signs_and_logs_are_still_caught_by_the_rerun(built, audit, name):
    """The signature proves who issued a report, not that it is right: the re-run does."""
    model, folder, report = built
    record = forge(report.record, FORGERIES[name])
    forged = type(report)(ReportRecord.from_dict(record), report.html, report.explanation)
    result = verify_report(issued(forged, audit).record, log=audit)
    assert not result.ok
    for start in RECOMPUTED[name]:
        assert any(start in p for p in result.problems), (start, result.problems)
    assert not any(p.startswith("signature") for p in result.problems)


def test_a_report_signed_by_another_key_fails(built, audit, tmp_path):
    model, folder, report = built
    issued(report, audit)  # the deployment's log knows its own key
    elsewhere = AuditLog(f"sqlite:///{tmp_path / 'forger.sqlite'}", signing_key=SigningKey.generate())
    foreign = issued(report, elsewhere).record
    assert verify_report(foreign, log=elsewhere).ok  # valid for the forger's own log...
    result = verify_report(foreign, log=audit)  # ...not for the deployment's
    assert not result.ok and any("is not a key of the audit log" in p for p in result.problems)


def test_a_report_not_in_the_log_fails(built, audit, tmp_path):
    model, folder, report = built
    unsigned = verify_report(report.record, log=audit)
    assert not unsigned.ok and unsigned.problems[0].startswith("signature: the report is not signed")
    signed = issued(report, audit).record
    other = AuditLog(f"sqlite:///{tmp_path / 'other.sqlite'}")  # same key, another log that never recorded it
    result = verify_report(signed, log=other)
    assert not result.ok and any("has no entry 1" in p or "is not a key" in p for p in result.problems)


def test_verify_through_the_cli_takes_the_log(built, audit, tmp_path, capsys):
    model, folder, report = built
    issued(report, audit, tmp_path / "out")
    path = str(tmp_path / "out" / "report.json")
    assert main(["verify", path, "--db", audit.url]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", path, "--db", f"sqlite:///{tmp_path / 'empty.sqlite'}"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_the_key_is_refused_inside_the_repository_or_readable_by_others(tmp_path, monkeypatch):
    from deq_core.audit.log import REPO_ROOT

    with pytest.raises(SigningKeyError, match="inside the repository"):
        load_deployment_key(REPO_ROOT / ".cache" / "keys")
    load_deployment_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_deployment_key(tmp_path)


def test_verify_log_through_the_cli_catches_a_truncation_against_a_kept_report_or_export(built, audit, tmp_path, capsys):
    import sqlite3

    model, folder, report = built
    for i in range(3):
        issued(report, audit, tmp_path / f"r{i}")
    assert main(["checkpoint", "--db", audit.url, "--out", str(tmp_path / "head.json")]) == 0
    connection = sqlite3.connect(audit.url.removeprefix("sqlite:///"))
    for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        connection.execute(f"DROP TRIGGER {name}")
    connection.execute("DELETE FROM audit_entries WHERE id = 3")
    connection.execute("DELETE FROM audit_checkpoints WHERE count = 3")
    connection.execute("UPDATE audit_head SET count = 2, last_hash = (SELECT entry_hash FROM audit_entries WHERE id = 2)")
    connection.commit()
    connection.close()
    capsys.readouterr()
    assert main(["verify-log", "--db", audit.url]) == 0  # consistent in itself
    for kept in (str(tmp_path / "r2" / "report.json"), str(tmp_path / "head.json")):
        assert main(["verify-log", "--db", audit.url, "--checkpoint", kept]) == 1
        assert "(entry 3 was removed)" in capsys.readouterr().out
    assert main(["verify-log", "--db", audit.url, "--expect-count", "3"]) == 1
    assert "entries 3-3" not in capsys.readouterr().out
