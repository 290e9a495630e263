"""Convergence tuning (engineer): how much solver effort do the decisions need?"""

from __future__ import annotations

import dataclasses

import streamlit as st

from app import edge_panel, frames, plots, resources
from app.widgets import chart, show_table
from deq_core import DEFAULT_TOLERANCES

entry = resources.require_model()
resources.require_equilibrium(entry)
lens = resources.lens(entry)
config = lens.config
trained = config.solver
case = resources.current_case(entry)

TOLERANCES = sorted({*DEFAULT_TOLERANCES, 1e-6, trained.tol}, reverse=True)
METHODS = {"anderson": "Anderson acceleration", "broyden": "Broyden", "fixed_point": "plain iteration"}

st.title("Convergence tuning")
st.markdown(
    "The solver stops once one more fusion step would change the state by less than the *tolerance*. "
    "A looser tolerance is faster; it is safe as long as no decision changes against a very tight solve."
)
if entry.architecture != "deq":
    st.info("A weight-tied model always runs its fixed number of steps: only the stop bookkeeping changes here.")


def use_tolerance(tol: float) -> None:
    st.session_state["tune_tol"] = tol


def trained_settings() -> dict:
    return {
        "tune_method": trained.method, "tune_tol": trained.tol, "tune_max_iter": trained.max_iter,
        "tune_stop": trained.stop_mode, "tune_memory": trained.memory,
        "tune_mixing": float(trained.beta if trained.method == "anderson" else trained.damping),
    }  # fmt: skip


def reset_settings() -> None:
    st.session_state.update(trained_settings())


# Widgets take their values from the session (a callback may have set them), never from a default argument.
for key, value in trained_settings().items():
    st.session_state.setdefault(key, value)

# --------------------------------------------------------------------------- settings
row = st.columns([1.2, 2.4, 1])
method = row[0].selectbox("Solver", list(METHODS), key="tune_method",
                          format_func=METHODS.get, help="How the next state is guessed from the previous ones.")  # fmt: skip
tol = row[1].select_slider("Tolerance", TOLERANCES, key="tune_tol", format_func=lambda t: f"{t:g}",
                           help="Stop when the residual falls below this.")  # fmt: skip
max_iter = row[2].number_input("Max iterations", 2, 500, step=5, key="tune_max_iter",
                               help="Give up after this many fusion steps.")  # fmt: skip
row = st.columns([1.2, 1.2, 1.2, 1])
stop_mode = row[0].radio("Residual", ["rel", "abs"], key="tune_stop",
                         format_func={"rel": "relative", "abs": "absolute"}.get, horizontal=True,
                         help="Relative divides the change by the state's size; absolute does not.")  # fmt: skip
memory = row[1].slider("Anderson memory", 1, 10, key="tune_memory", disabled=method != "anderson",
                       help="How many past states Anderson combines.")  # fmt: skip
mixing = row[2].slider("Mixing", 0.1, 1.0, step=0.05, key="tune_mixing", disabled=method == "broyden",
                       help="Anderson: share of the extrapolated step taken (beta). Plain iteration: damping.")  # fmt: skip
row[3].button("Trained settings", key="tune_reset", on_click=reset_settings, icon=":material/restart_alt:")
changes = dict(method=method, tol=float(tol), max_iter=int(max_iter), stop_mode=stop_mode, memory=int(memory))
changes["beta" if method == "anderson" else "damping"] = float(mixing)
settings = dataclasses.replace(trained, **changes)

# --------------------------------------------------------------------------- this case
st.subheader(f"This case ({case.key})")
result = lens.tune(case, settings)
m = st.columns([1, 1.2, 1.6, 1, 0.8])
m[0].metric("Iterations", result.iterations, delta=result.iterations - result.reference_trajectory.iterations,
            delta_color="inverse", help="Compared with the tight reference solve.")  # fmt: skip
m[1].metric("Final residual", f"{result.final_relative_residual:.1e}", help="Of the state the decision was read from.")
m[2].metric("Decision", config.class_names[result.predicted], delta="flipped" if result.flipped else "as the reference",
            delta_color="red" if result.flipped else "off", delta_arrow="off",
            help="Compared with the decision of a very tight solve (tolerance 1e-6).")  # fmt: skip
m[3].metric("Latency", f"{result.latency_ms:.1f} ms", help="Median time to decide this case on this machine.")
m[4].metric("Settled", "yes" if result.trajectory.converged else "no",
            help=f"Solver status: {result.trajectory.status.replace('_', ' ')}.")  # fmt: skip
if not result.trajectory.converged:
    st.warning("With these settings the solve did not settle for this case.", icon=":material/warning:")
chart(
    plots.residuals([frames.residual_frame(result.reference_trajectory, f"reference (tol {result.reference.tol:g})"),
                     frames.residual_frame(result.trajectory, "these settings")],  # drawn last: on top
                    settings.tol, settings.stop_mode, height=260),
    "tune_case_residuals",
)  # fmt: skip

# --------------------------------------------------------------------------- whole test set
data = resources.test_data(entry)
st.subheader(f"The whole test set ({len(data)} cases)")
report = resources.wait_for(resources.assessment_job(entry, settings), "Solving every test case with these settings")
if report is not None:
    m = st.columns(6)
    m[0].metric("Accuracy", f"{report.accuracy:.1%}")
    m[1].metric("Flips", report.flips, help="Decisions that differ from a very tight solve (tolerance 1e-6).")
    m[2].metric("Iterations (mean)", f"{report.iterations_mean:.1f}")
    m[3].metric("Iterations (p95)", f"{report.iterations_p95:.0f}", help="95% of the cases needed at most this many.")
    m[4].metric("Latency", f"{report.latency_ms:.1f} ms", help="Median single-case time on this machine.")
    m[5].metric("Converged", f"{report.converged_fraction:.1%}", help="Share of cases whose solve met the tolerance.")

# --------------------------------------------------------------------------- sweep
st.subheader("How loose can the tolerance be?")
sweep = resources.wait_for(resources.sweep_job(entry, settings), "Sweeping the tolerance over the test set")
if sweep is not None:
    table = frames.sweep_frame(sweep)
    recommended = sweep.recommended_tol
    if recommended is None:
        st.warning("Even the tightest tolerance tried flips a decision: keep the tolerance tight and raise the iteration limit.")
    else:
        rec = table[table["tolerance"] == recommended].iloc[0]
        here = table[table["tolerance"] == settings.tol]
        sentence = (
            f"**Recommended: tolerance {recommended:g}**, the loosest with no flipped decision "
            f"({rec['iterations_mean']:.1f} iterations per case on average"
        )
        if len(here):
            sentence += f", against {here['iterations_mean'].iloc[0]:.1f} at {settings.tol:g}"
        st.markdown(sentence + ").")
        st.button(f"Use tolerance {recommended:g}", key="tune_use_recommended", on_click=use_tolerance, args=(recommended,),
                  disabled=recommended == settings.tol)  # fmt: skip
    chart(plots.tolerance_sweep(table, recommended, settings.tol, height=320), "tune_sweep")
    show_table(frames.display(table, frames.SWEEP_COLUMNS), "tune_sweep", f"{entry.name}-tolerance-sweep.csv")

# --------------------------------------------------------------------------- edge
edge_panel.edge_section(entry)

# --------------------------------------------------------------------------- equal compute
st.subheader("The DEQ against the weight-tied model at equal compute")
siblings = resources.baselines_of(entry)
if "deq" in siblings and "weight_tied" in siblings:
    # The DEQ runs with the settings above when it is the model being tuned, else with its own.
    deq_settings = settings if entry.architecture == "deq" else resources.lens(siblings["deq"]).config.solver
    comparison = resources.wait_for(
        resources.equal_compute_job(siblings["deq"], siblings["weight_tied"], deq_settings),
        "Comparing both models at equal numbers of fusion steps",
    )
    if comparison is not None:
        frame = frames.compute_frame(comparison)
        trained_steps = comparison.weight_tied_trained_steps
        at = frame[frame["f_evaluations"] == trained_steps]
        if len(at):
            st.markdown(
                f"With the **{trained_steps} fusion steps** the weight-tied model was trained for, the DEQ decides "
                f"{frames.percent(at['deq_accuracy'].iloc[0])} correctly and the weight-tied model {frames.percent(at['weight_tied_accuracy'].iloc[0])}. "
                "The right panel shows whether each one's state settles.",
                help="Both get the same number of evaluations of the fusion step f; the DEQ may stop earlier once it has settled.",
            )
        chart(plots.equal_compute(frame, trained_steps, height=300), "tune_equal_compute")
        with st.expander("The table"):
            show_table(frames.display(frame, frames.COMPUTE_COLUMNS), "tune_equal_compute", f"{entry.name}-equal-compute.csv")
else:
    st.info("Needs both a DEQ and a weight-tied model of this dataset beside each other in the models folder.")

# --------------------------------------------------------------------------- stability
st.subheader("How stable the equilibria are", help="The spectral radius of the fusion step's Jacobian at each test "
             "case's equilibrium: below 1 the step contracts there, and the closer to 1 the more iterations a solve "
             "needs. Each case is also solved from 8 starts to see whether it has only one equilibrium.")  # fmt: skip
if entry.architecture != "deq":
    st.info("A weight-tied model decides after its fixed number of steps, not from an equilibrium.")
else:
    survey = resources.wait_for(resources.stability_job(entry), f"Checking the {len(resources.test_data(entry))} test "
                                "cases' equilibria")  # fmt: skip
    if survey is not None:
        summary = survey.summary()
        radius = summary["spectral_radius"]
        m = st.columns(4)
        m[0].metric("Median spectral radius", f"{radius['median']:.2f}", help=f"95th percentile {radius['p95']:.2f}.")
        m[1].metric("Largest", f"{radius['max']:.2f}", help="Above 1 the step is not contractive at that equilibrium.")
        m[2].metric("Unique equilibrium", f"{summary['unique_fraction']:.1%}",
                    help=f"Cases whose {summary['starts']} starts all reached the same equilibrium.")  # fmt: skip
        m[3].metric("Same decision", f"{summary['decision_unique_fraction']:.1%}",
                    help="Cases whose starts all decide the same class.")  # fmt: skip
        frame = frames.stability_frame(survey)
        left, right = st.columns(2)
        with left:
            chart(plots.spectral_radii(frame, height=300), "tune_radii")
        with right:
            chart(plots.iterations_by_radius(frame, height=300), "tune_radius_iterations")
        correlation = summary["radius_iterations_spearman"]
        if correlation is not None:
            st.caption(f"Spearman correlation of radius with iterations {correlation:+.2f}"
                       + (f", with wrong decisions {summary['radius_error_spearman']:+.2f}." if summary["radius_error_spearman"]
                          is not None else "."))  # fmt: skip
        if summary["multiple_equilibria"]:
            st.warning("More than one equilibrium found for " + ", ".join(summary["multiple_equilibria"]),
                       icon=":material/warning:")  # fmt: skip
        with st.expander("The table"):
            show_table(frames.display(frame, frames.STABILITY_COLUMNS), "tune_stability", f"{entry.name}-stability.csv")
