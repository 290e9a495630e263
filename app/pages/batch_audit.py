"""Batch audit (auditor): a month of decisions at a glance, and the ranked list of those to look at first."""

from __future__ import annotations

import streamlit as st

from app import batch_runs, resources

st.title("Batch audit")
root = batch_runs.batch_runs_root()
infos = batch_runs.list_run_infos(root)
if not infos:
    st.info(f"No batch runs under {root}. Run `deq-lens batch --model MODEL --cases FOLDER --out {root}/NAME`, "
            f"or point {batch_runs.RUNS_ENV} at the folder that holds your runs.")  # fmt: skip
    st.stop()

st.dataframe(batch_runs.runs_table(infos), hide_index=True, key="batch_runs")
names = [info.name for info in infos]
chosen = st.selectbox("Run", names, key="batch_run")
info = infos[names.index(chosen)]
if info.summary is None:
    st.warning("This run has not finished: the figures below are of the chunks written so far. "
               "Rerun the same `deq-lens batch` command to continue it.")  # fmt: skip
try:
    records = batch_runs.run_records(info.folder)
except (FileNotFoundError, OSError, ValueError) as error:
    st.error(f"Cannot read the run's records: {error}")
    st.stop()
summary = info.summary or {}
left, right = st.columns([1, 2])
with left:
    st.dataframe(batch_runs.decisions_table(summary), hide_index=True, key="batch_decisions")
with right:
    counts = st.columns(4)
    counts[0].metric("Cases", len(records))
    counts[1].metric("Unsettled solves", summary.get("unsettled", "–"))
    counts[2].metric("Low confidence", summary.get("low_confidence", "–"))
    counts[3].metric("Disagreements", summary.get("disagreements", "–"), help="With the production decisions given "
                     "by --decisions (– when none were given).")  # fmt: skip

st.subheader("Look at these first")
ranked = batch_runs.ranked(records)
filters = st.columns([3, 2, 1])
signals = filters[0].multiselect("Signals", list(batch_runs.SIGNAL_LABELS), format_func=batch_runs.SIGNAL_LABELS.get,
                                 key="batch_signals", placeholder="any signal")  # fmt: skip
decided = filters[1].multiselect("Decided as", sorted(records["decision"].unique()), key="batch_decided",
                                 placeholder="any class")  # fmt: skip
min_score = filters[2].number_input("Score at least", min_value=0.0, value=0.0, step=0.5, key="batch_min_score")
shown = batch_runs.triage_view(batch_runs.filter_triage(ranked, signals, decided, min_score))
st.caption(f"{len(shown)} of {len(ranked)} cases. Score: unsettled solve 3, second equilibrium 2.5, disagreement 2, "
           "conflicting input 1.5, low confidence 1, large interaction 0.5 (each scaled by its severity).")  # fmt: skip
picked = st.dataframe(batch_runs.triage_display(shown), hide_index=True, key="batch_triage", on_select="rerun",
                      selection_mode="single-row")  # fmt: skip
st.download_button("Download the list (CSV, every column)", shown.to_csv(index=False),
                   file_name=f"{info.name}-triage.csv", mime="text/csv", key="batch_download")  # fmt: skip

rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
case_id = st.selectbox("Case to inspect", list(shown["case_id"]), index=rows[0] if rows else 0, key="batch_case_pick")
entry = resources.require_model()
same_model = info.question.get("model_checksum") == entry.checksum
if not same_model:
    st.caption(f"This run was made with {info.question.get('model')}; choose that model in the sidebar to inspect its cases.")
if st.button("Open on the Inspect page", key="batch_open", disabled=not same_model or not case_id):
    st.session_state["batch_case"] = {"cases": info.question["cases"], "case_id": case_id, "run": info.name}
    st.session_state["insp_source"] = "A batch case"
    st.switch_page("pages/inspect_decision.py")
