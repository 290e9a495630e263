"""Modality lab (what-if): switch inputs off or damage them and watch the decision and the equilibrium move."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import frames, plots, resources
from app.report_panel import report_panel
from app.widgets import chart, show_table
from deq_core import CorruptionSet, ReportSettings, available_corruptions, describe_corruption, token_strings

REPORT_STEPS = 16  # IG steps of a variant report: seconds on a CPU; the Inspect page offers more

entry = resources.require_model()
resources.require_equilibrium(entry)
lens = resources.lens(entry)
config = lens.config
case = resources.current_case(entry)
names = config.modality_names

st.title("Modality lab")
st.markdown(
    f"What does the model decide for **{case.key}** when an input is missing or damaged? "
    "Switch inputs off or pick a kind of damage; the reference is the untouched case.",
    help="A switched-off input is replaced by its training average, as if the sensor or camera were missing; "
    "the gate still weighs that average, so a switched-off input keeps some gate share.",
)
st.page_link("pages/inspect_decision.py", label="Choose another case on the Inspect page", icon=":material/search:")


def restore(index: int) -> None:
    """Put a saved variant's settings back on the switches (runs before the page is drawn)."""
    for name, on, kind, severity in st.session_state["lab_history"][index]["settings"]:
        st.session_state[f"lab_on_{name}"] = on
        st.session_state[f"lab_kind_{name}"] = kind
        st.session_state[f"lab_severity_{name}"] = severity


def reset() -> None:
    for name in names:
        st.session_state[f"lab_on_{name}"] = True
        st.session_state[f"lab_kind_{name}"] = "none"
        st.session_state[f"lab_severity_{name}"] = 0.5


# --------------------------------------------------------------------------- switches
for name in names:  # widgets take their values from the session, where restore() and reset() write
    st.session_state.setdefault(f"lab_on_{name}", True)
    st.session_state.setdefault(f"lab_kind_{name}", "none")
    st.session_state.setdefault(f"lab_severity_{name}", 0.5)
per_line = 3 if len(config.modalities) > 4 else len(config.modalities)
controls = [c for start in range(0, len(config.modalities), per_line) for c in st.columns(per_line)]
settings = []
for column, m in zip(controls, config.modalities):
    with column, st.container(border=True):
        on = st.toggle(f"**{m.name}**", key=f"lab_on_{m.name}", help=f"{m.kind} input; off = missing.")
        kinds = ["none", *[k for k in available_corruptions(m.kind) if k != "drop"]]
        kind = st.selectbox("Damage", kinds, key=f"lab_kind_{m.name}", disabled=not on,
                            format_func=lambda k: "no damage" if k == "none" else k.replace("_", " "))  # fmt: skip
        if kind != "none":
            st.caption(describe_corruption(m.kind, kind))
        severity = st.slider("Severity", 0.0, 1.0, step=0.05, key=f"lab_severity_{m.name}", disabled=not on or kind == "none")
        settings.append((m.name, on, kind, float(severity)))
settings = tuple(settings)
specs = resources.lab_specs(settings)

reference = lens.decide(case)
variant_case = lens.variant(case, specs)
variant = lens.decide(variant_case)
ref_t, var_t = reference.trajectory, variant.trajectory
ref_class, var_class = reference.prediction, variant.prediction
shift = frames.equilibrium_shift(ref_t, var_t)

# --------------------------------------------------------------------------- side by side
st.subheader("Reference and variant")
summary = st.columns([1.5, 1.5, 1, 1])
summary[0].metric("Reference decides", config.class_names[ref_class], delta=f"{reference.probabilities[ref_class]:.1%} sure",
                  delta_color="off", delta_arrow="off")  # fmt: skip
changed = var_class != ref_class
summary[1].metric(
    "Variant decides", config.class_names[var_class],
    delta=f"{variant.probabilities[var_class]:.1%} sure · " + ("decision changed" if changed else "same decision"),
    delta_color="red" if changed else "off", delta_arrow="off",
)  # fmt: skip
summary[2].metric("Iterations", f"{ref_t.iterations} → {var_t.iterations}", delta=var_t.iterations - ref_t.iterations,
                  delta_color="inverse", help="Solver iterations to reach the equilibrium.")  # fmt: skip
summary[3].metric("Equilibrium shift", f"{shift:.1%}",
                  help="How far the variant's equilibrium lies from the reference's: ||z*_variant − z*_reference|| / ||z*_reference||.")  # fmt: skip
if not var_t.converged:
    st.warning(f"The variant's solve did not settle ({var_t.status.replace('_', ' ')}): its decision is unsteady.", icon=":material/warning:")
if not specs:
    st.caption("The variant is the reference: switch an input off or add damage above.")

left, right = st.columns(2)
with left:
    st.markdown("**Class probabilities**")
    chart(plots.compare_probabilities(config.class_names, reference.probabilities, variant.probabilities, height=270), "lab_probabilities")
with right:
    st.markdown("**Both searches for the equilibrium**", help="Residual per iteration: how much one more step would still change the state.")
    chart(
        plots.residuals([frames.residual_frame(ref_t, "reference"), frames.residual_frame(var_t, "variant")],
                        config.solver.tol, config.solver.stop_mode, height=270),
        "lab_residuals",
    )  # fmt: skip
left, right = st.columns(2)
with left:
    st.markdown("**Fused-state paths in one plane**", help="Both paths projected on the two directions they move most together.")
    both = np.concatenate([frames.fused_states(ref_t), frames.fused_states(var_t)])
    path = frames.principal_path(both).frame()
    chart(plots.compare_paths(path.iloc[: ref_t.iterations].reset_index(drop=True),
                              path.iloc[ref_t.iterations:].reset_index(drop=True), height=280), "lab_paths")  # fmt: skip
with right:
    st.markdown("**Gate share at the equilibrium**", help="The model's own weighting of each input in the fused state.")
    if ref_t.has_gates:
        reference_share, variant_share = np.asarray(ref_t.gate_share()[-1]), np.asarray(var_t.gate_share()[-1])
        chart(plots.compare_probabilities(list(names), reference_share, variant_share, height=280), "lab_shares")
        absent_note = frames.absent_share_note(names, variant_share, [name for name, on, _, _ in settings if not on])
        if absent_note:
            st.caption(absent_note)
    else:
        st.info(frames.NO_GATE_SHARES_NOTE)

with st.expander("What the model sees in the variant"):
    damaged = [(i, m) for i, m in enumerate(config.modalities) if any(s.modality == m.name for s in specs)]
    if not damaged:
        st.caption("Nothing is changed.")
    for i, m in damaged:
        x = np.asarray(variant_case.inputs[i][0])
        if m.kind == "image":
            chart(plots.picture(x.mean(axis=0), m.name, height=240), f"lab_seen_{m.name}")
        elif m.kind == "timeseries":
            chart(plots.sensor_traces(x, m.feature_names, height=240), f"lab_seen_{m.name}")
        elif m.kind == "text":
            words = token_strings(variant_case.inputs[i][0].tolist(), m.vocabulary)
            st.markdown(f"**{m.name}:** " + (" ".join(words) if words else "*(empty)*"))
        else:
            chart(plots.vector_bars(x, m.feature_names, m.name, height=200), f"lab_seen_{m.name}")

# --------------------------------------------------------------------------- report
st.subheader("Variant report", help="The variant's decision explained, with the corruption spec that produced it, "
             "so `python -m deq_core.audit verify` can replay it.")  # fmt: skip
report_panel(entry, case, "lab_report", settings=ReportSettings(n_steps=REPORT_STEPS), corruption=CorruptionSet(specs),
             identity=tuple(s.describe() for s in specs))  # fmt: skip

# --------------------------------------------------------------------------- history
st.subheader("Variants of this session")
history = st.session_state.setdefault("lab_history", [])
buttons = st.columns([2, 2, 3])
if buttons[0].button("Keep this variant", key="lab_keep", icon=":material/bookmark_add:", disabled=not specs):
    history.append({
        "case": case.key,
        "settings": settings,
        "description": "; ".join(s.describe().split(" (seed")[0] for s in specs),
        "decision": config.class_names[var_class],
        "confidence": float(variant.probabilities[var_class]),
        "iterations": var_t.iterations,
        "equilibrium_shift": shift,
        **{f"P({c})": float(p) for c, p in zip(config.class_names, variant.probabilities)},
    })  # fmt: skip
buttons[1].button("Reset switches", key="lab_reset", on_click=reset, icon=":material/restart_alt:")
if history:
    show_table(frames.lab_history_display(history, config.class_names), "lab_history", f"{entry.name}-lab-variants.csv")
    pick = st.columns([3, 1.2, 2])
    number = pick[0].selectbox("Variant", list(range(1, len(history) + 1)), key="lab_restore_choice",
                               format_func=lambda n: f"#{n}: {history[n - 1]['description']} ({history[n - 1]['case']})")  # fmt: skip
    pick[1].button("Restore", key="lab_restore", on_click=restore, args=(number - 1,), icon=":material/undo:",
                   help="Put this variant's switches back (on the current case).")  # fmt: skip
else:
    st.caption("Keep a variant to compare it with later ones; kept variants can be restored.")
