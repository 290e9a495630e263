"""The "decision report" panel the Inspect and Lab pages share: prepare on request, then download and log.

The report is built only when the user presses "Prepare report" (a rerun never
rebuilds it), issued (recorded in the audit log with source "app", signed with the
deployment key, written under the app's cache folder so the Audit log page can
re-open it), kept in the session, and every download is recorded in the log too.
Only an issued report verifies, so the files offered are the signed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import uuid

import streamlit as st

from app import resources
from deq_core import AuditLog, Case, DecisionReport, ReportSettings, default_audit_url, issue_report, log_report, report_pdf


@st.cache_resource(show_spinner=False)
def _audit_log(url: str) -> AuditLog:
    return AuditLog(url)


def audit_log() -> AuditLog:
    """The process's audit log ($DEQ_LENS_AUDIT_DB or .cache/audit.sqlite), shared by every session."""
    return _audit_log(default_audit_url())


def reports_dir() -> Path:
    return resources.cache_dir() / "reports"


def _record_download(report: DecisionReport, path: str, what: str) -> None:
    entry = log_report(report, audit_log(), path, source="app")
    st.session_state["report_last_logged"] = (entry.id, what)


def report_panel(entry: resources.ModelEntry, case: Case, key: str, *, settings: ReportSettings,
                 corruption=None, explanation=None, identity: tuple = ()) -> None:  # fmt: skip
    """A "Prepare report" button, then HTML, JSON and PDF download buttons for that report.

    ``identity`` names what the report is of (case, settings, corruption): a prepared
    report for another identity is not offered, so a download always matches the page.
    """
    state_key = f"report_{key}"
    identity = (entry.checksum, case.key, *identity)
    if st.button("Prepare report", key=f"{key}_prepare", icon=":material/description:",
                 help="A self-contained HTML page and a JSON record with hashes of the model and inputs, "
                 "which `python -m deq_core.audit verify` can re-run."):  # fmt: skip
        lens = resources.lens(entry)
        with st.spinner("Writing the report…"):
            report = lens.report(
                case, settings, corruption=corruption, explanation=explanation,
                source={"upload": True} if case.is_upload else {"app": True, "dataset": lens.config.dataset},
            )  # fmt: skip
        # A folder of its own per issue: the same report prepared twice is two log entries, two files.
        folder = reports_dir() / f"{report.sha256[:16]}-{uuid.uuid4().hex[:8]}"
        report = issue_report(report, audit_log(), folder, source="app")
        # The PDF is drawn from the signed record once, here, not on every rerun.
        st.session_state[state_key] = {"identity": identity, "report": report, "path": str(folder / "report.json"),
                                       "pdf": report_pdf(report)}  # fmt: skip
    prepared: Mapping | None = st.session_state.get(state_key)
    if not prepared or prepared["identity"] != identity:
        st.caption("Prepare a report to download it as HTML (readable offline), JSON (verifiable) and PDF (for the file).")
        return
    report, path = prepared["report"], prepared["path"]
    name = f"{entry.name}-{case.key}-{report.sha256[:8]}"
    columns = st.columns([1, 1, 1, 3])
    columns[0].download_button("Download HTML", report.html.encode(), file_name=f"{name}.html", mime="text/html",
                               key=f"{key}_html", icon=":material/download:",
                               on_click=_record_download, args=(report, path, "html"))  # fmt: skip
    columns[1].download_button("Download JSON", report.json_text().encode(), file_name=f"{name}.json",
                               mime="application/json", key=f"{key}_json", icon=":material/download:",
                               on_click=_record_download, args=(report, path, "json"))  # fmt: skip
    columns[2].download_button("Download PDF", prepared["pdf"], file_name=f"{name}.pdf", mime="application/pdf",
                               key=f"{key}_pdf", icon=":material/download:",
                               on_click=_record_download, args=(report, path, "pdf"))  # fmt: skip
    columns[3].caption(f"Report `{report.sha256[:16]}…` · decided **{report.predicted_class}** · downloads are "
                       "recorded in the audit log.")  # fmt: skip
