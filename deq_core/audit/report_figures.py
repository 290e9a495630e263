"""The few Plotly figures a decision report embeds, built from the report's own JSON record.

Pure functions of plain data (lists and dicts from ``audit.build_report``'s record),
so a report can be redrawn from its JSON alone. No streamlit here, and no import
of ``app``: the app's builders are the app's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

FOR = "#c0392b"  # supports the explained class
AGAINST = "#2e6da4"  # speaks against it
NEUTRAL = "#7f8c8d"
HEIGHT = 300


def _layout(figure: go.Figure, title: str, height: int = HEIGHT) -> go.Figure:
    figure.update_layout(
        title=title, height=height, margin=dict(l=50, r=20, t=50, b=45), template="plotly_white", showlegend=False
    )
    return figure


def probabilities(class_names: Sequence[str], values: Sequence[float], predicted: int) -> go.Figure:
    """Bar per class; the decided class highlighted."""
    colours = [FOR if i == predicted else NEUTRAL for i in range(len(class_names))]
    figure = go.Figure(go.Bar(x=list(class_names), y=list(values), marker_color=colours,
                              text=[f"{v:.1%}" for v in values], textposition="outside"))  # fmt: skip
    figure.update_yaxes(range=[0, 1.12], tickformat=".0%", title="probability")
    return _layout(figure, "What the model decided")


def residual_trace(relative_residuals: Sequence[float], tolerance: float) -> go.Figure:
    """Relative residual per solver iteration on a log axis, with the tolerance dashed."""
    figure = go.Figure(go.Scatter(x=list(range(len(relative_residuals))), y=list(relative_residuals),
                                  mode="lines+markers", line_color=AGAINST))  # fmt: skip
    figure.add_hline(y=tolerance, line_dash="dash", line_color=NEUTRAL, annotation_text=f"tolerance {tolerance:g}")
    figure.update_yaxes(type="log", title="relative residual")
    figure.update_xaxes(title="iteration")
    return _layout(figure, "How the equilibrium search settled")


def probability_path(class_names: Sequence[str], per_iteration: Sequence[Sequence[float]], lock_in: int | None) -> go.Figure:
    """Each class's probability at every iteration; the lock-in iteration marked."""
    figure = go.Figure()
    for c, name in enumerate(class_names):
        figure.add_trace(go.Scatter(x=list(range(len(per_iteration))), y=[row[c] for row in per_iteration],
                                    mode="lines", name=name))  # fmt: skip
    if lock_in is not None:
        figure.add_vline(x=lock_in, line_dash="dot", line_color=NEUTRAL, annotation_text="decision locked in")
    figure.update_yaxes(range=[0, 1], tickformat=".0%", title="probability")
    figure.update_xaxes(title="iteration")
    _layout(figure, "The decision at every iteration")
    figure.update_layout(showlegend=True)
    return figure


def shapley(values: Mapping[str, float], target_class: str) -> go.Figure:
    """Horizontal bar per modality: its Shapley share of the target probability."""
    names, numbers = list(values), [values[n] for n in values]
    figure = go.Figure(go.Bar(y=names, x=numbers, orientation="h", marker_color=[FOR if v >= 0 else AGAINST for v in numbers],
                              text=[f"{v:+.3f}" for v in numbers], textposition="auto"))  # fmt: skip
    figure.update_xaxes(title=f"contribution to P({target_class})")
    figure.update_yaxes(autorange="reversed")
    return _layout(figure, "Each input's contribution", height=max(220, 70 + 45 * len(names)))
