"""Pure figure builders: (dataclass | DataFrame | array) -> plotly Figure. No Streamlit, no torch.

The one set of figures, in one palette, that both the app (``app.plots`` re-exports
these) and the HTML decision reports (``deq_core.audit.html``) draw, so a report
looks like the page it was prepared on. Every figure gets a fixed height and
compact margins so a page reads at 1280 x 800.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

PALETTE = ("#1f6f8b", "#e0682a", "#6b7280", "#9b5de5", "#079464", "#d94a57", "#bb830e", "#3b82f6", "#0c5a44", "#9e303b")
ARCHITECTURE_COLOURS = {"deq": "#1f6f8b", "weight_tied": "#9b5de5", "early": "#e0682a", "late": "#6b7280"}
REFERENCE_COLOUR = "#6b7280"
VARIANT_COLOUR = "#e0682a"
# Diverging scale with a transparent middle, so an attribution overlay leaves neutral pixels visible.
OVERLAY_SCALE = [[0.0, "rgba(33,102,172,0.85)"], [0.5, "rgba(255,255,255,0)"], [1.0, "rgba(178,24,43,0.85)"]]
DIVERGING = "RdBu_r"


TEMPLATE = "plotly_white"


def use_template_by_default() -> None:
    """Make ``TEMPLATE`` plotly's process-wide default, so ``_layout`` need not set it on every figure.

    Setting ``template=`` validates and deep-copies the whole template: about 10 ms a figure,
    a fifth of a second on a page of 15 charts. A figure that takes the default is
    serialised to the same JSON. The app calls this (it owns its process); a library user's
    own default is left alone, and then every figure gets the template set explicitly.
    """
    pio.templates.default = TEMPLATE


def _layout(fig: go.Figure, height: int = 320, title: str | None = None, legend: bool = True) -> go.Figure:
    # Subplot titles sit just above each panel; a legend above them needs its own row.
    titled = bool(fig.layout.annotations) and any(a.yref == "paper" and a.y >= 1 for a in fig.layout.annotations)
    top = (40 if title else 10) + (28 if titled else 0) + (24 if legend else 0)
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=top, b=10),
        title=dict(text=title, x=0, font=dict(size=14)) if title else None,
        showlegend=legend,
        legend=dict(orientation="h", yanchor="bottom", y=1.1 if titled else 1.02, xanchor="left", x=0),
    )
    if pio.templates.default != TEMPLATE:
        fig.update_layout(template=TEMPLATE)
    return fig


ARCHITECTURE_NAMES = {"deq": "DEQ", "weight_tied": "weight-tied", "early": "early fusion", "late": "late fusion"}


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# --------------------------------------------------------------------------- overview


def baseline_comparison(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: accuracy, macro F1, false-alarm and miss rates for each model (``frames.evaluation_table``)."""
    measures = [("accuracy", "accuracy"), ("macro_f1", "macro F1"), ("false_alarm_rate", "false alarms"), ("miss_rate", "misses")]
    # A dataset without a "normal" class has no false alarms or misses to show.
    measures = [(c, label) for c, label in measures if c in table and table[c].notna().any()]
    fig = go.Figure()
    for row in table.itertuples(index=False):
        values = [getattr(row, column) for column, _ in measures]
        fig.add_bar(
            name=row.model,
            x=[label for _, label in measures],
            y=[np.nan if v is None else v for v in values],
            marker_color=ARCHITECTURE_COLOURS.get(row.architecture, _colour(0)),
            text=[None if v is None or v != v else f"{v:.1%}" for v in values],
            textposition="outside",
            textangle=-90,  # "96.0%" side by side overlapped in groups of four bars
            cliponaxis=False,
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.28], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0], tickformat=".0%")
    return _layout(fig, 320)


def latency_iterations(table: pd.DataFrame) -> go.Figure:
    """Latency per case and mean solver iterations per model, as horizontal bars (names stay readable)."""
    fig = make_subplots(rows=2, cols=1, subplot_titles=("latency per case (ms)", "solver iterations per case (mean)"),
                        vertical_spacing=0.22)  # fmt: skip
    colours = [ARCHITECTURE_COLOURS.get(a, _colour(0)) for a in table["architecture"]]
    names = [ARCHITECTURE_NAMES.get(a, m) for a, m in zip(table["architecture"], table["model"])]
    fig.add_bar(y=names, x=table["latency_ms"], orientation="h", marker_color=colours, row=1, col=1, showlegend=False,
                text=[f"{v:.1f}" for v in table["latency_ms"]], textposition="outside", cliponaxis=False)  # fmt: skip
    iterations = table["iterations_mean"].astype(float)
    fig.add_bar(y=names, x=iterations.fillna(0), orientation="h", marker_color=colours, row=2, col=1, showlegend=False,
                text=["no solver" if v != v else f"{v:.1f}" for v in iterations], textposition="outside", cliponaxis=False)  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(rangemode="tozero")
    for row, values in ((1, table["latency_ms"].astype(float)), (2, iterations.fillna(0))):
        fig.update_xaxes(range=[0, float(values.max() or 1) * 1.35], row=row, col=1)
    return _layout(fig, 330, legend=False)


def monthly_cost(table: pd.DataFrame, currency: str = "€") -> go.Figure:
    """Stacked expected monthly cost per model by kind of error (``frames.monthly_cost_table`` + cost columns)."""
    fig = go.Figure()
    only_wrong = not any(column in table and table[column].abs().sum() > 0 for column in ("false_alarm_cost", "miss_cost"))
    parts = [("false_alarm_cost", "false alarms", "#bb830e"), ("miss_cost", "misses", "#d94a57"),
             ("wrong_fault_cost", "wrong answers" if only_wrong else "wrong fault named", "#9b5de5")]  # fmt: skip
    for column, label, colour in parts:
        if column in table and table[column].abs().sum() > 0:
            fig.add_bar(name=label, x=table["model"], y=table[column], marker_color=colour)
    fig.add_scatter(
        x=table["model"], y=table["monthly_cost"], mode="text", showlegend=False,
        text=[f"{currency}{v:,.0f}" for v in table["monthly_cost"]], textposition="top center",
    )  # fmt: skip
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=f"expected cost per month ({currency})", rangemode="tozero")
    top = float(table["monthly_cost"].max()) if len(table) else 1.0
    fig.update_yaxes(range=[0, top * 1.18 + 1e-9])
    return _layout(fig, 300)


# --------------------------------------------------------------------------- a case's inputs


def picture(pixels: np.ndarray, title: str = "", overlay: np.ndarray | None = None, height: int = 300,
            bound: float | None = None) -> go.Figure:
    """A grayscale picture ``(h, w)``; with ``overlay`` ``(h, w)`` a diverging attribution map on top.

    ``bound``: the attribution that gets the full colour. Default: the overlay's own largest |value|, which
    makes noise of 0.02 look as strong as evidence of 0.4 elsewhere; pass the case's largest over every
    input (``attribution_bound``) so a picture that carries little evidence looks faint.
    """
    pixels = np.asarray(pixels, dtype=float)
    # A photo in [0, 1] keeps its true brightness; other pictures (digit pixels 0-6) are stretched.
    unit = pixels.size and pixels.min() >= 0 and pixels.max() <= 1
    fig = go.Figure(go.Heatmap(z=pixels, colorscale="gray", showscale=False, zmin=0 if unit else None, zmax=1 if unit else None,
                               hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"))  # fmt: skip
    if overlay is not None:
        overlay = np.asarray(overlay, dtype=float)
        bound = bound or float(np.abs(overlay).max()) or 1.0
        fig.add_trace(
            go.Heatmap(
                z=overlay, colorscale=OVERLAY_SCALE, zmin=-bound, zmax=bound, opacity=1.0,
                colorbar=dict(title="attribution", thickness=10, len=0.8),
                hovertemplate="row %{y}, col %{x}: attribution %{z:.2e}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_yaxes(autorange="reversed", scaleanchor="x", showticklabels=False, showgrid=False)
    fig.update_xaxes(showticklabels=False, showgrid=False, constrain="domain")
    return _layout(fig, height, title, legend=False)


def sensor_traces(series: np.ndarray, channels: Sequence[str], attribution: np.ndarray | None = None, height: int = 320,
                  bound: float | None = None) -> go.Figure:
    """One panel per channel of ``series`` ``(C, T)``; with ``attribution`` ``(C, T)`` the points are coloured by it.

    ``bound``: the attribution that gets the full colour (default: this series' largest |attribution|); pass the
    case's largest over every input so colours compare across inputs. Each panel is named above it and
    carries two y ticks: rotated titles and three ticks per 60-pixel panel overlapped.
    """
    series = np.asarray(series, dtype=float)
    n, steps = series.shape
    names = list(channels) or [f"channel {i}" for i in range(n)]
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.12 if n > 1 else 0.0)
    if attribution is not None and bound is None:
        bound = float(np.abs(attribution).max()) or 1.0
    bound = bound or 1.0
    for i in range(n):
        fig.add_scatter(x=np.arange(steps), y=series[i], mode="lines", line=dict(color="#1c2b36", width=1),
                        showlegend=False, row=i + 1, col=1, hovertemplate="t=%{x}: %{y:.3f}<extra></extra>")  # fmt: skip
        if attribution is not None:
            fig.add_scatter(
                x=np.arange(steps), y=series[i], mode="markers", showlegend=False, row=i + 1, col=1,
                marker=dict(size=5, color=np.asarray(attribution[i], dtype=float), colorscale=DIVERGING,
                            cmin=-bound, cmax=bound, showscale=i == 0,
                            colorbar=dict(title="attribution", thickness=10, len=0.8)),
                hovertemplate="t=%{x}: attribution %{marker.color:.2e}<extra></extra>",
            )  # fmt: skip
        fig.update_yaxes(tickvals=_two_ticks(series[i]), tickformat=".3~g", tickfont_size=10, row=i + 1, col=1)
        fig.add_annotation(text=names[i].replace("_", " "), x=0, xref=f"x{i + 1 if i else ''} domain", xanchor="left",
                           y=1, yref=f"y{i + 1 if i else ''} domain", yanchor="bottom", showarrow=False,
                           font=dict(size=11, color="#4b5563"))  # fmt: skip
    fig.update_xaxes(title_text="time step", row=n, col=1)
    return _layout(fig, height, legend=False)


def _two_ticks(values: np.ndarray) -> list[float]:
    """Two round y ticks inside a series' range (a quarter and three quarters up), distinct when it is flat."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if not np.isfinite(lo) or hi - lo < 1e-12:
        return [round(lo, 6)] if np.isfinite(lo) else []
    span = hi - lo
    digits = max(int(-np.floor(np.log10(span / 2))), 0) + 0
    ticks = sorted({round(lo + span / 4, digits), round(hi - span / 4, digits)})
    return ticks


def vector_bars(values: np.ndarray, feature_names: Sequence[str] = (), title: str = "", height: int = 220) -> go.Figure:
    """A feature vector as bars (a handwritten view)."""
    values = np.asarray(values, dtype=float).reshape(-1)
    names = list(feature_names) or [f"f{i}" for i in range(len(values))]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=PALETTE[0]))
    fig.update_xaxes(showticklabels=len(values) <= 40)
    return _layout(fig, height, title, legend=False)


def probabilities(class_names: Sequence[str], values: np.ndarray, truth: str | None = None, height: int = 240,
                  title: str | None = None) -> go.Figure:
    """Horizontal bars of class probabilities; the decided class is dark, the true class outlined."""
    values = np.asarray(values, dtype=float)
    best = int(values.argmax())
    colours = [PALETTE[0] if i == best else "#a9c6d3" for i in range(len(values))]
    lines = [2 if name == truth else 0 for name in class_names]
    fig = go.Figure(
        go.Bar(
            y=list(class_names), x=values, orientation="h", marker=dict(color=colours, line=dict(color="#1c2b36", width=lines)),
            text=[f"{v:.1%}" for v in values], textposition="outside", cliponaxis=False,
        )
    )  # fmt: skip
    fig.update_xaxes(range=[0, 1.15], tickformat=".0%")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, height, title, legend=False)


def token_html(tokens: Sequence[str], scores: Sequence[float] | None = None, bound: float | None = None) -> str:
    """The note's words as HTML spans, red for evidence for the decision, blue against (escaped).

    ``bound``: the score that gets the full colour (default: the note's own largest |score|).
    """
    if scores is None:
        return " ".join(html.escape(t) for t in tokens)
    scores = np.asarray(scores, dtype=float)
    bound = bound or (float(np.abs(scores).max()) if scores.size else 0.0) or 1.0
    spans = []
    for token, score in zip(tokens, scores):
        strength = min(abs(score) / bound, 1.0)
        colour = f"rgba(178,24,43,{0.75 * strength:.2f})" if score > 0 else f"rgba(33,102,172,{0.75 * strength:.2f})"
        spans.append(
            f'<span title="{score:+.3e}" style="background:{colour};padding:2px 4px;margin:1px;'
            f'border-radius:4px;display:inline-block">{html.escape(token)}</span>'
        )
    return '<div style="line-height:2.0;font-size:1.05rem">' + "".join(spans) + "</div>"


# --------------------------------------------------------------------------- the equilibrium


def residuals(frames: Sequence[pd.DataFrame], tolerance: float, stop_mode: str = "rel", height: int = 280,
              title: str | None = None) -> go.Figure:
    """Residual per iteration on a log scale, one line per run (``frames.residual_frame``), tolerance dashed."""
    column = "relative" if stop_mode == "rel" else "absolute"
    fig = go.Figure()
    for i, frame in enumerate(frames):
        name = frame["run"].iloc[0] if len(frame) and frame["run"].iloc[0] else column
        colour = [PALETTE[0], VARIANT_COLOUR, REFERENCE_COLOUR][i % 3]
        fig.add_scatter(x=frame["iteration"], y=frame[column].clip(lower=1e-12), mode="lines+markers", name=name,
                        line=dict(color=colour), marker=dict(size=4))  # fmt: skip
    fig.add_hline(y=tolerance, line=dict(color="#d94a57", dash="dash"))
    # Placed by hand: plotly puts an hline's own annotation at the raw value on a log axis (1e-4 read as
    # the exponent 1e-4, i.e. about 1), which drew the label at the top, far from its line.
    fig.add_annotation(text=f"tolerance {tolerance:g}", x=1, xref="x domain", xanchor="right", y=float(np.log10(tolerance)),
                       yref="y", yanchor="top", showarrow=False, font=dict(size=11, color="#d94a57"))  # fmt: skip
    fig.update_yaxes(type="log", title=f"{'relative' if stop_mode == 'rel' else 'absolute'} residual", exponentformat="power")
    fig.update_xaxes(title="iteration")
    return _layout(fig, height, title)


def probability_path(frame: pd.DataFrame, lock_in: int | None, height: int = 280, title: str | None = None) -> go.Figure:
    """Class probabilities at every iteration (``frames.probability_frame``), lock-in marked (None: not marked)."""
    fig = go.Figure()
    for i, (name, group) in enumerate(frame.groupby("class", sort=False)):
        fig.add_scatter(x=group["iteration"], y=group["probability"], mode="lines", name=str(name), line=dict(color=_colour(i)))
    if lock_in is not None:
        fig.add_vline(x=lock_in, line=dict(color="#1c2b36", dash="dot"))
        # Inside the plot, half-way up, on the side with room: at the top it sat on the axis and the legend.
        last = float(frame["iteration"].max()) if len(frame) else 0.0
        right = lock_in <= last / 2
        fig.add_annotation(text=f"locked in at {lock_in}", x=lock_in, xref="x", y=0.5, yref="y", showarrow=False,
                           xanchor="left" if right else "right", xshift=4 if right else -4,
                           bgcolor="rgba(255,255,255,0.85)", font=dict(size=11, color="#1c2b36"))  # fmt: skip
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title="probability")
    fig.update_xaxes(title="iteration")
    return _layout(fig, height, title)


NO_GATE_SHARES = "this model does not report gate shares"


def modality_dynamics(change: pd.DataFrame, share: pd.DataFrame, height: int = 300) -> go.Figure:
    """Per modality: how far its state moves per iteration (log), and its share of the fused state.

    An empty ``share`` (a model that reports no gates, ``frames.modality_dynamics``) leaves
    the right panel with the sentence ``NO_GATE_SHARES`` instead of a chart.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("state change per iteration", "gate share of the fused state"))
    if share.empty or not np.isfinite(share["share"].to_numpy(dtype=float)).all():
        share = share.iloc[:0]
        fig.add_annotation(text=NO_GATE_SHARES, x=0.5, y=0.5, xref="x2 domain", yref="y2 domain", showarrow=False,
                           font=dict(size=12, color="#57606a"))  # fmt: skip
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, row=1, col=2)
    parts = list(dict.fromkeys(change["part"]))
    for i, part in enumerate(parts):
        rows = change[change["part"] == part]
        colour = "#1c2b36" if part == "fused" else _colour(i)
        fig.add_scatter(x=rows["iteration"], y=rows["change"].clip(lower=1e-12), mode="lines", name=part,
                        line=dict(color=colour, dash="dot" if part == "fused" else "solid"), legendgroup=part, row=1, col=1)  # fmt: skip
    for i, modality in enumerate(dict.fromkeys(share["modality"])):
        rows = share[share["modality"] == modality]
        fig.add_scatter(x=rows["iteration"], y=rows["share"], mode="lines", name=modality, stackgroup="share",
                        line=dict(color=_colour(i)), legendgroup=modality, showlegend=False, row=1, col=2)  # fmt: skip
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
    fig.update_xaxes(title="iteration")
    fig.update_annotations(font_size=12)
    return _layout(fig, height)


def fused_path(path: pd.DataFrame, explained: Sequence[float], upto: int | None = None, height: int = 320) -> go.Figure:
    """The fused state's path in its 2-D PCA plane (``frames.Path2D.frame``), replayed up to ``upto``."""
    upto = len(path) - 1 if upto is None else int(np.clip(upto, 0, len(path) - 1))
    fig = go.Figure()
    fig.add_scatter(x=path["pc1"], y=path["pc2"], mode="lines", line=dict(color="#d0d7de", width=1), name="whole path",
                    hoverinfo="skip")  # fmt: skip
    shown = path.iloc[: upto + 1]
    fig.add_scatter(
        x=shown["pc1"], y=shown["pc2"], mode="lines+markers", name="path so far",
        line=dict(color=PALETTE[0]), marker=dict(size=7, color=shown["iteration"], colorscale="Blues", cmin=0, cmax=max(len(path) - 1, 1)),
        hovertemplate="iteration %{marker.color}<br>(%{x:.3f}, %{y:.3f})<extra></extra>",
    )  # fmt: skip
    fig.add_scatter(x=[path["pc1"].iloc[0]], y=[path["pc2"].iloc[0]], mode="markers", name="start (z = 0)",
                    marker=dict(symbol="circle-open", size=12, color="#1c2b36"))  # fmt: skip
    fig.add_scatter(x=[path["pc1"].iloc[-1]], y=[path["pc2"].iloc[-1]], mode="markers", name="equilibrium",
                    marker=dict(symbol="star", size=14, color="#d94a57"))  # fmt: skip
    fig.add_scatter(x=[shown["pc1"].iloc[-1]], y=[shown["pc2"].iloc[-1]], mode="markers", name=f"iteration {upto}",
                    marker=dict(size=14, color=VARIANT_COLOUR, line=dict(color="#1c2b36", width=1)))  # fmt: skip
    e1, e2 = (list(explained) + [0, 0])[:2]
    fig.update_xaxes(title=f"direction 1 ({e1:.1%} of the movement)", zeroline=False)
    fig.update_yaxes(title=f"direction 2 ({e2:.1%})", zeroline=False)
    return _layout(fig, height)


# --------------------------------------------------------------------------- attributions


def shapley(modalities: Sequence[str], values: Sequence[float], interactions: np.ndarray | None = None, height: int = 300,
            title: str | None = None) -> go.Figure:
    """Modality Shapley values as bars and, when given, pairwise interactions as a heatmap."""
    values = np.asarray(values, dtype=float)
    cols = 2 if interactions is not None else 1
    fig = make_subplots(rows=1, cols=cols, column_widths=[0.55, 0.45][:cols], horizontal_spacing=0.18,
                        subplot_titles=("contribution to the decision", "interactions between pairs")[:cols])  # fmt: skip
    colours = ["#b2182b" if v > 0 else "#2166ac" for v in values]
    fig.add_bar(x=values, y=list(modalities), orientation="h", marker_color=colours, showlegend=False,
                text=[f"{v:+.3f}" for v in values], textposition="inside", insidetextanchor="middle", row=1, col=1)  # fmt: skip
    fig.add_vline(x=0, line=dict(color="#1c2b36", width=1), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    if interactions is not None:
        matrix = np.asarray(interactions, dtype=float)
        bound = float(np.nanmax(np.abs(matrix))) or 1.0
        # Numbers only where they can be read: up to 4 inputs, 2 decimals; 6 handwritten views get 1 decimal
        # in small type, and the cell value on hover always.
        n = len(modalities)
        text_size = 12 if n <= 4 else 9 if n <= 6 else 0
        decimals = 2 if n <= 4 else 1
        text = np.vectorize(lambda v: "" if v != v or n > 6 else f"{v:+.{decimals}f}")(matrix)
        short = [_short(m) for m in modalities]
        fig.add_heatmap(z=matrix, x=short, y=short, colorscale=DIVERGING, zmin=-bound, zmax=bound,
                        text=text, texttemplate="%{text}" if text_size else None, textfont=dict(size=max(text_size, 1)),
                        customdata=np.array([[f"{a} × {b}".replace("_", " ") for b in modalities] for a in modalities]),
                        hovertemplate="%{customdata}: %{z:+.3f}<extra></extra>",
                        colorbar=dict(thickness=10, len=0.8), row=1, col=2)  # fmt: skip
        fig.update_xaxes(tickangle=-45 if n > 4 else 0, tickfont_size=10, row=1, col=2)
        fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_annotations(font_size=12)
    return _layout(fig, height, title, legend=False)


def _short(name: str, limit: int = 8) -> str:
    """A modality name short enough for a heatmap axis ("karhunen_loeve" -> "karhunen…")."""
    name = name.replace("_", " ")
    return name if len(name) <= limit else name[: limit - 1] + "…"


def attribution_bound(maps: Sequence[np.ndarray]) -> float:
    """The case's largest |attribution| over every input: one colour scale for all of its maps."""
    values = [float(np.nanmax(np.abs(np.asarray(m, dtype=float)))) for m in maps if np.asarray(m).size]
    return max(values, default=0.0) or 1.0


def top_features(names: Sequence[str], scores: Sequence[float], title: str = "", height: int = 260,
                 bound: float | None = None) -> go.Figure:
    """The largest attributions of a vector modality, strongest on top; ``bound`` fixes the axis at +-bound."""
    scores = np.asarray(scores, dtype=float)
    colours = ["#b2182b" if v > 0 else "#2166ac" for v in scores]
    fig = go.Figure(go.Bar(x=scores, y=list(names), orientation="h", marker_color=colours))
    fig.update_yaxes(autorange="reversed")
    if bound:
        fig.update_xaxes(range=[-1.05 * bound, 1.05 * bound])
    return _layout(fig, height, title, legend=False)


def gate_share_bars(modalities: Sequence[str], share: Sequence[float], height: int = 200) -> go.Figure:
    """Final gate share per modality (the model's own weighting)."""
    fig = go.Figure(go.Bar(x=list(modalities), y=np.asarray(share, dtype=float), marker_color=[_colour(i) for i in range(len(share))],
                           text=[f"{v:.1%}" for v in share], textposition="outside", cliponaxis=False))  # fmt: skip
    fig.update_yaxes(range=[0, 1.15], tickformat=".0%")
    return _layout(fig, height, legend=False)


# --------------------------------------------------------------------------- modality lab


def compare_probabilities(class_names: Sequence[str], reference: np.ndarray, variant: np.ndarray, height: int = 260) -> go.Figure:
    """Reference and variant class probabilities side by side."""
    fig = go.Figure()
    fig.add_bar(name="reference", x=list(class_names), y=np.asarray(reference, dtype=float), marker_color=REFERENCE_COLOUR)
    fig.add_bar(name="variant", x=list(class_names), y=np.asarray(variant, dtype=float), marker_color=VARIANT_COLOUR)
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return _layout(fig, height)


def compare_paths(reference: pd.DataFrame, variant: pd.DataFrame, height: int = 300) -> go.Figure:
    """Both fused-state paths in one PCA plane (fitted on the two together)."""
    fig = go.Figure()
    for frame, name, colour in ((reference, "reference", REFERENCE_COLOUR), (variant, "variant", VARIANT_COLOUR)):
        fig.add_scatter(x=frame["pc1"], y=frame["pc2"], mode="lines+markers", name=name, line=dict(color=colour), marker=dict(size=5))
        fig.add_scatter(x=[frame["pc1"].iloc[-1]], y=[frame["pc2"].iloc[-1]], mode="markers", showlegend=False,
                        marker=dict(symbol="star", size=14, color=colour, line=dict(color="#1c2b36", width=1)))  # fmt: skip
    fig.update_xaxes(title="direction 1", zeroline=False)
    fig.update_yaxes(title="direction 2", zeroline=False)
    return _layout(fig, height)


# --------------------------------------------------------------------------- tuning


def tolerance_sweep(frame: pd.DataFrame, recommended: float | None, current: float | None = None, height: int = 340) -> go.Figure:
    """Flips and iterations against tolerance (``frames.sweep_frame``); the recommendation marked."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("decisions that flip", "iterations per case"))
    fig.add_scatter(x=frame["tolerance"], y=frame["flips"], mode="lines+markers", name="flips", line=dict(color="#d94a57"), row=1, col=1)
    fig.add_scatter(x=frame["tolerance"], y=frame["iterations_mean"], mode="lines+markers", name="mean", line=dict(color=PALETTE[0]), row=1, col=2)
    fig.add_scatter(x=frame["tolerance"], y=frame["iterations_p95"], mode="lines+markers", name="95th percentile",
                    line=dict(color=PALETTE[0], dash="dash"), row=1, col=2)  # fmt: skip
    for col in (1, 2):
        if recommended is not None:
            fig.add_vline(x=np.log10(recommended), line=dict(color="#079464", width=2), row=1, col=col)
        if current is not None:
            fig.add_vline(x=np.log10(current), line=dict(color="#1c2b36", dash="dot"), row=1, col=col)
    fig.update_xaxes(type="log", title="tolerance", autorange="reversed", exponentformat="power")
    fig.update_yaxes(rangemode="tozero")
    fig.update_annotations(font_size=12)
    return _layout(fig, height)


def flips_by_steps(frame: pd.DataFrame, chosen: int | None, selected: int | None = None, height: int = 300) -> go.Figure:
    """Edge export: flips and probability gaps against the unrolled steps K (``StepsTable`` rows as a frame).

    Columns ``steps``, ``flips``, ``max_dp_full``, ``max_dp_fixed_point``; the chosen K
    (no flips from there on) in green, the K being exported dotted.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("decisions that differ from the full model",
                                                        "largest probability difference"))  # fmt: skip
    fig.add_scatter(x=frame["steps"], y=frame["flips"], mode="lines+markers", name="flips", line=dict(color="#d94a57"),
                    row=1, col=1)  # fmt: skip
    fig.add_scatter(x=frame["steps"], y=frame["max_dp_full"].clip(lower=1e-9), mode="lines+markers",
                    name="to the full model", line=dict(color=PALETTE[0]), row=1, col=2)  # fmt: skip
    fig.add_scatter(x=frame["steps"], y=frame["max_dp_fixed_point"].clip(lower=1e-9), mode="lines+markers",
                    name="to the fixed point", line=dict(color=PALETTE[0], dash="dash"), row=1, col=2)  # fmt: skip
    fig.add_hline(y=1e-4, line=dict(color="#6b7280", dash="dot"), row=1, col=2)
    for col in (1, 2):
        if chosen is not None:
            fig.add_vline(x=chosen, line=dict(color="#079464", width=2), row=1, col=col)
        if selected is not None and selected != chosen:
            fig.add_vline(x=selected, line=dict(color="#1c2b36", dash="dot"), row=1, col=col)
    fig.update_xaxes(title="unrolled steps K")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_annotations(font_size=12)
    return _layout(fig, height)


def _accuracy_dtick(span: float) -> float:
    """Tick step for an accuracy axis spanning ``span``: about four to eight ticks, never finer than 0.5 points."""
    for step in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        if span / step <= 8:
            return step
    return 0.25


def equal_compute(frame: pd.DataFrame, trained_steps: int, height: int = 320) -> go.Figure:
    """Accuracy and residual of the DEQ and the weight-tied model at equal f evaluations (``frames.compute_frame``)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "relative residual (does it settle?)"))
    for column, name, colour in (("deq", "DEQ", ARCHITECTURE_COLOURS["deq"]), ("weight_tied", "weight-tied", ARCHITECTURE_COLOURS["weight_tied"])):
        fig.add_scatter(x=frame["f_evaluations"], y=frame[f"{column}_accuracy"], mode="lines+markers", name=name,
                        line=dict(color=colour), legendgroup=name, row=1, col=1)  # fmt: skip
        fig.add_scatter(x=frame["f_evaluations"], y=frame[f"{column}_relative_residual"].clip(lower=1e-12), mode="lines+markers",
                        name=name, line=dict(color=colour), legendgroup=name, showlegend=False, row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.add_vline(x=trained_steps, line=dict(color="#6b7280", dash="dot"), row=1, col=col)
    # ".0%" rounded 96.2% and 95.8% both to "96%": ticks every point (or more), one decimal.
    accuracies = frame[["deq_accuracy", "weight_tied_accuracy"]].to_numpy(dtype=float)
    span = float(np.nanmax(accuracies) - np.nanmin(accuracies)) if accuracies.size else 1.0
    fig.update_yaxes(tickformat=".1%", dtick=_accuracy_dtick(span), row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_xaxes(title="f evaluations per case")
    fig.update_annotations(font_size=12)
    return _layout(fig, height)


# --------------------------------------------------------------------------- robustness


def dose_response(frame: pd.DataFrame, architectures: dict[str, str] | None = None, value: str = "accuracy", height: int = 340) -> go.Figure:
    """Accuracy against severity, one panel per modality, one line per model (``frames.dose_response``)."""
    modalities = list(dict.fromkeys(frame["modality"]))
    fig = make_subplots(rows=1, cols=max(len(modalities), 1), shared_yaxes=True, subplot_titles=modalities)
    architectures = architectures or {}
    for i, model in enumerate(dict.fromkeys(frame["model"])):
        colour = ARCHITECTURE_COLOURS.get(architectures.get(model, ""), _colour(i))
        for j, modality in enumerate(modalities):
            rows = frame[(frame["model"] == model) & (frame["modality"] == modality)].sort_values("severity")
            fig.add_scatter(x=rows["severity"], y=rows[value], mode="lines+markers", name=model, legendgroup=model,
                            showlegend=j == 0, line=dict(color=colour, width=3 if architectures.get(model) == "deq" else 2),
                            row=1, col=j + 1)  # fmt: skip
    if value == "accuracy":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    fig.update_xaxes(title="severity", range=[-0.02, 1.02])
    fig.update_annotations(font_size=12)
    return _layout(fig, height)


# --------------------------------------------------------------------------- stability of the fixed points


def spectral_radii(frame: pd.DataFrame, height: int = 280) -> go.Figure:
    """Histogram of the cases' spectral radii rho(J_f(z*)) (``frames.stability_frame``), with rho = 1 marked."""
    fig = go.Figure(go.Histogram(x=frame["spectral_radius"], nbinsx=30, marker_color=PALETTE[0], name="cases"))
    fig.add_vline(x=1.0, line_dash="dash", line_color=PALETTE[5], annotation_text="ρ = 1: not contractive",
                  annotation_position="top left")  # fmt: skip
    fig.update_xaxes(title="spectral radius of the Jacobian at z*", range=[0, max(1.05, float(frame["spectral_radius"].max()) * 1.05)])
    fig.update_yaxes(title="cases")
    return _layout(fig, height, legend=False)


def iterations_by_radius(frame: pd.DataFrame, height: int = 300) -> go.Figure:
    """Solver iterations against spectral radius, one marker per case; wrong decisions and non-unique cases marked."""
    fig = go.Figure()
    groups = [("right", ~frame["wrong"], PALETTE[0], "circle"), ("wrong", frame["wrong"], PALETTE[5], "x")]
    for name, mask, colour, symbol in groups:
        part = frame[mask]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(x=part["spectral_radius"], y=part["iterations"], mode="markers", name=name,
                                 marker=dict(color=colour, symbol=symbol, size=7), text=part["case"],
                                 hovertemplate="%{text}: ρ %{x:.3f}, %{y} iterations<extra></extra>"))  # fmt: skip
    several = frame[~frame["unique"]]
    if not several.empty:
        fig.add_trace(go.Scatter(x=several["spectral_radius"], y=several["iterations"], mode="markers",
                                 name="not unique", marker=dict(color="rgba(0,0,0,0)", size=13,
                                 line=dict(color=PALETTE[6], width=2)), hoverinfo="skip"))  # fmt: skip
    fig.update_xaxes(title="spectral radius of the Jacobian at z*")
    fig.update_yaxes(title="solver iterations")
    return _layout(fig, height)


# --------------------------------------------------------------------------- money with its uncertainty


def cost_intervals(costs: Mapping[str, tuple[float, float, float]], highlight: str | None = None,
                   currency: str = "€", title: str = "expected cost per month") -> go.Figure:  # fmt: skip
    """Each side's monthly cost as a bar with its 95% interval as an error bar (``deq_core.costs.Interval``s)."""
    names = list(costs)
    values = [costs[n][0] for n in names]
    fig = go.Figure(go.Bar(
        x=names, y=values, marker_color=[PALETTE[0] if n == highlight else "#9aa5b1" for n in names],
        error_y=dict(type="data", symmetric=False, array=[costs[n][2] - costs[n][0] for n in names],
                     arrayminus=[costs[n][0] - costs[n][1] for n in names], color="#3d4852", thickness=1.5),
        text=[f"{currency}{v:,.0f}" for v in values], textposition="inside", insidetextanchor="end",
        hovertemplate="%{x}: %{y:,.0f}<extra>95% interval in the error bar</extra>",
    ))  # fmt: skip
    top = max((costs[n][2] for n in names), default=1.0)
    fig.update_yaxes(title=f"{title} ({currency})", rangemode="tozero", range=[0, top * 1.1 + 1e-9])
    return _layout(fig, 300)
