"""The cost calculator's pieces the Overview and the Pilot page share: prices, the compared model, the verdict.

The prices live in ``app.persist`` keys, so they survive a change of page and both
pages price errors the same way. The figures come from ``deq_core`` (paired
bootstrap intervals: ``deq_core.compare_costs``); this module only draws widgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from app import frames, persist
from deq_core import CostComparison, Prices, best_baseline, compare_costs, error_costs, format_money

DEFAULTS = {"cost_cases": 10_000, "cost_false_alarm": 40.0, "cost_miss": 1_500.0, "cost_wrong": 5.0}


def _number(column, label: str, key: str, step: float, help: str, integer: bool = False) -> float:
    persist.restore(key, DEFAULTS[key])
    value = column.number_input(label, min_value=0 if integer else 0.0, step=int(step) if integer else step,
                                key=key, help=help)  # fmt: skip
    persist.remember(key)
    return value


def price_inputs(columns: Sequence, normal: str | None) -> Prices:
    """Cases per month and the price of each kind of error, in three columns."""
    cases = _number(columns[0], "Cases per month", "cost_cases", 1_000, "How many parts are inspected per month.", True)
    if normal:
        false_alarm = _number(columns[1], "Cost of a false alarm (€)", "cost_false_alarm", 10.0,
                              f"A good part ('{normal}') flagged as faulty: re-inspection time, scrap.")  # fmt: skip
        miss = _number(columns[2], "Cost of a miss (€)", "cost_miss", 100.0,
                       "A faulty part passed as good: warranty claim, recall, downtime at the customer.")  # fmt: skip
        return Prices(cases, false_alarm, miss, 0.0)
    wrong = _number(columns[1], "Cost of a wrong answer (€)", "cost_wrong", 1.0,
                    "This dataset has no 'normal' class, so every error costs the same.")  # fmt: skip
    return Prices(cases, 0.0, 0.0, wrong)


def as_cost_inputs(prices: Prices) -> frames.CostInputs:
    return frames.CostInputs(prices.cases_per_month, prices.false_alarm_cost, prices.miss_cost, prices.wrong_fault_cost)


def baseline_select(column, others: list[str], accuracies: Mapping[str, float], model: str) -> str:
    """The compared model: the best baseline by test accuracy unless the user picked another (kept across pages)."""
    default = best_baseline(accuracies, model) or others[0]
    persist.restore("cost_baseline", default)
    if st.session_state.get("cost_baseline") not in others:
        st.session_state["cost_baseline"] = default
    chosen = column.selectbox("Compare the DEQ with", others, key="cost_baseline",
                              help=f"The model the saving is counted against; the default is the best baseline ({default}).")  # fmt: skip
    persist.remember("cost_baseline")
    return chosen


def compare_on_test(predictions: Mapping[str, object], prices: Prices, classes: Sequence[str], normal: str | None,
                    model: str, other: str, identity: tuple = ()) -> CostComparison:  # fmt: skip
    """Every model's monthly cost on the test cases, paired bootstrap over the cases (same cases for all).

    ``identity`` (the models' names and checksums) keys a cache, so a rerun that changes
    nothing here does not resample again (about 0.1 s on a busy CPU).
    """
    if not identity:  # nothing to key a cache on: compute
        return _compare.__wrapped__(identity, tuple(predictions), prices, tuple(classes), normal, model, other, predictions)
    return _compare(identity, tuple(predictions), prices, tuple(classes), normal, model, other, predictions)


@st.cache_data(show_spinner=False, max_entries=64)
def _compare(identity: tuple, names: tuple, prices: Prices, classes: tuple, normal: str | None, model: str, other: str,
             _predictions: Mapping[str, object]) -> CostComparison:  # fmt: skip
    k = list(classes).index(normal) if normal else None
    costs = {name: error_costs(p.labels, p.predicted, k, prices) for name, p in _predictions.items()}
    return compare_costs(costs, model, other, prices.cases_per_month)


def headline(saving, model: str, other: str) -> tuple[str, str]:
    """The metric's label (the same whatever the verdict) and value: saves, costs more, or no measurable difference."""
    label = f"{model} against {other}, per month"
    if saving.includes_zero:
        return label, "no measurable difference"
    if saving.value >= 0:
        return label, f"saves {format_money(saving.value)}"
    return label, f"costs {format_money(-saving.value)} more"


def show_saving(comparison: CostComparison, model: str, other: str) -> None:
    saving = comparison.saving
    label, value = headline(saving, model, other)
    st.metric(label, value, help=f"Paired bootstrap over the {comparison.cases} test cases ({comparison.resamples} "
              "resamples, seed 0): each resample prices the same cases for both models.")  # fmt: skip
    st.markdown(comparison.verdict + (f" Per year: {format_money(12 * saving.value)}." if not saving.includes_zero else ""))


def with_intervals(table: pd.DataFrame, comparison: CostComparison) -> pd.DataFrame:
    """The cost table with each model's 95% interval beside its monthly cost."""
    out = table.copy()
    out["monthly_cost_low"] = out["model"].map(lambda n: comparison.costs[n].low)
    out["monthly_cost_high"] = out["model"].map(lambda n: comparison.costs[n].high)
    return out
