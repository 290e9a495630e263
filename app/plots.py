"""The app's figures: ``deq_core.figures``, re-exported under the names the pages use.

The builders live in ``deq_core`` so the HTML decision reports draw the same
figures in the same palette; this module only keeps ``from app import plots``
working for the pages and their tests.

Every builder is memoised here (``FigureMemo``): a Streamlit rerun redraws every chart of
a page, and building the Inspect page's fifteen Plotly figures from the same case took
about 0.5 s of its 0.7 s rerun (``make_subplots`` and Plotly's validation), on every
click. A figure is kept by a fingerprint of its arguments' values, so the same case
and settings give back the same ``Figure`` object, shared by every session: callers
must not modify a figure they get (``st.plotly_chart`` copies it before sending).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import pandas as pd

from deq_core import figures as _figures
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


# --------------------------------------------------------------------------- memoised builders
MAX_FIGURES = 512  # figures kept, least recently used dropped first (a figure is tens of kB)


class Unhashable(TypeError):
    """An argument the fingerprint does not know: the builder is then simply called."""


def fingerprint(value) -> Hashable:
    """A hashable stand-in for ``value`` that changes whenever its contents do (arrays and frames by their bytes)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, np.generic):
        return ("np", value.dtype.str, value.item())
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):  # a tensor, without importing torch
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("objects", value.shape, tuple(fingerprint(v) for v in value.ravel().tolist()))
        data = np.ascontiguousarray(value)
        return ("nd", data.dtype.str, data.shape, hashlib.blake2b(data.view(np.uint8), digest_size=16).digest())
    if isinstance(value, pd.DataFrame):
        return ("frame", tuple(map(str, value.columns)), tuple(map(str, value.dtypes)),
                fingerprint(pd.util.hash_pandas_object(value, index=True).to_numpy()))  # fmt: skip
    if isinstance(value, pd.Series):
        return ("series", str(value.name), str(value.dtype), fingerprint(pd.util.hash_pandas_object(value, index=True).to_numpy()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(fingerprint(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((fingerprint(k), fingerprint(v)) for k, v in value.items()))
    raise Unhashable(f"no fingerprint for {type(value).__name__}")


class FigureMemo:
    """Builder results by (builder, arguments' fingerprint), least recently used dropped beyond ``max_entries``."""

    def __init__(self, max_entries: int = MAX_FIGURES):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def wrap(self, builder: Callable) -> Callable:
        @functools.wraps(builder)
        def memoised(*args, **kwargs):
            try:
                key = (builder.__name__, fingerprint(args), fingerprint(sorted(kwargs.items())))
            except TypeError:  # Unhashable, or a frame pandas cannot hash (lists in cells): not memoised
                return builder(*args, **kwargs)
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
            figure = builder(*args, **kwargs)  # outside the lock: two sessions may build the same one once each
            with self._lock:
                self._entries[key] = figure
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return figure

        memoised.unmemoised = builder
        return memoised


memo = FigureMemo()
# The builders the pages call; names that are not figure builders (constants, the template switch) stay as they are.
_NOT_BUILDERS = {"attribution_bound", "use_template_by_default"}
for _name in [n for n in __all__ if callable(getattr(_figures, n, None)) and n not in _NOT_BUILDERS]:
    globals()[_name] = memo.wrap(getattr(_figures, _name))
