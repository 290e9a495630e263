"""Decision reports in the app: prepared on request, downloaded, logged, and re-opened on the Audit log page."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from deq_core.audit import AuditLog, verify_report
from lens_setup import APP, app_environment, apply_environment, restore_environment, tiny_models

TIMEOUT = 300


@pytest.fixture(scope="module")
def audit_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("lens-audit")
    url = f"sqlite:///{cache / 'audit.sqlite'}"
    previous = apply_environment({**app_environment(tiny_models(), cache), "DEQ_LENS_AUDIT_DB": url,
                                  "DEQ_LENS_KEY_DIR": str(cache / "keys")})  # fmt: skip
    yield AuditLog(url)
    restore_environment(previous)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def downloads(at: AppTest) -> dict:
    return {d.proto.id.split("-")[-1]: d for d in at.download_button}


def test_inspect_report_is_prepared_on_request_downloaded_and_logged(audit_env):
    at = open_page("inspect_decision")
    assert not [d for d in at.download_button if "insp_report" in d.proto.id]  # nothing is built until asked
    at.button(key="insp_report_prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    prepared = at.session_state["report_insp_report"]
    record = prepared["report"].record
    assert record["case_id"] == at.session_state["case_id"]
    assert "signature" in record  # issued on preparing: logged and signed
    assert audit_env.entries()[0].report_sha256 == record["report_sha256"]
    result = verify_report(record, log=audit_env)
    assert result.ok, result.problems  # the app's cached explanation is the one verify reproduces
    before = len(audit_env.entries())
    at.download_button(key="insp_report_json").click().run()
    assert not at.exception
    entries = audit_env.entries()
    assert len(entries) == before + 1
    assert entries[0].source == "app" and entries[0].report_sha256 == record["report_sha256"]
    assert audit_env.verify().ok
    assert prepared["pdf"].startswith(b"%PDF")  # the PDF of the same signed record, logged when downloaded
    at.download_button(key="insp_report_pdf").click().run()
    assert not at.exception and len(audit_env.entries()) == before + 2


def test_lab_variant_report_carries_the_corruption_spec(audit_env):
    at = open_page("lab")
    at.toggle(key="lab_on_photo").set_value(False).run()
    at.button(key="lab_report_prepare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    report = at.session_state["report_lab_report"]["report"]
    assert report.record["corruption"]["spec"]["specs"] == [{"modality": "photo", "kind": "drop", "severity": 1.0, "seed": 0}]
    at.download_button(key="lab_report_html").click().run()
    assert not at.exception
    assert audit_env.entries()[0].report_sha256 == report.sha256
    # switching the input back on: the prepared report no longer matches the page, so it is not offered
    at.toggle(key="lab_on_photo").set_value(True).run()
    assert not [d for d in at.download_button if "lab_report" in d.proto.id]


def test_audit_log_page_lists_verifies_and_reopens_reports(audit_env):
    if not audit_env.entries():
        pytest.skip("needs the reports of the tests above")
    at = open_page("audit_log")
    assert [t.value for t in at.title] == ["Audit log"]
    assert any("hash chain is intact" in s.value for s in at.success)
    assert at.selectbox(key="audit_entry").value == audit_env.entries()[0].id
    at.toggle(key="audit_show").set_value(True).run()
    assert not at.exception
    at.text_input(key="audit_case").input("no-such-case").run()
    assert any("No recorded report matches" in i.value for i in at.info)
