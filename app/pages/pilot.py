"""Pilot read-out (executive): the model beside the current process on a pilot's cases, priced with intervals."""

from __future__ import annotations

import streamlit as st

from app import cost_panel, persist, pilot_panel, plots, resources
from app.widgets import chart
from deq_core import (
    PilotLogError, align_decisions, break_even_months, format_money, pilot_readout, read_pilot_log,
)  # fmt: skip

entry = resources.require_model()
lens = resources.lens(entry)
config = lens.config

st.title("Pilot read-out")
st.markdown(
    "A pilot runs the model beside the process used today on real cases. Load its log (CSV: `case_id`, "
    "`current_decision`, `outcome` where known, optional `false_alarm_cost`, `miss_cost`, `wrong_fault_cost`) "
    "to see what each side's errors cost, with 95% intervals, and how soon a one-off cost pays back.",
    help="Only cases whose outcome is known are priced. See docs/model-card.md, section 'Pilot read-out'.",
)

shipped = pilot_panel.shipped_logs(config.dataset)
choices = [*shipped, "Upload a CSV"]
source = st.selectbox("Pilot log", choices, key="pilot_source",
                      help="Shipped logs are in sample_data/pilot (see its README for what the current process is).")  # fmt: skip
try:
    if source == "Upload a CSV":
        upload = st.file_uploader("Pilot log (CSV)", type=["csv"], key="pilot_upload")
        if upload is None:
            st.info("Upload a pilot log to read it out.")
            st.stop()
        content = pilot_panel.upload_bytes(upload)
    else:
        content = shipped[source].read_bytes()
    log = read_pilot_log(content, config.class_names)
    result = resources.wait_for(resources.evaluation_job(entry), f"Deciding the test cases with {entry.name}")
    if result is None:
        st.stop()
    _, predictions = result
    decisions = align_decisions(log, predictions.ids, predictions.predicted)
except PilotLogError as error:
    st.error(f"This pilot log cannot be read: {error}")
    st.stop()

inputs = st.columns(4)
prices = cost_panel.price_inputs(inputs[:3], config.normal_class)
normal = config.class_names.index(config.normal_class) if config.normal_class else None
readout = pilot_readout(log, decisions, normal, prices, model=entry.name)
comparison = readout.comparison

counts = st.columns(3)
counts[0].metric("Pilot cases", f"{readout.cases:,}", help="Rows of the log.")
counts[1].metric("Outcome known", f"{readout.known:,}", help="Only these cases are priced.")
counts[2].metric("Errors: model / current", f"{readout.errors[entry.name]} / {readout.errors['current process']}",
                 help=f"Accuracy on the known cases: {readout.accuracy[entry.name]:.1%} for {entry.name}, "
                 f"{readout.accuracy['current process']:.1%} for the current process.")  # fmt: skip
cost_panel.show_saving(comparison, entry.name, "current process")
chart(plots.cost_intervals({n: (c.value, c.low, c.high) for n, c in comparison.costs.items()}, entry.name,
                           title="cost per month, 95% interval"), "pilot_costs")  # fmt: skip

st.subheader("Break-even")
persist.restore("pilot_one_off", 50_000.0)
one_off = st.number_input("One-off cost of switching (€)", min_value=0.0, step=5_000.0, key="pilot_one_off",
                          help="Licences, integration, training: paid once.")  # fmt: skip
persist.remember("pilot_one_off")
st.markdown(f"For a one-off {format_money(one_off)}: {break_even_months(one_off, comparison.saving).sentence}")
