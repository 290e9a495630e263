"""The decision report as a PDF, built from its record alone.

The PDF is a rendering of ``report.json`` (a ``ReportRecord``), not of the HTML page:
every figure in it is a field of the signed record, so the PDF says nothing the
record cannot back, and ``report_sha256`` on its first page ties the paper copy to
the verifiable file (``deq-lens audit verify report.json``). Figures: the class
probabilities, the modality Shapley values, and the solver's residual per
iteration with its tolerance (DEQ-type models).

    deq-lens audit report --model M --case ID --out DIR --pdf   # report.pdf beside report.json
    deq-lens audit pdf DIR/report.json                          # a PDF of an existing report
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deq_core.audit.record import ReportRecord
from deq_core.pdf import BLUE, GREY, RED, Document

PDF_NAME = "report.pdf"


def _record(report: Any) -> ReportRecord:
    """A ``ReportRecord`` from a record, a ``DecisionReport``, its JSON dict or a report.json path."""
    if isinstance(report, ReportRecord):
        return report
    if hasattr(report, "data") and isinstance(report.data, ReportRecord):
        return report.data
    if isinstance(report, (str, Path)):
        import json

        report = json.loads(Path(report).read_text(encoding="utf-8"))
    if isinstance(report, Mapping):
        return ReportRecord.from_dict(report)
    raise TypeError(f"cannot make a PDF of a {type(report).__name__}")


def report_pdf(report: Any) -> bytes:
    """The decision report as PDF bytes: decision, reliability, evidence, solver path, provenance."""
    r = _record(report)
    p, rel, a = r.prediction, r.reliability, r.attribution
    doc = Document(f"Decision report: case {r.case_id}",
                   f"report_sha256 {r.report_sha256 or '(not sealed)'} - created {r.created_at}")  # fmt: skip
    doc.heading("Decision")
    truth = f"; the recorded true class is {p.label}" if p.label else ""
    doc.paragraph(f"{r.model.name} decided {p.class_name} with probability {p.confidence:.1%}{truth}.")
    names = sorted(p.probabilities, key=lambda n: (-p.probabilities[n], n))  # JSON keys come back sorted: rank instead
    doc.bars("Class probabilities (most likely first)", names, [p.probabilities[n] for n in names],
             colours=[BLUE if n == p.class_name else GREY for n in names])  # fmt: skip
    doc.heading("How far to trust it")
    lines = [f"Reliable: {'yes' if rel.reliable else 'no'}; solver {rel.status} after {rel.iterations} iterations"
             + (f", final relative residual {rel.final_relative_residual:.2e}" if rel.final_relative_residual is not None else "")
             + ".",
             f"Attributions complete (sum to the output change): {'yes' if rel.ig_complete else 'no'}"
             + (f" (relative gap {rel.ig_relative_delta:.1%})" if rel.ig_relative_delta is not None else "") + "."]  # fmt: skip
    doc.bullets(lines + [f"Warning: {w}" for w in rel.warnings])
    stability = getattr(r, "stability", None)  # reports that carry the fixed point's stability
    if stability is not None:
        doc.paragraph(f"Stability of the fixed point: {stability}")
    doc.heading(f"Evidence for {a.target_class}")
    order = [m.name for m in r.inputs.modalities]
    modalities = sorted(a.shapley, key=lambda m: order.index(m) if m in order else len(order))
    values = [a.shapley[m] for m in modalities]
    biggest = max((abs(v) for v in values), default=0.0) or 1.0
    doc.bars("Modality Shapley values (share of the largest; red: against the class)", modalities,
             [abs(v) / biggest for v in values], colours=[BLUE if v >= 0 else RED for v in values])  # fmt: skip
    doc.table(("input", "Shapley value", "Integrated Gradients total"),
              [(m, f"{a.shapley[m]:+.4f}", f"{a.ig_totals.get(m, float('nan')):+.4f}") for m in modalities])  # fmt: skip
    features = [(m, f.name, f"{f.score:+.4f}") for m in modalities for f in a.top_features.get(m, ())[:3]]
    if features:
        doc.table(("input", "top feature", "attribution"), features)
    if r.trajectory is not None:
        t = r.trajectory
        doc.heading("The equilibrium search")
        doc.paragraph(f"{t.iterations} iterations, status {t.status}, best iterate {t.best_iteration}"
                      + (f", decision locked in at iteration {t.lock_in_iteration}" if t.lock_in_iteration is not None else "")
                      + ".")  # fmt: skip
        doc.line_chart("Relative residual per iteration (log scale; dashed: the solver's tolerance)",
                       list(t.relative_residuals), marker=r.settings.solver.tol)  # fmt: skip
    if r.corruption is not None:
        doc.heading("Inputs altered before the decision")
        doc.bullets(list(r.corruption.description))
    doc.heading("Provenance")
    e = r.environment
    doc.bullets([
        f"Model {r.model.name} ({r.model.architecture}), checksum {r.model.checksum}.",
        f"Inputs: {', '.join(f'{m.name} {m.kind}' for m in r.inputs.modalities)}; hashes in report.json.",
        f"Settings: {r.settings.n_steps} integration steps, seed {r.settings.seed}, solver tolerance {r.settings.solver.tol:g}.",
        f"Environment: deq_core {e.deq_core}, torch {e.torch}, python {e.python}, {e.device}.",
        "Signed and recorded in the audit log." if r.signature is not None else "Not issued: not signed or logged.",
        "Verify with: deq-lens audit verify report.json",
    ])  # fmt: skip
    return doc.output()


def write_report_pdf(report: Any, path: str | Path) -> Path:
    """Write ``report_pdf(report)`` to ``path`` (a folder gets ``report.pdf`` inside)."""
    target = Path(path)
    if target.is_dir():
        target = target / PDF_NAME
    target.write_bytes(report_pdf(report))
    return target
