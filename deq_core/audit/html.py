"""A report's human side: the self-contained HTML page and the plain-language summary.

Both are pure functions of the JSON record, so a page can be redrawn from a
report file alone; the page's CSS is one constant (``CSS``). plotly.js (about
4.9 MB) is either inlined, for a page handed out alone (a download), or read from
``plotly.min.js`` beside the reports, one copy for a whole folder of them, so a
report on disk stays near 100 KB; both open offline. Without the script the tables
still carry every figure, and the page says why its charts are missing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from deq_core.audit.record import ReportRecord, as_record

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.85em;word-break:break-all}
.summary{background:#f6f8fa;border-left:4px solid #2e6da4;padding:.8em 1em}.warn{background:#fff8e1;border-left:4px solid #e6a700;padding:.6em 1em;margin:.4em 0}
.ok{background:#eef8ee;border-left:4px solid #2e8b57;padding:.6em 1em}.figures{display:grid;grid-template-columns:1fr 1fr;gap:.5em}
.meta{color:#666;font-size:.9em}
@media print{body{max-width:none;margin:0}.figures{display:block}.figure{page-break-inside:avoid}h2{page-break-after:avoid}
table{page-break-inside:avoid}a{color:inherit;text-decoration:none}}
"""


PLOTLY_JS = "plotly.min.js"  # the script file written beside reports that do not inline it
FIGURE_HEIGHT = 300  # two figures side by side on a 1000 px page, or one per printed half page


def _table(header: Sequence[str], rows: Sequence[Sequence], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if j in numeric else ''}>{html.escape(str(c))}</td>" for j, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plain_summary(record: ReportRecord | Mapping) -> str:
    """Two or three sentences a person without the model's vocabulary can read."""
    record = as_record(record)
    prediction, attribution = record.prediction, record.attribution
    text = (f"For case {record.case_id}, the model {record.model.name} decided “{prediction.class_name}” with "
            f"{prediction.confidence:.0%} confidence.")  # fmt: skip
    if prediction.label is not None:
        text += (" This is correct." if prediction.label == prediction.class_name
                 else f" The recorded answer is “{prediction.label}”: the model is wrong.")  # fmt: skip
    values = attribution.shapley
    if values:
        strongest = max(values, key=lambda n: abs(values[n]))
        direction = "for" if values[strongest] >= 0 else "against"
        text += (f" The input that weighed most was “{strongest}” ({direction} “{attribution.target_class}”, "
                 f"{values[strongest]:+.3f} in probability).")  # fmt: skip
    trajectory = record.trajectory
    if trajectory is not None:
        text += (f" The equilibrium search settled in {trajectory.iterations} iterations." if trajectory.converged
                 else f" The equilibrium search did not settle ({trajectory.status}): treat the decision with caution.")  # fmt: skip
    reference = record.ideal_reference
    if reference is not None:
        shows = ", ".join(f"{name}: {what}" for name, what in reference.shows.items())
        text += f" What the inputs truly show (the generator's record): {shows}. {reference.sentence}"
    if record.corruption is not None:
        text += " The inputs were deliberately altered before the decision: " + "; ".join(record.corruption.description) + "."
    return text


def _figures(record: ReportRecord) -> list:
    """The page's figures, drawn from the record alone by the app's own builders (``deq_core.figures``)."""
    import pandas as pd

    from deq_core import figures

    prediction, attribution = record.prediction, record.attribution
    classes = list(prediction.probabilities)
    made = [
        figures.probabilities(classes, list(prediction.probabilities.values()), truth=prediction.label,
                              height=FIGURE_HEIGHT, title="What the model decided"),
        figures.shapley(list(attribution.shapley), list(attribution.shapley.values()), attribution.shapley_interactions,
                        height=FIGURE_HEIGHT, title=f"Each input's contribution to P({attribution.target_class})"),
    ]  # fmt: skip
    trajectory = record.trajectory
    if trajectory is not None:
        steps = range(len(trajectory.relative_residuals))
        residual = pd.DataFrame({"iteration": steps, "relative": trajectory.relative_residuals, "run": ""})
        made.append(figures.residuals([residual], record.settings.solver.tol, "rel", height=FIGURE_HEIGHT,
                                      title="How the equilibrium search settled"))  # fmt: skip
        path = pd.DataFrame([{"iteration": i, "class": name, "probability": p}
                             for i, row in enumerate(trajectory.probabilities) for name, p in zip(classes, row)])  # fmt: skip
        made.append(figures.probability_path(path, trajectory.lock_in_iteration, height=FIGURE_HEIGHT,
                                             title="The decision at every iteration"))  # fmt: skip
    return made


def plotly_script() -> str:
    """The plotly.js that ``render_html`` inlines or refers to: the copy installed with plotly (no download)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_html(record: ReportRecord | Mapping, plotly_js: str | None = None) -> str:
    """The report as one HTML page that opens offline.

    ``plotly_js``: None inlines plotly.js once (a self-contained page, ~5 MB); else the
    relative URL of the script (``plotly.min.js`` beside the report, ``../plotly.min.js``
    for one copy in the parent folder), written there by ``DecisionReport.write``.
    """
    import plotly.io

    record = as_record(record)
    prediction, attribution, reliability = record.prediction, record.attribution, record.reliability
    parts = []
    if plotly_js is not None:
        parts.append(f'<script src="{html.escape(plotly_js, quote=True)}" charset="utf-8"></script>'
                     '<div class="warn" id="no-plotly">The charts need plotly.js, which this page reads from '
                     f'<code>{html.escape(plotly_js)}</code> beside it; that file is not there. The tables carry '
                     'every figure; copy the file beside the report to see the charts.</div>'
                     '<script>if (window.Plotly) {document.getElementById("no-plotly").remove();}</script>')  # fmt: skip
    for i, figure in enumerate(_figures(record)):
        parts.append('<div class="figure">' + plotly.io.to_html(
            figure, full_html=False, include_plotlyjs=(i == 0 and plotly_js is None),
            config={"displaylogo": False, "responsive": True}) + "</div>")  # fmt: skip
    warnings = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in reliability.warnings)
    verdict = warnings or '<div class="ok">Every solve behind this explanation settled and the attributions add up.</div>'
    residual = reliability.final_relative_residual
    trust_rows = [
        ("Solver", reliability.status),
        ("Iterations", reliability.iterations),
        ("Final relative residual", "n/a" if residual is None else f"{residual:.2e}"),
        ("Integrated Gradients delta", "n/a" if reliability.ig_delta is None else f"{reliability.ig_delta:.2e}"),
        ("Attributions complete (within 1%)", "yes" if reliability.ig_complete else "no"),
        ("All solves converged", "yes" if reliability.solves_converged else "no"),
    ]
    trajectory = record.trajectory
    if trajectory is not None:
        trust_rows.append(("Decision locked in at iteration", trajectory.lock_in_iteration))
    trust_rows += _stability_rows(record)
    top_rows = [(name, f.name, f"{f.score:+.4g}") for name, feats in attribution.top_features.items() for f in feats[:5]]
    model = record.model
    provenance = [
        ("Model", f"{model.name} ({model.architecture})"),
        ("Model checksum", model.checksum),
        *[(f"SHA-256 of {name}", digest) for name, digest in model.files.items()],
        *[(f"SHA-256 of input {m.name}", m.sha256) for m in record.inputs.modalities],
    ]
    if record.corruption is not None:
        provenance.append(("SHA-256 of the corruption spec", record.corruption.sha256))
    env, settings = record.environment, record.settings
    provenance += [
        ("Device / libraries", f"{env.device}; Python {env.python}, torch {env.torch}, captum {env.captum}, numpy {env.numpy}"),
        ("Explanation settings", f"{settings.n_steps} IG steps, baseline {settings.baseline or 'default'}, seed {settings.seed}"),
        ("Report SHA-256", record.report_sha256),
    ]  # fmt: skip
    texts = "".join(f"<p><b>{html.escape(k)}:</b> {html.escape(v)}</p>" for k, v in record.inputs.texts.items())
    title = f"Decision report: {record.case_id}"
    shapley_rows = [(n, f"{v:+.5f}", f"{attribution.ig_totals[n]:+.5f}") for n, v in attribution.shapley.items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Created {html.escape(record.created_at)} · DEQ Fusion Lens {html.escape(env.deq_core)}</p>
<div class="summary">{html.escape(plain_summary(record))}</div>
<h2>The decision</h2>
{_table(["Class", "Probability"], [(c, f"{p:.4f}") for c, p in prediction.probabilities.items()], numeric=(1,))}
{texts}
<h2>Why</h2>
<p>Each input's contribution to P({html.escape(attribution.target_class)}) (exact modality Shapley values), and the
strongest individual features (Integrated Gradients on the {html.escape(attribution.ig_output)}).</p>
{_table(["Input", "Shapley value", "IG total"], shapley_rows, numeric=(1, 2))}
{_table(["Input", "Feature", "Score"], top_rows, numeric=(2,))}
{_ideal_section(record)}
<div class="figures">{''.join(parts)}</div>
<h2>How far to trust it</h2>
{verdict}
{_table(["Check", "Result"], trust_rows)}
<h2>Provenance</h2>
<p>Check this report with <code>python -m deq_core.audit verify report.json</code>: it re-runs the decision from the
inputs and settings recorded in the JSON file and compares.</p>
{_table(["What", "Value"], provenance)}
</body></html>
"""


def _stability_rows(record: ReportRecord) -> list[tuple[str, str]]:
    """The fixed point's stability and uniqueness, as rows of the "How far to trust it" table."""
    found = record.stability
    if found is None:
        return []
    if found.stable:
        rate = f"stable: contracts by {found.spectral_radius:.2f} per step"
        if found.iterations_to_tol is not None:
            rate += f" (~{found.iterations_to_tol:.0f} plain steps to the tolerance)"
    else:
        rate = f"NOT locally stable: spectral radius {found.spectral_radius:.2f} (>= 1)"
    n = len(found.starts)
    if found.unique:
        unique = f"the only equilibrium found from {n} starts"
    else:
        unique = (f"{found.n_equilibria} distinct equilibria from {n} starts, "
                  f"{sum(found.start_converged)} of {n} settled")  # fmt: skip
    if not found.decision_unique:
        unique += "; other starts decide " + ", ".join(sorted(set(found.start_decisions) - {record.prediction.class_name}))
    rows = [("Equilibrium (Jacobian spectral radius)", rate), ("Uniqueness", unique)]
    if found.gradient_amplification is not None:
        rows.append(("Implicit gradient amplification", f"{found.gradient_amplification:.2f}x"))
    return rows


def _ideal_section(record: ReportRecord) -> str:
    reference = record.ideal_reference
    if reference is None:
        return ""
    model_values = record.attribution.shapley
    rows = [(name, reference.shows[name], f"{model_values[name]:+.5f}", f"{value:+.5f}")
            for name, value in reference.shapley.items()]  # fmt: skip
    return (
        f"<h2>Against the ideal classifier</h2><p>This case comes from the inspection generator, which records what "
        f"each input truly shows; the ideal classifier reads that perfectly and weighs it by Bayes' rule. "
        f"{html.escape(reference.sentence)}</p>"
        + _table(["Input", "What it truly shows", "Model's Shapley value", "Ideal's Shapley value"], rows, numeric=(2, 3))
    )
