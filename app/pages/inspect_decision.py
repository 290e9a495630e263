"""Inspect a decision (auditor): one case, its inputs, the equilibrium it settled in, why, and how far to trust it."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import frames, plots, resources
from app.report_panel import report_panel
from app.widgets import UPLOAD_LIMIT_MB, chart, upload_size_problem
from deq_core import BASELINES, DEFAULT_STEPS, Case, MissingInputs, ReportSettings, UploadError, feature_names, token_strings, top_features

LOW_CONFIDENCE = 0.6  # below this the decision is called unsure
SLOW_QUANTILE = 0.9  # "slow" = among the 10% of cases that needed most iterations

entry = resources.require_model()
resources.require_equilibrium(entry)
lens = resources.lens(entry)
config = lens.config
data = resources.test_data(entry)

st.title("Inspect a decision")

# --------------------------------------------------------------------------- choose a case
batch_case = st.session_state.get("batch_case")  # set by the Batch audit page's "Open on the Inspect page"
sources = ["A test case", "Upload a case"] + (["A batch case"] if batch_case else [])
if st.session_state.get("insp_source") not in sources:
    st.session_state.pop("insp_source", None)
source = st.radio("Case", sources, horizontal=True, key="insp_source", label_visibility="collapsed")
st.session_state["case_source"] = {"Upload a case": "upload", "A batch case": "batch"}.get(source, "test")

if source == "A batch case":
    st.caption(f"Case {batch_case['case_id']} of batch run {batch_case['run']} ({batch_case['cases']}).")
    case = resources.batch_case(entry, batch_case["cases"], batch_case["case_id"])
elif source == "A test case":
    evaluation = resources.wait_for(resources.evaluation_job(entry), f"Solving the {len(data)} test cases")
    if evaluation is None:
        st.stop()
    table = frames.case_table(evaluation[1], config.class_names)
    slow_from = float(np.quantile(table["iterations"], SLOW_QUANTILE)) if "iterations" in table else None
    filters = st.columns([3, 2, 1.2, 1.2])
    classes = filters[0].multiselect("True class", list(config.class_names), key="insp_classes", placeholder="any class")
    correctness = filters[1].segmented_control("Decision", ["all", "correct", "wrong"], default="all", key="insp_correctness")
    low = filters[2].toggle("Unsure", key="insp_low", help=f"Confidence below {LOW_CONFIDENCE:.0%}.")
    slow = filters[3].toggle(
        "Slow", key="insp_slow",
        help=f"Among the 10% of cases that needed the most solver iterations (at least {slow_from:.0f}).",
    )  # fmt: skip
    chosen = frames.filter_cases(table, classes, correctness or "all", LOW_CONFIDENCE if low else None, slow_from if slow else None)
    if chosen.empty:
        st.warning("No test case matches these filters.")
        st.stop()
    labels = {row["case"]: frames.case_label(row) for _, row in chosen.iterrows()}
    ids = list(labels)
    if st.session_state.get("insp_case") not in ids:
        st.session_state["insp_case"] = st.session_state.get("case_id") if st.session_state.get("case_id") in ids else ids[0]
    case_id = st.selectbox(f"Case ({len(ids)} match)", ids, key="insp_case", format_func=labels.get)
    st.session_state["case_id"] = case_id
    case = resources.test_case(entry, case_id)
else:
    st.caption("One file per input, checked against what the model expects. Nothing is resized or guessed.")
    per_line = 3 if len(config.modalities) > 4 else len(config.modalities)
    columns = [c for start in range(0, len(config.modalities), per_line) for c in st.columns(per_line)]
    contents, file_names, oversized = {}, {}, []
    for column, modality in zip(columns, config.modalities):
        with column:
            if modality.kind == "text":
                contents[modality.name] = st.text_area(f"{modality.name} (text)", key=f"upload_{modality.name}", height=120,
                                                       placeholder="e.g. Small scratch near the bore.")  # fmt: skip
                continue
            accept = {"image": ["png", "jpg", "jpeg"], "timeseries": ["csv"], "vector": ["csv", "npy"]}[modality.kind]
            shape = "×".join(map(str, modality.shape))
            if modality.kind == "image":
                hint = f"PNG, {modality.shape[2]}×{modality.shape[1]} pixels"
            elif modality.kind == "timeseries":
                hint = f"CSV, header {', '.join(modality.feature_names) or 'channel names'}, {modality.shape[1]} rows"
            else:
                hint = f"CSV with a header and one row, or .npy ({shape})"
            upload = st.file_uploader(f"{modality.name} ({hint})", type=accept, key=f"upload_{modality.name}",
                                      help=f"At most {UPLOAD_LIMIT_MB} MB.")  # fmt: skip
            if upload is not None:
                too_big = upload_size_problem(f"{modality.name} ({upload.name})", upload.size)
                if too_big:
                    oversized.append(too_big)
                    continue
                contents[modality.name], file_names[modality.name] = upload.getvalue(), upload.name
    for problem in oversized:
        st.error(problem)
    if oversized:
        st.stop()
    notes: list[str] = []  # what was converted to read an input: said, never done silently
    try:
        case = Case.from_upload(config.modalities, contents, file_names=file_names, notes=notes)
    except UploadError as error:
        for problem in error.problems:
            st.error(problem)
        st.stop()
    except MissingInputs as absent:
        for note in notes:
            st.info(note, icon=":material/info:")
        missing = absent.missing
        st.info(f"Missing: {', '.join(missing)}. Give every input, or let the model decide without them.")
        if len(missing) == len(config.modalities) or not st.checkbox(
            "Decide without the missing inputs", key="upload_drop_missing",
            help="Each missing input is replaced by its training average: the same as switching it off "
                 "(\"drop\") in the Modality lab. The decision then rests on the inputs given.",
        ):  # fmt: skip
            st.stop()
        case = Case.from_upload(config.modalities, contents, means=lens.model.input_means(), file_names=file_names)
        st.warning(f"Treated as dropped (training average): {', '.join(missing)}. "
                   "This decision is not the one the model would make with every input.")  # fmt: skip
    else:
        for note in notes:
            st.info(note, icon=":material/info:")
    st.session_state["uploaded_case"] = {"model": entry.checksum, "case": case}

solved = lens.decide(case)
trajectory = solved.trajectory
predicted = int(solved.probabilities.argmax())
truth = config.class_names[case.label] if case.label is not None else None

# --------------------------------------------------------------------------- the case as a person sees it
# The decision column is written first: the decision shows as soon as the case is solved,
# before the input charts beside it are built (the layout is the same).
left, right = st.columns([3, 2], gap="large")
with right:
    st.subheader("The decision")
    confidence = float(solved.probabilities[predicted])
    verdict = "" if truth is None else (" ✓ correct" if config.class_names[predicted] == truth else f" ✗ wrong (truth: {truth})")
    st.markdown(f"#### {config.class_names[predicted]} · {confidence:.1%}{verdict}")
    chart(plots.probabilities(config.class_names, solved.probabilities, truth, height=230), "insp_probabilities")
    if trajectory.converged:
        st.success(f"The equilibrium settled in {trajectory.iterations} iterations.", icon=":material/check_circle:")
    else:
        st.warning(
            f"The solver did not settle ({trajectory.status.replace('_', ' ')}) after {trajectory.iterations} "
            "iterations: the decision may change with more solver effort. Try it on the Convergence tuning page.",
            icon=":material/warning:",
        )
with left:
    st.subheader("The inputs")
    images = [(i, m) for i, m in enumerate(config.modalities) if m.kind == "image"]
    series = [(i, m) for i, m in enumerate(config.modalities) if m.kind == "timeseries"]
    texts = [(i, m) for i, m in enumerate(config.modalities) if m.kind == "text"]
    vectors = [(i, m) for i, m in enumerate(config.modalities) if m.kind == "vector"]
    if images or series:
        cols = st.columns([2, 3]) if images and series else [st.container()]
        for i, m in images:
            with cols[0]:
                chart(plots.picture(np.asarray(case.inputs[i][0]).mean(axis=0), m.name, height=260), f"insp_input_{m.name}")
        for i, m in series:
            with cols[-1]:
                chart(plots.sensor_traces(np.asarray(case.inputs[i][0]), m.feature_names, height=260), f"insp_input_{m.name}")
    for i, m in texts:
        note = case.texts.get(m.name) or " ".join(token_strings(case.inputs[i][0].tolist(), m.vocabulary))
        st.markdown(f"**{m.name}**")
        st.markdown(f"> {note}")
    if vectors:
        tabs = st.tabs([m.name for _, m in vectors])
        for tab, (i, m) in zip(tabs, vectors):
            with tab:
                chart(plots.vector_bars(np.asarray(case.inputs[i][0]), feature_names(m), height=200), f"insp_input_{m.name}")

# --------------------------------------------------------------------------- the equilibrium
st.subheader("How the model reached it", help="The model starts every input at zero and repeats one fusion step "
             "until the combined state stops changing (the equilibrium). These charts follow that search.")  # fmt: skip
tolerance, stop_mode = config.solver.tol, config.solver.stop_mode
a, b = st.columns(2)
with a:
    st.markdown("**Residual per iteration**", help="How much one more fusion step would still change the state. "
                "The search stops below the tolerance (dashed).")  # fmt: skip
    chart(plots.residuals([frames.residual_frame(trajectory)], tolerance, stop_mode, height=260), "insp_residuals")
with b:
    st.markdown("**Class probabilities at every iteration**",
                help="What the model would decide if it stopped at that iteration. After the lock-in the decision never changes.")  # fmt: skip
    chart(plots.probability_path(frames.probability_frame(trajectory), trajectory.lock_in_iteration, height=260), "insp_probability_path")

change, share = frames.modality_dynamics(trajectory)
st.markdown("**Per input: how much it still moves, and how much of the fused state it supports**",
            help="Left: size of each part's step. Right: gate share, the model's own weighting of each input in the fused state.")  # fmt: skip
chart(plots.modality_dynamics(change, share, height=260), "insp_dynamics")
if share.empty:
    st.caption(frames.NO_GATE_SHARES_NOTE)

path = frames.principal_path(frames.fused_states(trajectory))


@st.fragment
def replay() -> None:
    """The path with its replay slider; moving the slider reruns only this part of the page."""
    c, d = st.columns([1, 3])
    with c:
        st.markdown("**The fused state's path**",
                    help="The fused state at each iteration, projected on the two directions it moved most (PCA of this path).")  # fmt: skip
        last = trajectory.iterations - 1
        upto = st.slider("Replay up to iteration", 0, max(last, 1), max(last, 1), key="insp_iteration", disabled=last < 1)
        upto = min(upto, last)
        step_probabilities = np.asarray(trajectory.probabilities[upto])
        st.caption(
            f"At iteration {upto} the model would say **{config.class_names[int(step_probabilities.argmax())]}** "
            f"({step_probabilities.max():.1%}); relative residual {float(trajectory.relative_residuals[upto]):.1e}."
        )
    with d:
        chart(plots.fused_path(path.frame(), path.explained, upto, height=300), "insp_path")


replay()

# --------------------------------------------------------------------------- attributions
st.subheader("Why", help="Integrated Gradients (IG) attribute the decision to every pixel, reading and word; "
             "modality Shapley values share it between the inputs.")  # fmt: skip
settings = st.columns(3)
# The decided class first, then the others from the most to the least likely: the order the
# background job explains them in (resources.other_classes_job), so the first alternative listed
# is the first one ready.
by_likelihood = [config.class_names[i] for i in np.argsort(-np.asarray(solved.probabilities), kind="stable")]
target_name = settings[0].selectbox("Explain the class", by_likelihood, index=0, key=f"insp_target_{case.key}",
                                    help="By default the class the model decided; the others follow from the most "
                                    "to the least likely.")  # fmt: skip
n_steps = settings[1].select_slider("Integration steps", sorted({16, 32, 64, DEFAULT_STEPS}), value=DEFAULT_STEPS, key="insp_steps",
                                    help="More steps make IG's sum closer to the exact change (smaller delta), at more cost.")  # fmt: skip
baseline_names = ["default", *BASELINES]
baseline = settings[2].selectbox("Compared with", baseline_names, key="insp_baseline",
                                 format_func=lambda b: "each input's default" if b == "default" else f"{b}: {BASELINES[b].description}",
                                 help="What 'absent' means for the attribution: the input is compared with this baseline.")  # fmt: skip
baseline_choice = None if baseline == "default" else baseline
with st.spinner(f"Explaining {case.key}: Integrated Gradients over {n_steps} steps and every combination of inputs…"):
    explanation = lens.explain(case, config.class_names.index(target_name), n_steps, baseline_choice)
shapley = explanation.shapley
attribution = explanation.attribution
e, f = st.columns([3, 2])
with e:
    st.markdown(f"**Each input's contribution to P({target_name})**",
                help="Exact Shapley values: the average change in this probability when the input is added to the others. "
                "Interactions: more than the sum of two inputs alone (red) or less (blue).")  # fmt: skip
    chart(plots.shapley(shapley.modality_names, np.asarray(shapley.values), np.asarray(shapley.interactions), height=280), "insp_shapley")
with f:
    st.markdown("**The model's own weighting at the equilibrium**", help="Gate share of each input in the final fused "
                "state. " + frames.ABSENT_INPUT)  # fmt: skip
    if trajectory.has_gates:
        final_share = np.asarray(trajectory.gate_share()[-1])
        chart(plots.gate_share_bars(config.modality_names, final_share, height=280), "insp_gate_share")
    else:
        st.info(frames.NO_GATE_SHARES_NOTE)

reference = resources.ideal_reference(entry, case, config.class_names.index(target_name))
if reference is not None:
    st.markdown("**Against the ideal classifier**",
                help="This case comes from the inspection generator, which records what each input truly shows. The ideal "
                "classifier reads that perfectly and weighs it by Bayes' rule; its Shapley values are what a model that "
                "read the evidence perfectly would give. A different ranking is worth a look, not proof of an error: "
                "where two inputs both settle the case, their order is a near tie.")  # fmt: skip
    comparison = frames.ideal_comparison(shapley, reference)
    st.caption(reference.sentence(dict(zip(shapley.modality_names, shapley.values.tolist()))))
    st.dataframe(comparison, hide_index=True, key="insp_ideal", column_config={
        "model": st.column_config.NumberColumn("model's Shapley value", format="%+.3f"),
        "ideal": st.column_config.NumberColumn("ideal's Shapley value", format="%+.3f"),
    })  # fmt: skip

maps = st.columns(2)
slot = 0
shown = frames.shown_maps(attribution.maps, [m.kind for m in config.modalities])
bound = plots.attribution_bound(shown)  # one colour scale for every input of this case
quiet = frames.evidence_notes(shown, config.modality_names)
for i, m in enumerate(config.modalities):
    attribution_map = np.asarray(attribution.maps[i], dtype=float)
    with maps[slot % 2]:
        if m.kind == "image":
            st.markdown(f"**{m.name}: where the evidence is**", help="Red raises the explained class, blue lowers it. "
                        "Colours are on the case's scale (its largest attribution over every input). Against the "
                        "default all-black baseline, the border pixels of a plain photo pick up a faint frame: the "
                        "encoder pads with the training mean, so only the black baseline has an edge there "
                        "(docs/edges.md). Compare with 'mean' to remove it.")  # fmt: skip
            chart(plots.picture(np.asarray(case.inputs[i][0]).mean(axis=0), overlay=shown[i], height=300, bound=bound), f"insp_attr_{m.name}")
        elif m.kind == "timeseries":
            st.markdown(f"**{m.name}: when the evidence is**", help="Each reading coloured by its attribution: red for, blue against.")
            chart(plots.sensor_traces(np.asarray(case.inputs[i][0]), m.feature_names, attribution_map, height=300, bound=bound), f"insp_attr_{m.name}")
        elif m.kind == "text":
            st.markdown(f"**{m.name}: which words count**", help="Red words support the explained class, blue words speak against it.")
            tokens = attribution.tokens[i] or ()
            keep = [k for k, t in enumerate(tokens) if t != "<pad>"]
            st.html(plots.token_html([tokens[k] for k in keep], attribution_map[keep], bound=bound))
        else:
            st.markdown(f"**{m.name}: strongest features**")
            top = top_features(attribution, i, k=10)
            chart(plots.top_features([s.name for s in top], [s.score for s in top], height=260, bound=bound), f"insp_attr_{m.name}")
        if m.name in quiet:
            st.caption(quiet[m.name])
    slot += 1

# --------------------------------------------------------------------------- trust
st.subheader("How far to trust it")
reliability = explanation.reliability
t = st.columns(4)
t[0].metric("Solver", "converged" if reliability.converged else reliability.status.replace("_", " "),
            help="Whether the equilibrium met its tolerance.")  # fmt: skip
residual = reliability.final_relative_residual
t[1].metric("Final residual", "n/a" if residual is None else f"{residual:.1e}",
            help=f"Relative change one more fusion step would make; the tolerance is {tolerance:g}.")  # fmt: skip
t[2].metric("IG delta", f"{reliability.ig_relative_delta:.1%}" if np.isfinite(reliability.ig_relative_delta) else "∞",
            help="How far the attributions' sum misses the actual change of the output (Integrated Gradients' "
            "convergence delta, relative). Under 1% is complete.")  # fmt: skip
t[3].metric("Shapley check", f"{abs(shapley.efficiency_gap):.1e}",
            help="Shapley values must add up to the change from no input to all inputs; this is the gap.")  # fmt: skip
if reliability.reliable:
    st.success("Every solve behind this explanation settled and the attributions add up: it can be trusted as far as "
               "these checks go.", icon=":material/verified:")  # fmt: skip
for warning in reliability.warnings:
    st.warning(warning, icon=":material/warning:")
st.caption(f"Explained in {explanation.seconds:.1f} s (cached for this case and these settings).")
if config.architecture == "deq":
    stability = lens.stability(case)
    trusted, lines = stability.verdict()
    local, unique = stability.local, stability.uniqueness
    s = st.columns(3)
    s[0].metric("Spectral radius", f"{local.spectral_radius:.2f}",
                help="Largest eigenvalue modulus of the fusion step's Jacobian at the equilibrium: below 1, a nudged "
                "state is pulled back by about this factor per step.")  # fmt: skip
    s[1].metric("Equilibria found", str(unique.n_equilibria), help=f"Distinct end states of the same case solved from "
                f"{unique.n_starts} starts: zero, other classes' typical equilibria, and noise.")  # fmt: skip
    amplification = local.gradient_amplification
    s[2].metric("Gradient amplification", "n/a" if amplification is None else f"{amplification:.2f}×",
                help="How much the implicit gradient's solve (I - J)^-T enlarges the decided class's gradient.")  # fmt: skip
    sentence = "Equilibrium: " + "; ".join(line for line in lines if not line.startswith("warning"))
    (st.success if trusted else st.info)(sentence, icon=":material/verified:" if trusted else ":material/info:")
    for line in lines:
        if line.startswith("warning"):
            st.warning("Equilibrium " + line, icon=":material/warning:")
    with st.expander(f"The {unique.n_starts} starts"):
        st.dataframe(frames.stability_starts(stability), hide_index=True)
        st.caption(f"Distance: to the zero start's equilibrium, relative; within {unique.same_distance:.0e} counts as the "
                   f"same. Computed in {(stability.seconds_local + stability.seconds_uniqueness) * 1e3:.0f} ms.")  # fmt: skip

# --------------------------------------------------------------------------- report
st.subheader("Decision report", help="Everything above for this case, with the hashes that let it be checked later.")
target_index = config.class_names.index(target_name)
report_panel(
    entry, case, "insp_report", explanation=explanation,
    settings=ReportSettings(n_steps=n_steps, baseline=None if baseline == "default" else baseline, target=target_index),
    identity=(target_index, n_steps, baseline),
)  # fmt: skip
# After the page: explain the case's other classes in the background, so choosing one in
# "Explain the class" is a look-up (queued once per case and settings, never repeated).
resources.other_classes_job(entry, case, n_steps, baseline_choice)
