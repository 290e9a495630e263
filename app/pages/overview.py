"""Overview (executive): what the model is, how it compares, how robust it is, what it saves."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import card_panel, cost_panel, frames, plots, resources
from app.widgets import chart, show_table, table_with_download
from deq_core import compare_predictions



def cases(n: int) -> str:
    return f"{n} case{'' if n == 1 else 's'}"


entry = resources.require_model()
lens = resources.lens(entry)
config = lens.config
data = resources.test_data(entry)
metrics = resources.training_metrics(entry)

st.title("Overview")
st.markdown(
    f"**{entry.name}** reads {len(config.modalities)} kinds of input for each case "
    f"({', '.join(m.name for m in config.modalities)}) and decides between {len(config.class_names)} classes. "
    "The inputs are combined by searching for a stable *equilibrium* instead of a single pass.",
    help="A deep-equilibrium (DEQ) model repeats one fusion step until the combined state stops changing, "
    "then decides from that fixed point.",
)

# --------------------------------------------------------------------------- model card
st.subheader("Model card")
card = st.columns(4)
card[0].metric("Test cases", f"{len(data):,}", help=f"Cases of the {Path(config.dataset).name} test split the figures below use.")
card[0].caption(f"Data: **{Path(config.dataset).name}**  \nClasses: {', '.join(config.class_names)}")
card[1].metric("Inputs", len(config.modalities), help="Modalities: the separate kinds of evidence per case.")
card[1].caption("  \n".join(f"**{m.name}**: {m.kind} {'×'.join(map(str, m.shape))}" for m in config.modalities))
if metrics:
    settings = metrics.get("settings", {})
    card[2].metric(
        "Validation accuracy", f"{metrics.get('val_accuracy', float('nan')):.1%}",
        help="Accuracy on the validation split the best epoch was chosen on (never the test split).",
    )  # fmt: skip
    card[2].caption(
        f"Best epoch {metrics.get('best_epoch', '?')} of {settings.get('epochs', '?')}, width {settings.get('width', '?')}  \n"
        f"{metrics.get('train_cases', '?')} training cases, {metrics.get('training_seconds', '?')} s on {metrics.get('device', '?')}"
    )
else:
    card[2].metric("Validation accuracy", "n/a", help="metrics.json is missing from the model folder.")
card[3].metric("Checksum", entry.checksum[:8], help=f"SHA-256 over the weights and config: {entry.checksum}")
card[3].caption(f"{entry.architecture.replace('_', '-')} fusion  \n`{entry.folder}`")
card_box = st.container()  # the stability share and the card's downloads: measured in the background, filled last

# --------------------------------------------------------------------------- DEQ vs baselines
st.subheader("The DEQ against its baselines")
siblings = resources.baselines_of(entry)
evaluations, predictions = {}, {}
for sibling in siblings.values():
    result = resources.wait_for(resources.evaluation_job(sibling), f"Evaluating {sibling.name} on {len(data)} test cases")
    if result is not None:
        evaluations[sibling.name], predictions[sibling.name] = result
if len(siblings) < 2:
    st.info(
        "No baselines were found beside this model. Train them into the same folder as "
        f"`{Path(entry.folder).parent}/<dataset>-weight_tied`, `-early` and `-late` to compare."
    )
table = frames.evaluation_table(evaluations, {s.name: s.encoders for s in siblings.values()})
deq = siblings.get("deq", entry)
if len(table):
    best_other = table[table["model"] != deq.name].sort_values("accuracy", ascending=False).head(1)
    deq_row = table[table["model"] == deq.name]
    if len(deq_row) and len(best_other):
        gap = float(deq_row["accuracy"].iloc[0] - best_other["accuracy"].iloc[0])
        best_name = best_other["model"].iloc[0]
        paired = compare_predictions(predictions[deq.name], predictions[best_name], deq.name, best_name)
        st.markdown(
            f"The DEQ decides **{frames.percent(deq_row['accuracy'].iloc[0])}** of the test cases correctly, "
            f"**{frames.against_phrase(gap)}** the best baseline ({best_name}, {frames.percent(best_other['accuracy'].iloc[0])}). "
            f"On the same cases the DEQ alone is right on {cases(paired.only_model)} and {best_name} alone "
            f"on {cases(paired.only_other)}; a paired test gives p = {paired.p_value:.2f}, {paired.verdict}.",
            help="McNemar's exact test: if neither model were better, each case only one of them gets right "
            "would be equally likely to go either way. A small p means the split is too lopsided for chance. "
            "CLI: python -m deq_core.evaluate --model DEQ_FOLDER --compare OTHER_FOLDER",
        )
    left, right = st.columns([3, 2])
    with left:
        chart(plots.baseline_comparison(table), "overview_comparison")
    with right:
        chart(plots.latency_iterations(table), "overview_latency")
    show_table(frames.display(table.dropna(axis=1, how="all"), frames.MODEL_COLUMNS), "overview_models",
               f"{deq.name}-comparison.csv")  # fmt: skip
    if caption := frames.encoders_caption(table):
        st.caption(caption)

# The robustness sweep takes longest: its section is laid out here but filled last.
st.subheader("Robustness at a glance")
robustness_box = st.container()

# --------------------------------------------------------------------------- cost calculator
st.subheader("What the errors cost")
normal = config.normal_class
inputs = st.columns(4)
prices = cost_panel.price_inputs(inputs[:3], normal)
others = [name for name in evaluations if name != deq.name]
if deq.name in evaluations and others:
    baseline = cost_panel.baseline_select(inputs[3], others, {n: evaluations[n].accuracy for n in evaluations}, deq.name)
    comparison = cost_panel.compare_on_test(predictions, prices, config.class_names, normal, deq.name, baseline,
                                            identity=tuple((e.name, e.checksum) for e in siblings.values()))  # fmt: skip
    cost_panel.show_saving(comparison, deq.name, baseline)
    cost_table = frames.monthly_cost_table(evaluations, cost_panel.as_cost_inputs(prices), normal)
    left, right = st.columns([3, 2])
    with left:
        chart(plots.monthly_cost(cost_table), "overview_cost")
    with right:
        chart(plots.cost_intervals({n: (c.value, c.low, c.high) for n, c in comparison.costs.items()}, deq.name,
                                   title="cost per month, 95% interval"), "overview_cost_intervals")  # fmt: skip
    with st.expander("The cost table"):
        table_with_download(cost_panel.with_intervals(cost_table, comparison), "overview_cost", f"{deq.name}-monthly-cost.csv")
else:
    inputs[3].caption("A saving needs the DEQ and at least one baseline.")

# --------------------------------------------------------------------------- robustness summary (filled last)
with robustness_box:
    job, detail = resources.robustness_job(entry)
    report = resources.wait_for(job, f"Running the robustness sweep ({detail})")
    if report is not None:
        grades = frames.robustness_grades(report.summary, entry.name)
        st.caption(
            f"How much accuracy {entry.name} keeps when one input is degraded, averaged over "
            f"{sum(len(v) for v in report.corruptions.values())} kinds of damage at severities "
            f"{', '.join(f'{s:g}' for s in report.severities)}. Details on the Robustness page."
        )
        rows = list(grades.itertuples(index=False))
        per_line = 3 if len(rows) > 4 else max(len(rows), 1)  # six handwritten views read better as two lines
        columns = [c for start in range(0, len(rows), per_line) for c in st.columns(per_line)]
        for column, row in zip(columns, rows):
            column.metric(
                f"{row.modality}: {row.verdict}", row.grade, help=row.sentence, border=True,
                delta=f"keeps {row.retained_accuracy:.0%} of its accuracy", delta_color="off", delta_arrow="off",
            )  # fmt: skip

# --------------------------------------------------------------------------- model card downloads (filled last)
with card_box:
    card_panel.card_section(entry)
