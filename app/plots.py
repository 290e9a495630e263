"""The app's figures: ``deq_core.figures``, re-exported under the names the pages use.

The builders live in ``deq_core`` so the HTML decision reports draw the same
figures in the same palette; this module only keeps ``from app import plots``
working for the pages and their tests.
"""

from __future__ import annotations

from deq_core.figures import (
    ARCHITECTURE_COLOURS,
    ARCHITECTURE_NAMES,
    DIVERGING,
    OVERLAY_SCALE,
    PALETTE,
    REFERENCE_COLOUR,
    VARIANT_COLOUR,
    attribution_bound,
    baseline_comparison,
    compare_paths,
    compare_probabilities,
    cost_intervals,
    dose_response,
    equal_compute,
    flips_by_steps,
    fused_path,
    gate_share_bars,
    iterations_by_radius,
    latency_iterations,
    modality_dynamics,
    monthly_cost,
    picture,
    probabilities,
    probability_path,
    residuals,
    sensor_traces,
    shapley,
    spectral_radii,
    token_html,
    tolerance_sweep,
    top_features,
    vector_bars,
    use_template_by_default,
)

use_template_by_default()  # the app's process: every figure takes plotly_white without copying it (10 ms a chart)

__all__ = [
    "ARCHITECTURE_COLOURS", "ARCHITECTURE_NAMES", "DIVERGING", "OVERLAY_SCALE", "PALETTE", "REFERENCE_COLOUR",
    "VARIANT_COLOUR", "attribution_bound", "baseline_comparison", "compare_paths", "compare_probabilities", "cost_intervals",
    "dose_response",
    "equal_compute", "fused_path", "gate_share_bars", "iterations_by_radius", "latency_iterations", "modality_dynamics", "monthly_cost",
    "picture", "probabilities", "probability_path", "residuals", "sensor_traces", "shapley", "spectral_radii", "token_html",
    "tolerance_sweep", "top_features", "vector_bars",
]
