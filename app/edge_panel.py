"""The Convergence tuning page's Edge section: export the DEQ with K fixed steps to ONNX and check it.

The flips-against-K table (validation split, ``deq_core.edge.steps_table``) runs as a
background job on every visit, as cheap as one solve of the split; the export and its
check (``export_onnx``, ``check_onnx`` on the app's test cases) run on request, because
an int8 export calibrates on training cases and the check times both engines. Without
onnx/onnxruntime the section says how to install them instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import plots, resources
from app.widgets import chart
from deq_core.edge import PRECISIONS, check_onnx, export_onnx, missing_runtime, steps_table

CHECK_REPEATS = 7  # latency runs per engine and batch size in the app (the CLI's default is 20)
PRECISION_NAMES = {"fp32": "fp32 (float)", "int8": "int8 (static, calibrated on training cases)"}


def steps_job(entry: resources.ModelEntry):
    key = ("edge-steps", entry.folder, entry.checksum, resources.max_cases())
    open_lens = resources.background_opener(entry)  # the session's leave is read here, in the script, not in the job
    max_cases = resources.max_cases()

    def work(report):
        report(0.05, "unrolling the fusion step on the validation cases")
        return steps_table(open_lens(), "val", max_cases=max_cases)

    return resources.jobs().submit(key, "flips against K", work)


def export_job(entry: resources.ModelEntry, steps: int, precision: str):
    data = resources.test_data(entry)
    key = ("edge-export", entry.folder, entry.checksum, steps, precision, len(data))

    open_lens = resources.background_opener(entry)

    def work(report):
        lens = open_lens()
        report(0.1, f"exporting with K = {steps}, {precision}")
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(lens, steps, Path(tmp) / "model.onnx", precision)
            report(0.5, "checking the file against the full model")
            return check_onnx(lens, path, repeats=CHECK_REPEATS, data=data), path.read_bytes()

    return resources.jobs().submit(key, "edge export", work)


def steps_frame(table) -> pd.DataFrame:
    return pd.DataFrame([vars(r) for r in table.rows])


def edge_section(entry: resources.ModelEntry) -> None:
    st.subheader("Edge: a fixed number of steps, exported to ONNX",
                 help="The encoders, K unrolled fusion steps (plain damped iteration: Anderson's least-squares step "
                 "has no ONNX form) and the head, as one ONNX graph with a known cost per case. "
                 "CLI: deq-lens edge export / check (docs/edge.md).")  # fmt: skip
    hint = missing_runtime()
    if hint:
        st.info(f"The edge export needs onnx and onnxruntime, which are not installed here: `{hint}`.",
                icon=":material/download:")  # fmt: skip
        return
    if entry.architecture != "deq":
        st.info("Only a DEQ is exported with a fixed number of steps; a weight-tied model already has one.")
        return
    table = resources.wait_for(steps_job(entry), "Unrolling the fusion step on the validation cases")
    if table is None:
        return
    chosen, settled = table.chosen_steps, table.settled_steps()
    st.markdown(
        (f"On the {table.cases} validation cases, **K = {chosen}** is the smallest number of steps from which on every "
         "decision is the full model's." if chosen is not None else
         f"No K up to {len(table.rows)} decides every validation case as the full model: export with care.")
        + (f" The probabilities stay within 1e-4 of the fixed point from K = {settled}." if settled else "")
        + f" The full model's own solve (tolerance {resources.lens(entry).config.solver.tol:g}) is "
          f"{table.full_vs_fixed_point:.1e} from its fixed point."
    )  # fmt: skip
    row = st.columns([1, 2, 1.2])
    steps = int(row[0].number_input("Steps K", 1, 200, value=chosen or len(table.rows), key="edge_steps"))
    precision = row[1].selectbox("Precision", PRECISIONS, format_func=PRECISION_NAMES.get, key="edge_precision")
    chart(plots.flips_by_steps(steps_frame(table), chosen, steps, height=280), "edge_flips")
    state_key = f"edge_{entry.checksum}_{steps}_{precision}"
    if state_key not in st.session_state:
        if not row[2].button("Export and check", key="edge_export", icon=":material/memory:",
                             help="Exports the graph and compares it with the full model on the test cases."):  # fmt: skip
            return
        done = resources.wait_for(export_job(entry, steps, precision), f"Exporting with K = {steps} and checking it")
        if done is None:
            return
        st.session_state[state_key] = done
    result, onnx = st.session_state[state_key]
    b1 = result.latency_ms["batch1"]
    m = st.columns(5)
    m[0].metric("Agreement", f"{result.agreement:.1%}", help=f"{result.flips} of {result.cases} test decisions differ "
                "from the full model's.")  # fmt: skip
    m[1].metric("Flips", result.flips)
    m[2].metric("Accuracy", f"{result.accuracy_onnx:.1%}", delta=f"{result.accuracy_onnx - result.accuracy_full:+.1%} "
                "against the full model", delta_color="off", delta_arrow="off")  # fmt: skip
    m[3].metric("Latency (batch 1)", f"{b1['onnxruntime']['p50']:.1f} ms",
                delta=f"{result.latency_ratio_batch1:.2f}x the full model's {b1['pytorch']['p50']:.1f} ms",
                delta_color="off", delta_arrow="off", help="Medians, onnxruntime and PyTorch alternately, one thread each.")  # fmt: skip
    m[4].metric("File", f"{result.size_bytes / 1e6:.2f} MB", help=f"SHA-256 {result.sha256}")
    st.caption(f"Largest probability difference to the full model {result.max_probability_difference:.1e}, to the "
               f"fixed point {result.max_difference_from_fixed_point:.1e}; residual after K steps: median "
               f"{result.residual_median:.1e}, largest {result.residual_max:.1e}.")  # fmt: skip
    st.download_button("Download the .onnx file", onnx, file_name=f"{entry.name}-k{steps}-{precision}.onnx",
                       mime="application/octet-stream", key="edge_download", icon=":material/download:")  # fmt: skip
