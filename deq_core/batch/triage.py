"""Which of a month's decisions an auditor should look at first: a pure score over the batch table.

Each signal is a 0..1 severity; the score is their weighted sum, and ``reasons`` names
the signals that fired, so a ranked row says why it is there:

* unsettled solve: the case's equilibrium did not converge (1), or took many iterations
  (its share of the run's slowest, above the 95th percentile of iterations);
* low confidence: the decided class's probability below ``low_confidence``;
* disagreement: production decided another class (from ``--decisions``);
* conflicting input: a modality's Shapley value for the decided class is clearly
  negative (below ``-conflict``): that input argues against the decision;
* large interaction: the largest pairwise Shapley interaction above ``interaction``;
* second equilibrium: other starts reach another fixed point, or the Jacobian's
  spectral radius is >= 1 (the fixed point is not locally stable).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TriageWeights:
    """Thresholds and weights of the triage score (defaults: an auditor's ordering of concerns)."""

    low_confidence: float = 0.6
    conflict: float = 0.05
    interaction: float = 0.25
    slow_quantile: float = 0.95
    unsettled: float = 3.0
    second_equilibrium: float = 2.5
    disagreement: float = 2.0
    conflicting_input: float = 1.5
    confidence: float = 1.0
    large_interaction: float = 0.5


SIGNALS = ("unsettled", "second_equilibrium", "disagreement", "conflicting_input", "low_confidence",
           "large_interaction")  # fmt: skip


def _shapley_columns(frame) -> list[str]:
    return [c for c in frame.columns if c.startswith("shapley_") and c != "shapley_empty"]


def triage(frame, weights: TriageWeights | None = None):
    """The batch table with signal columns, ``score`` and ``reasons``, ranked (highest score first).

    Pure: the input frame is not changed; ties keep the run's case order.
    """
    import numpy as np
    import pandas as pd

    w = weights or TriageWeights()
    out = frame.copy()
    n = len(out)
    iterations = out["iterations"].astype(float) if "iterations" in out else pd.Series(np.zeros(n))
    slow_at = float(iterations.quantile(w.slow_quantile)) if n else 0.0
    top = float(iterations.max()) if n else 0.0
    slow = ((iterations - slow_at) / max(top - slow_at, 1.0)).clip(0, 1).where(iterations > slow_at, 0.0)
    converged = out["converged"].astype(bool) if "converged" in out else pd.Series(np.ones(n, bool))
    out["unsettled"] = np.where(~converged, 1.0, 0.5 * slow)
    confidence = out["confidence"].astype(float)
    out["low_confidence"] = ((w.low_confidence - confidence) / w.low_confidence).clip(0, 1)
    disagrees = out["disagrees"] if "disagrees" in out else pd.Series([None] * n, index=out.index)
    out["disagreement"] = disagrees.fillna(False).astype(bool).astype(float)
    shapley = out[_shapley_columns(out)].astype(float)
    most_negative = shapley.min(axis=1) if shapley.shape[1] else pd.Series(np.zeros(n), index=out.index)
    out["conflicting_modality"] = np.where(most_negative < -w.conflict,
                                           shapley.idxmin(axis=1).str.removeprefix("shapley_") if shapley.shape[1] else "",
                                           "")  # fmt: skip
    out["conflicting_input"] = ((-most_negative - w.conflict) / (1 - w.conflict)).clip(0, 1).where(most_negative < -w.conflict, 0.0)
    out["conflicting_input"] = np.where(most_negative < -w.conflict, np.maximum(out["conflicting_input"], 0.25), 0.0)
    interaction = out["max_abs_interaction"].astype(float) if "max_abs_interaction" in out else pd.Series(np.zeros(n))
    out["large_interaction"] = ((interaction - w.interaction) / (1 - w.interaction)).clip(0, 1).where(
        interaction > w.interaction, 0.0)
    radius = out["spectral_radius"].astype(float) if "spectral_radius" in out else pd.Series(np.full(n, np.nan))
    unique = out["unique"] if "unique" in out else pd.Series([None] * n, index=out.index)
    second = (unique.astype("boolean").fillna(True) == False).to_numpy() | (radius.fillna(0) >= 1).to_numpy()  # noqa: E712
    out["second_equilibrium"] = second.astype(float)
    weight = {"unsettled": w.unsettled, "second_equilibrium": w.second_equilibrium, "disagreement": w.disagreement,
              "conflicting_input": w.conflicting_input, "low_confidence": w.confidence,
              "large_interaction": w.large_interaction}  # fmt: skip
    out["score"] = sum(weight[s] * out[s].astype(float) for s in SIGNALS)
    out["reasons"] = [", ".join(_reason(s, row) for s in SIGNALS if row[s] > 0) for _, row in out.iterrows()]
    out["order"] = np.arange(n)
    ranked = out.sort_values(["score", "order"], ascending=[False, True], kind="stable").drop(columns="order")
    return ranked.reset_index(drop=True)


def _reason(signal: str, row) -> str:
    if signal == "conflicting_input":
        return f"conflicting input ({row['conflicting_modality']})"
    return signal.replace("_", " ")


def run_summary(frame) -> dict:
    """Counts a run's overview shows: decisions per class, unsettled solves, low confidence, disagreements."""
    w = TriageWeights()
    n = len(frame)
    summary = {
        "cases": n,
        "decisions": {str(k): int(v) for k, v in frame["decision"].value_counts().sort_index().items()} if n else {},
        "unsettled": int((~frame["converged"].astype(bool)).sum()) if n else 0,
        "low_confidence": int((frame["confidence"].astype(float) < w.low_confidence).sum()) if n else 0,
        "unreliable": int((~frame["reliable"].astype(bool)).sum()) if n else 0,
    }
    if "disagrees" in frame:
        known = frame["disagrees"].dropna()
        summary["with_production_decision"] = int(len(known))
        summary["disagreements"] = int(known.astype(bool).sum())
    if "unique" in frame:
        summary["second_equilibrium"] = int((frame["unique"].astype("boolean") == False).sum())  # noqa: E712
    return summary
