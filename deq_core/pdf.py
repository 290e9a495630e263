"""PDF documents for the file: the model card here, the decision report in ``deq_core.audit.pdf``.

An auditor's file takes PDFs, not HTML pages. They are written with fpdf2 (a
maintained, pure-Python library) using only the PDF core fonts, so nothing is
downloaded and no font file has to be shipped; the core fonts cover Latin-1, so
text is mapped to it (``latin1``) instead of failing on a EUR sign. Figures are
drawn as vector bars and lines from the same numbers the tables print, so the
PDF needs no browser or image renderer.

fpdf2 is imported inside the functions that use it: ``import deq_core`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from deq_core.card import ModelCard

_REPLACE = {"€": "EUR ", "−": "-", "–": "-", "—": "-", "×": "x", "≥": ">=", "≤": "<=", "…": "...", "’": "'",
            "‘": "'", "“": '"', "”": '"', "·": "-", "→": "->", "≈": "~", "Δ": "delta ", "✓": "ok", "✗": "x"}  # fmt: skip
BLUE, GREY, RED = (31, 119, 180), (150, 150, 150), (214, 39, 40)


def latin1(text: object) -> str:
    """``text`` in the core fonts' Latin-1: known symbols spelled out, anything else as '?'."""
    out = str(text)
    for symbol, plain in _REPLACE.items():
        out = out.replace(symbol, plain)
    return out.encode("latin-1", "replace").decode("latin-1")


class Document:
    """A portrait A4 document with headings, paragraphs, lists, tables and simple vector figures."""

    def __init__(self, title: str, subtitle: str = ""):
        from fpdf import FPDF

        pdf = FPDF(format="A4", unit="mm")
        pdf.set_auto_page_break(True, margin=15)
        pdf.set_margins(15, 15, 15)
        pdf.set_title(latin1(title))
        pdf.set_creator("deq-lens")
        pdf.alias_nb_pages()
        self.pdf = pdf
        self._footer = latin1(subtitle)
        pdf.footer = self._draw_footer  # type: ignore[method-assign]
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 8, latin1(title), new_x="LMARGIN", new_y="NEXT")
        if subtitle:
            pdf.set_font("Helvetica", "", 9)
            pdf.set_text_color(*GREY)
            pdf.multi_cell(0, 5, latin1(subtitle), align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(0, 0, 0)
        pdf.ln(2)

    def _draw_footer(self) -> None:
        pdf = self.pdf
        pdf.set_y(-12)
        pdf.set_font("Helvetica", "", 8)
        pdf.set_text_color(*GREY)
        pdf.cell(0, 5, f"{self._footer[:110]}  -  page {pdf.page_no()} of {{nb}}", align="C")
        pdf.set_text_color(0, 0, 0)

    @property
    def width(self) -> float:
        return self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def heading(self, text: str) -> None:
        pdf = self.pdf
        if pdf.get_y() > pdf.h - 40:
            pdf.add_page()
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 12)
        pdf.multi_cell(0, 6, latin1(text), new_x="LMARGIN", new_y="NEXT")
        pdf.set_draw_color(*GREY)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + self.width, pdf.get_y())
        pdf.ln(1.5)

    def paragraph(self, text: str, highlight: bool = False) -> None:
        pdf = self.pdf
        pdf.set_font("Helvetica", "I" if highlight else "", 10)
        if highlight:
            pdf.set_fill_color(255, 248, 197)
        pdf.multi_cell(0, 5, latin1(text), fill=highlight, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def bullets(self, items: Sequence[str]) -> None:
        pdf = self.pdf
        pdf.set_font("Helvetica", "", 10)
        for item in items:
            pdf.set_x(pdf.l_margin + 3)
            pdf.multi_cell(self.width - 3, 5, latin1(f"- {item}"), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        pdf = self.pdf
        pdf.set_font("Helvetica", "", 9)
        pdf.set_fill_color(240, 242, 245)
        with pdf.table(width=self.width, line_height=5, text_align="LEFT", first_row_as_headings=True) as table:
            for row in [header, *rows]:
                cells = table.row()
                for value in row:
                    cells.cell(latin1(value))
        pdf.ln(2)

    def bars(self, title: str, labels: Sequence[str], values: Sequence[float | None], maximum: float = 1.0,
             unit: str = "%", colours: Sequence[tuple[int, int, int]] | None = None) -> None:  # fmt: skip
        """A horizontal bar chart: one bar per label, the value printed at its end."""
        pdf = self.pdf
        height = 6 + 6 * len(labels)
        if pdf.get_y() + height > pdf.h - 20:
            pdf.add_page()
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, latin1(title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        label_width, x0 = 40.0, pdf.l_margin + 40.0
        span = self.width - label_width - 20
        for i, (label, value) in enumerate(zip(labels, values)):
            y = pdf.get_y()
            pdf.set_xy(pdf.l_margin, y)
            pdf.cell(label_width - 2, 5, latin1(label)[:28], align="R")
            if value is not None and math.isfinite(value):
                share = max(0.0, min(1.0, value / maximum)) if maximum else 0.0
                pdf.set_fill_color(*(colours[i] if colours else BLUE))
                pdf.rect(x0, y + 0.8, max(span * share, 0.3), 3.6, style="F")
                text = f"{value:.1%}" if unit == "%" else f"{value:,.0f}{unit}"
            else:
                text = "n/a"
            pdf.set_xy(x0 + span + 1, y)
            pdf.cell(19, 5, latin1(text))
            pdf.set_y(y + 6)
        pdf.ln(2)

    def line_chart(self, title: str, values: Sequence[float], log: bool = True, marker: float | None = None) -> None:
        """A small line chart of a sequence (e.g. the solver's residual per iteration), log scale by default."""
        pdf = self.pdf
        width, height = self.width, 40.0
        if pdf.get_y() + height + 10 > pdf.h - 20:
            pdf.add_page()
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(0, 5, latin1(title), new_x="LMARGIN", new_y="NEXT")
        x0, y0 = pdf.l_margin + 12, pdf.get_y() + 1
        plot_w, plot_h = width - 14, height - 8
        points = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
        pdf.set_draw_color(*GREY)
        pdf.rect(x0, y0, plot_w, plot_h)
        if len(points) >= 2:
            tf = (lambda v: math.log10(v)) if log else (lambda v: v)
            ys = [tf(v) for v in points]
            low, high = min(ys + ([tf(marker)] if marker and (marker > 0 or not log) else [])), max(ys)
            high = high if high > low else low + 1
            scale = lambda v: y0 + plot_h - (v - low) / (high - low) * plot_h  # noqa: E731
            pdf.set_draw_color(*BLUE)
            pdf.set_line_width(0.4)
            step = plot_w / (len(ys) - 1)
            for i in range(len(ys) - 1):
                pdf.line(x0 + i * step, scale(ys[i]), x0 + (i + 1) * step, scale(ys[i + 1]))
            pdf.set_line_width(0.2)
            if marker and (marker > 0 or not log):
                pdf.set_draw_color(*RED)
                pdf.set_dash_pattern(dash=1.5, gap=1)
                pdf.line(x0, scale(tf(marker)), x0 + plot_w, scale(tf(marker)))
                pdf.set_dash_pattern()
            pdf.set_font("Helvetica", "", 7)
            for value, label in ((high, f"{10 ** high:.0e}" if log else f"{high:.3g}"),
                                 (low, f"{10 ** low:.0e}" if log else f"{low:.3g}")):  # fmt: skip
                pdf.set_xy(pdf.l_margin, scale(value) - 2)
                pdf.cell(11, 4, label, align="R")
            pdf.set_xy(x0, y0 + plot_h)
            pdf.cell(plot_w, 4, f"iteration 0 to {len(ys) - 1}", align="C")
        pdf.set_draw_color(0, 0, 0)
        pdf.set_y(y0 + height - 2)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def card_pdf(card: "ModelCard") -> bytes:
    """The model card as a PDF: the same sections as the Markdown, plus its figures."""
    from deq_core.card import PLACEHOLDER, sections

    doc = Document(f"Model card: {card.name}", f"deq-lens {card.package_version} - SHA-256 {card.checksum[:16]}...")
    if card.missing_owner_fields:
        doc.paragraph(f"Fields marked {PLACEHOLDER} are for the model owner to complete in card.json: "
                      f"{', '.join(card.missing_owner_fields)}.", highlight=True)  # fmt: skip
    m = card.measured
    for section in sections(card):
        doc.heading(section.title)
        for block in section.blocks:
            if block.kind == "p":
                doc.paragraph(block.text, highlight=block.placeholder)
            elif block.kind == "list":
                doc.bullets(block.items)
            else:
                doc.table(block.header, block.rows)
        if section.title == "Metrics by class":
            doc.bars("Recall by class (share of each class's test cases decided correctly)",
                     [r["class"] for r in m["per_class"]], [r["recall"] for r in m["per_class"]])  # fmt: skip
        elif section.title.endswith("robustness") and m["robustness"]:
            doc.bars("Worst accuracy when one input is degraded (clean accuracy in grey)",
                     [f"{r['modality']} ({tag})" for r in m["robustness"] for tag in ("clean", "worst")],
                     [r[k] for r in m["robustness"] for k in ("clean_accuracy", "worst_accuracy")],
                     colours=[GREY, BLUE] * len(m["robustness"]))  # fmt: skip
    return doc.output()
