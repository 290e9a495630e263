"""Audit log (auditor): every recorded report, whether the log's chain is intact, and the reports themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from app.report_panel import audit_log
from deq_core import ReportRecord, record_sha256, render_html, verify_issued


def recorded_report(path: Path, recorded_sha256: str) -> tuple[dict | None, str]:
    """The report file the log points at, if its content still hashes to what the log recorded.

    Returns (record, "") when it matches, else (None, why): the file is gone, cannot
    be read, or was changed after it was recorded. Both its own ``report_sha256``
    field and the hash of its content must be the logged one.
    """
    if not path.is_file():
        return None, "gone"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"The report file {path} cannot be read ({type(error).__name__}); it is not shown."
    if not isinstance(record, dict):
        return None, f"The report file {path} is not a report (a JSON object); it is not shown."
    content = record_sha256(record)
    if content != recorded_sha256 or record.get("report_sha256") != recorded_sha256:
        return None, (f"The report file {path} does not match the log: its content hashes to `{content[:16]}…`, "
                      f"the log recorded `{recorded_sha256[:16]}…`. It was changed after it was recorded, so it "
                      "is not shown; the log's summary is below.")  # fmt: skip
    return record, ""


@st.cache_data(show_spinner=False, max_entries=8)
def issued_problems(record: dict) -> list[str]:
    """Why the report is not this log's signed entry (empty: it is); a report that does not read has no signature."""
    try:
        return verify_issued(ReportRecord.from_dict(record), log)
    except ValueError as error:
        return [f"the report does not read as a report ({error})"]


def report_page(record_json: str) -> str:
    """The HTML page of a verified record, rendered from it (the HTML file beside it carries no hash of its own)."""
    return render_html(json.loads(record_json))


log = audit_log()
st.title("Audit log")
st.caption(f"Reports recorded by the app and by `python -m deq_core.audit`, newest first · `{log.url}`")

verification = log.verify()
if verification.ok:
    st.success(f"The log's hash chain is intact ({verification.entries} entries).", icon=":material/verified:")
else:
    st.error(f"The log has been tampered with ({verification.entries} entries):", icon=":material/gpp_bad:")
    for problem in verification.problems:
        st.markdown(f"- {problem}")
head = log.checkpoint()
if head is not None:  # a copy kept elsewhere is what catches a log rebuilt shorter (docs/audit.md)
    st.caption(f"Newest signed checkpoint: {head.count} entries, head `{head.head_hash[:16]}…`. Keep a copy elsewhere "
               "(`python -m deq_core.audit checkpoint --out FILE`); `verify-log --checkpoint FILE` then catches a log "
               "cut back below it.")  # fmt: skip

filters = st.columns(2)
models = sorted({e.model_name for e in log.entries()})
model_name = filters[0].selectbox("Model", ["all", *models], key="audit_model")
case_id = filters[1].text_input("Case contains", key="audit_case", placeholder="e.g. insp-0042")
entries = log.entries(model_name=None if model_name == "all" else model_name, case_id=case_id or None, limit=500)
if not entries:
    st.info("No recorded report matches. Prepare and download a report on the Inspect or Lab page, or run "
            "`python -m deq_core.audit report`.")  # fmt: skip
    st.stop()

table = pd.DataFrame([{
    "entry": e.id, "recorded": e.created_at[:19].replace("T", " "), "source": e.source, "model": e.model_name,
    "case": e.case_id, "decision": e.prediction, "report": e.report_sha256[:16],
} for e in entries])  # fmt: skip
st.dataframe(table, hide_index=True, key="audit_table")

chosen = st.selectbox("Open entry", [e.id for e in entries], key="audit_entry",
                      format_func=lambda i: next(f"#{e.id}: {e.case_id} → {e.prediction} ({e.model_name})" for e in entries if e.id == i))  # fmt: skip
entry = next(e for e in entries if e.id == chosen)
summary = json.loads(entry.summary or "{}")
st.markdown(f"**Report SHA-256** `{entry.report_sha256}` · model checksum `{entry.model_checksum[:16]}…`")
if summary.get("plain"):
    st.markdown(f"> {summary['plain']}")
record, problem = recorded_report(Path(entry.report_path), entry.report_sha256) if entry.report_path else (None, "gone")
page = None
if record is not None:
    try:
        page = report_page(json.dumps(record, sort_keys=True))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:  # hashes right, yet not a whole report
        problem = (f"The report file {entry.report_path} matches the log's SHA-256 but is not a complete report "
                   f"({type(error).__name__}: {error}); it cannot be shown.")  # fmt: skip
if page is not None:
    st.caption(f"The report file `{entry.report_path}` still hashes to the SHA-256 the log recorded.")
    not_issued = issued_problems(record)
    if not_issued:
        st.warning("This report is not a signed entry of this log: " + "; ".join(not_issued), icon=":material/gpp_maybe:")
    else:
        st.caption(f"Signed by the deployment key `{record['signature']['public_key'][:16]}…` as entry "
                   f"{record['signature']['checkpoint']['count']} of this log.")  # fmt: skip
    st.download_button("Download this report (HTML)", page.encode(), file_name=f"{entry.case_id}-{entry.report_sha256[:8]}.html",
                       mime="text/html", key="audit_download", icon=":material/download:", on_click="ignore")  # fmt: skip
    if st.toggle("Show the report here", key="audit_show"):
        # A sandboxed frame of its own, as the report is a whole page with its own scripts (plotly).
        st.iframe(page, height=900)
else:
    if problem == "gone":
        st.caption("The report file is no longer on disk; the log keeps its summary and hash.")
    else:
        st.error(problem, icon=":material/gpp_bad:")
    st.json(summary, expanded=False)
