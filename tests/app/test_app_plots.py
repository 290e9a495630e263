"""app.plots: figures carry what the pages promise (log scales, marked lines, one panel per input)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from app import plots


def test_residuals_are_on_a_log_scale_with_the_tolerance_drawn():
    frame = pd.DataFrame({"iteration": [0, 1, 2], "absolute": [1.0, 0.1, 0.0], "relative": [1.0, 1e-2, 1e-5], "run": ""})
    fig = plots.residuals([frame], tolerance=1e-4)
    assert fig.layout.yaxis.type == "log"
    assert any(shape.y0 == 1e-4 for shape in fig.layout.shapes)
    assert min(fig.data[0].y) > 0  # an exact zero would vanish from a log axis


def test_probability_path_marks_the_lock_in_iteration():
    frame = pd.DataFrame({"iteration": [0, 0, 1, 1], "class": ["a", "b"] * 2, "probability": [0.6, 0.4, 0.2, 0.8]})
    fig = plots.probability_path(frame, lock_in=1)
    assert len(fig.data) == 2 and any(shape.x0 == 1 for shape in fig.layout.shapes)


def test_attribution_overlay_is_symmetric_around_zero():
    overlay = np.array([[0.0, -2.0], [1.0, 0.5]])
    fig = plots.picture(np.zeros((2, 2)), overlay=overlay)
    assert len(fig.data) == 2
    assert (fig.data[1].zmin, fig.data[1].zmax) == (-2.0, 2.0)
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == 1  # a photo in [0, 1] keeps its true brightness


def test_dose_response_has_one_panel_per_modality_and_one_legend_entry_per_model():
    rows = [
        {"model": m, "modality": mod, "severity": s, "accuracy": 0.9 - s / 2, "iterations_mean": 5.0, "equilibrium_shift": s}
        for m in ("x-deq", "x-late") for mod in ("photo", "note") for s in (0.0, 0.5, 1.0)
    ]  # fmt: skip
    fig = plots.dose_response(pd.DataFrame(rows), {"x-deq": "deq", "x-late": "late"})
    assert {a.text for a in fig.layout.annotations} == {"photo", "note"}
    assert sum(trace.showlegend for trace in fig.data) == 2
    deq = next(t for t in fig.data if t.name == "x-deq")
    assert deq.line.width > next(t for t in fig.data if t.name == "x-late").line.width


def test_token_html_escapes_what_it_shows():
    html = plots.token_html(["<script>", "crack"], [0.5, -1.0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "rgba(33,102,172,0.75)" in html  # the strongest score, against: full blue


def test_fused_path_replays_up_to_the_chosen_iteration():
    path = pd.DataFrame({"iteration": range(4), "pc1": [0.0, 1.0, 1.5, 1.6], "pc2": [0.0, 0.5, 0.2, 0.1]})
    fig = plots.fused_path(path, [0.9, 0.1], upto=2)
    so_far = next(t for t in fig.data if t.name == "path so far")
    assert len(so_far.x) == 3
    assert next(t for t in fig.data if t.name == "iteration 2").x == (1.5,)


def test_the_dynamics_chart_of_a_model_without_gates_says_so_instead_of_plotting_nan():
    """An adapter without ``gates`` records NaN gates: the share panel is a sentence, not NaN lines."""
    import torch

    from app import frames
    from deq_core import Case, Lens
    from deq_core.figures import NO_GATE_SHARES
    from deq_core.engine import AdaptedDEQ, Modality, ModelConfig

    class NoGates(torch.nn.Module):  # encode, f and head only: the smallest adapter
        def __init__(self):
            super().__init__()
            self.enc, self.mix, self.out = torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

        def encode(self, inputs):
            return torch.stack([self.enc(x) for x in inputs], dim=1)

        def f(self, z, x):
            modal = torch.tanh(0.3 * self.mix(z[:, :2]) + x)
            return torch.cat([modal, torch.tanh(0.3 * self.mix(z[:, 2]) + modal.sum(1))[:, None]], dim=1)

        def head(self, fused):
            return self.out(fused)

    torch.manual_seed(0)
    config = ModelConfig(architecture="deq", modalities=(Modality("a", "vector", (4,)), Modality("b", "vector", (4,))),
                         class_names=("no", "yes"), width=8, groups=1)  # fmt: skip
    model = AdaptedDEQ(config, NoGates()).eval()
    case = Case.from_inputs(model.config.modalities, (torch.randn(4), torch.randn(4)), key="c1")
    trajectory = Lens(model).decide(case).trajectory
    change, share = frames.modality_dynamics(trajectory)
    assert share.empty and not change.empty and np.isfinite(change["change"]).all()
    figure = plots.modality_dynamics(change, share)
    assert NO_GATE_SHARES in [a.text for a in figure.layout.annotations]
    assert all(np.isfinite(np.asarray(t.y, dtype=float)).all() for t in figure.data)
    assert "does not report gate shares" in frames.NO_GATE_SHARES_NOTE
