"""Audit log (auditor): every recorded report, whether the log's chain is intact, and the reports themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from app.report_panel import audit_log
from deq_core.audit import HTML_NAME

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
html_path = Path(entry.report_path).with_name(HTML_NAME) if entry.report_path else None
st.markdown(f"**Report SHA-256** `{entry.report_sha256}` · model checksum `{entry.model_checksum[:16]}…`")
if summary.get("plain"):
    st.markdown(f"> {summary['plain']}")
if html_path is not None and html_path.is_file():
    page = html_path.read_text(encoding="utf-8")
    st.download_button("Download this report (HTML)", page.encode(), file_name=f"{entry.case_id}-{entry.report_sha256[:8]}.html",
                       mime="text/html", key="audit_download", icon=":material/download:", on_click="ignore")  # fmt: skip
    if st.toggle("Show the report here", key="audit_show"):
        components.html(page, height=900, scrolling=True)
else:
    st.caption("The report file is no longer on disk; the log keeps its summary and hash.")
    st.json(summary, expanded=False)
