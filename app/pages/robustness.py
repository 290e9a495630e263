"""Robustness: accuracy as each input is damaged harder, the DEQ against its baselines."""

from __future__ import annotations

import streamlit as st

from app import frames, plots, resources
from app.widgets import chart, show_table

entry = resources.require_model()

st.title("Robustness")
st.markdown(
    "Each input is damaged on its own, at growing severity, and every model decides all test cases again. "
    "A curve that stays high means the model copes without that input's full evidence.",
    help="Severity 0 is the untouched case; at 1 the damage is strongest (a switched-off input is replaced by its "
    "training average).",
)

options = ["quick", "full"]
controls = st.columns([1.5, 2, 1.6])
detail = controls[0].segmented_control(
    "Detail", options, default=None, key="robust_detail",
    format_func={"quick": "3 levels", "full": "11 levels"}.get,
    help="Severities swept: 0, 0.5 and 1, or 0, 0.1, …, 1. The full sweep takes minutes on a CPU unless `python -m deq_core.robustness` has cached it.",
)  # fmt: skip
job, detail = resources.robustness_job(entry, detail or "auto")
if detail == "full" and not job.done:
    # Minutes on a CPU: it runs in the background with its progress here, and the quick sweep
    # (3 levels, seconds, usually done already) is shown meanwhile.
    resources.poll_in_background(job, "The 11-level sweep runs in the background")
    job, detail = resources.robustness_job(entry, "quick")
    st.caption("Showing the 3-level sweep until the 11-level one is done.")
report = resources.wait_for(job, f"Running the {detail} robustness sweep")
if report is None:
    st.stop()

kinds = sorted({kind for values in report.corruptions.values() for kind in values})
corruption = controls[1].selectbox(
    "Kind of damage", ["all", *kinds], key="robust_kind",
    format_func=lambda k: "every kind (average)" if k == "all" else k.replace("_", " "),
)  # fmt: skip
measure = controls[2].radio(
    "Show", ["accuracy", "iterations_mean", "equilibrium_shift"], horizontal=True, key="robust_measure",
    format_func={"accuracy": "accuracy", "iterations_mean": "iterations", "equilibrium_shift": "shift"}.get,
    help="Iterations: solver steps per case. Shift: how far the state the model decides from moves away from the clean one.",
)  # fmt: skip

curves = frames.dose_response(report.rows, None if corruption == "all" else corruption)
architectures = {name: info["architecture"] for name, info in report.models.items()}
st.caption(f"{report.dataset} / {report.split}, {report.n} cases; severities {', '.join(f'{s:g}' for s in report.severities)}.")
chart(plots.dose_response(curves, architectures, measure, height=360), "robust_curves")

grades = frames.robustness_grades(report.summary, entry.name)
if len(grades):
    st.markdown("  \n".join(f"**{row.modality}: {row.grade}.** {row.sentence}" for row in grades.itertuples(index=False)))

st.subheader("Summary per model and input")
show_table(frames.display(report.summary, frames.ROBUSTNESS_SUMMARY_COLUMNS), "robust_summary",
           f"{entry.name}-robustness-summary.csv")
st.subheader("Every setting")
show_table(frames.display(report.rows, frames.ROBUSTNESS_ROW_COLUMNS), "robust_rows", f"{entry.name}-robustness.csv", height=300)
