"""Money with its uncertainty: per-case error costs, paired bootstrap intervals, pilot read-outs.

The Overview's cost calculator used to multiply one confusion matrix by prices and
print a single number. A test split of a few hundred cases cannot tell a EUR 400
difference from chance, so every monthly cost and every saving here comes with a
95% interval from a *paired* bootstrap: each resample draws the same cases for both
sides, so the interval is that of the difference, not of two independent figures.

A pilot read-out (run the new model beside the current process on real cases) is the
same computation on a pilot log instead of the test split: ``read_pilot_log`` parses
and checks the CSV, ``pilot_readout`` prices both sides and ``break_even_months``
turns a one-off cost into months.

Pure numpy / pandas; no torch, no streamlit.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
PILOT_COLUMNS = ("case_id", "current_decision", "outcome")
PILOT_COST_COLUMNS = ("false_alarm_cost", "miss_cost", "wrong_fault_cost")


@dataclass(frozen=True)
class Prices:
    """What each kind of error costs, and how many cases a month are decided.

    With a normal class a false alarm is a normal case called faulty, a miss a
    faulty case called normal, a wrong fault a faulty case given another fault; with
    none, every error is a wrong answer (``wrong_fault_cost``).
    """

    cases_per_month: float
    false_alarm_cost: float
    miss_cost: float
    wrong_fault_cost: float = 0.0


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap percentile interval."""

    value: float
    low: float
    high: float

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class CostComparison:
    """Monthly cost of each model and the saving of ``model`` over ``other`` on the same cases."""

    costs: dict[str, Interval]
    model: str
    other: str
    saving: Interval  # monthly cost of ``other`` minus that of ``model``
    cases: int
    resamples: int

    @property
    def verdict(self) -> str:
        return saving_sentence(self.saving, self.model, self.other)


def error_costs(labels: np.ndarray, predicted: np.ndarray, normal: int | None, prices: Prices,
                per_case: Mapping[str, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """The cost of each case's decision (0 where right), by the kind of error it is.

    ``per_case`` may give a price per case for any of ``PILOT_COST_COLUMNS`` (NaN:
    use the flat price), so a pilot log can carry the real cost of each part.
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels {labels.shape} and decisions {predicted.shape} differ in shape")
    per_case = per_case or {}

    def price(name: str) -> np.ndarray:
        flat = np.full(labels.shape, float(getattr(prices, name)))
        given = per_case.get(name)
        return flat if given is None else np.where(np.isnan(given), flat, np.asarray(given, dtype=float))

    wrong = labels != predicted
    if normal is None:
        return np.where(wrong, price("wrong_fault_cost"), 0.0)
    false_alarm = wrong & (labels == normal)
    miss = wrong & (predicted == normal)
    wrong_fault = wrong & ~false_alarm & ~miss
    return (false_alarm * price("false_alarm_cost") + miss * price("miss_cost")
            + wrong_fault * price("wrong_fault_cost"))  # fmt: skip


def _interval(point: float, samples: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def compare_costs(case_costs: Mapping[str, np.ndarray], model: str, other: str, cases_per_month: float,
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> CostComparison:  # fmt: skip
    """Monthly cost of every model and the saving of ``model`` over ``other``, paired bootstrap.

    ``case_costs`` maps each model to the cost of its decision on the same cases in
    the same order. Each resample draws n case indices with replacement once and
    applies them to every model, so the saving's interval keeps the pairing.
    """
    names = list(case_costs)
    for name in (model, other):
        if name not in case_costs:
            raise KeyError(f"no per-case costs for {name!r}; have {', '.join(names)}")
    matrix = np.stack([np.asarray(case_costs[name], dtype=float) for name in names])  # (models, n)
    n = matrix.shape[1]
    if n == 0:
        raise ValueError("no cases to price: the pilot log or test split is empty")
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(names)))
    for start in range(0, resamples, 250):  # chunks keep memory small for large splits
        draw = rng.integers(0, n, size=(min(250, resamples - start), n))
        means[start : start + len(draw)] = matrix[:, draw].mean(axis=2).T
    scale = float(cases_per_month)
    point = matrix.mean(axis=1) * scale
    costs = {name: _interval(point[i], means[:, i] * scale) for i, name in enumerate(names)}
    i, j = names.index(model), names.index(other)
    saving = _interval(point[j] - point[i], (means[:, j] - means[:, i]) * scale)
    return CostComparison(costs, model, other, saving, n, resamples)


def money(value: float) -> str:
    """EUR with thousands separators and no cents: the page's one money format."""
    return f"{'−' if value < 0 else ''}€{abs(value):,.0f}"


def saving_sentence(saving: Interval, model: str, other: str) -> str:
    """Plain words for a saving: which side is cheaper, by how much, or that nobody can tell."""
    span = f"95% interval {money(saving.low)} to {money(saving.high)} per month"
    if saving.includes_zero:
        return (f"No measurable difference: {model} and {other} cost about the same on these cases "
                f"({span}, which includes zero).")  # fmt: skip
    if saving.value >= 0:
        return f"{model} saves {money(saving.value)} per month over {other} ({span})."
    return (f"{model} costs {money(-saving.value)} more per month than {other} "
            f"(95% interval {money(-saving.high)} to {money(-saving.low)} more).")  # fmt: skip


def best_baseline(accuracies: Mapping[str, float], model: str) -> str | None:
    """The compared model's default: the most accurate model other than ``model`` (ties: first)."""
    others = [(value, -i, name) for i, (name, value) in enumerate(accuracies.items()) if name != model]
    return max(others)[2] if others else None


# --------------------------------------------------------------------------- pilot log


class PilotLogError(ValueError):
    """A pilot log that cannot be read: the message says which row or column and what to fix."""


@dataclass(frozen=True)
class PilotLog:
    """A pilot: for each case the current process's decision and, where known, the true outcome."""

    case_ids: tuple[str, ...]
    current: np.ndarray  # (n,) class index the current process decided
    outcome: np.ndarray  # (n,) true class index, -1 where not (yet) known
    costs: dict[str, np.ndarray] = field(default_factory=dict)  # optional per-case prices, NaN where absent

    @property
    def known(self) -> np.ndarray:
        return self.outcome >= 0


def read_pilot_log(source: str | bytes | io.IOBase, class_names: Sequence[str]) -> PilotLog:
    """Parse and check a pilot log CSV; every problem is a ``PilotLogError`` naming row and column.

    Columns: ``case_id``, ``current_decision`` (a class name), ``outcome`` (a class
    name, blank where unknown), optional ``false_alarm_cost``, ``miss_cost``,
    ``wrong_fault_cost`` (EUR per case, blank: the calculator's price).
    """
    import pandas as pd

    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PilotLogError(f"not a readable CSV file: {error}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in PILOT_COLUMNS if c not in frame.columns]
    if missing:
        raise PilotLogError(f"missing column(s) {', '.join(missing)}; the log needs {', '.join(PILOT_COLUMNS)} "
                            f"(found {', '.join(frame.columns) or 'none'})")  # fmt: skip
    if not len(frame):
        raise PilotLogError("the pilot log has a header but no rows")
    index = {name: i for i, name in enumerate(class_names)}
    ids = [s.strip() for s in frame["case_id"]]
    empty = [i + 2 for i, s in enumerate(ids) if not s]
    if empty:
        raise PilotLogError(f"row {empty[0]}: case_id is empty")
    seen: dict[str, int] = {}
    for row, case_id in enumerate(ids, start=2):
        if case_id in seen:
            raise PilotLogError(f"row {row}: case_id {case_id!r} repeats row {seen[case_id]}")
        seen[case_id] = row

    def classes(column: str, allow_blank: bool) -> np.ndarray:
        out = np.empty(len(frame), dtype=int)
        for row, value in enumerate(frame[column], start=2):
            value = value.strip()
            if not value and allow_blank:
                out[row - 2] = -1
            elif value in index:
                out[row - 2] = index[value]
            else:
                raise PilotLogError(f"row {row}: {column} {value!r} is not a class of this model "
                                    f"({', '.join(class_names)})")  # fmt: skip
        return out

    costs = {}
    for column in PILOT_COST_COLUMNS:
        if column in frame.columns:
            values = np.full(len(frame), np.nan)
            for row, value in enumerate(frame[column], start=2):
                if value.strip():
                    try:
                        values[row - 2] = float(value)
                    except ValueError:
                        raise PilotLogError(f"row {row}: {column} {value!r} is not a number") from None
                    if not math.isfinite(values[row - 2]) or values[row - 2] < 0:
                        raise PilotLogError(f"row {row}: {column} must be a cost of 0 or more, got {value!r}")
            costs[column] = values
    log = PilotLog(tuple(ids), classes("current_decision", False), classes("outcome", True), costs)
    if not log.known.any():
        raise PilotLogError("no row has a known outcome, so neither side can be priced yet")
    return log


def align_decisions(log: PilotLog, ids: Sequence[str], predicted: np.ndarray) -> np.ndarray:
    """The model's decision for each pilot case, looked up by case id in its predictions."""
    where = {case_id: i for i, case_id in enumerate(ids)}
    unknown = [c for c in log.case_ids if c not in where]
    if unknown:
        raise PilotLogError(f"{len(unknown)} case id(s) are not in the model's data, e.g. {unknown[0]!r}; "
                            "a pilot log names cases of the split the model was run on")  # fmt: skip
    return np.asarray(predicted)[[where[c] for c in log.case_ids]]


@dataclass(frozen=True)
class PilotReadout:
    """Both sides of a pilot priced on the cases whose outcome is known."""

    comparison: CostComparison  # "model" vs "current process"
    cases: int
    known: int
    accuracy: dict[str, float]
    errors: dict[str, int]


CURRENT = "current process"


def pilot_readout(log: PilotLog, model_decisions: np.ndarray, normal: int | None, prices: Prices, model: str = "model",
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PilotReadout:  # fmt: skip
    """Monthly cost of the model and of the current process on the pilot, with the saving's interval."""
    known = log.known
    labels = log.outcome[known]
    costs = {name: values[known] for name, values in log.costs.items()}
    sides = {model: np.asarray(model_decisions)[known], CURRENT: log.current[known]}
    case_costs = {name: error_costs(labels, decided, normal, prices, costs) for name, decided in sides.items()}
    comparison = compare_costs(case_costs, model, CURRENT, prices.cases_per_month, resamples, seed)
    return PilotReadout(
        comparison, len(log.case_ids), int(known.sum()),
        {name: float((decided == labels).mean()) for name, decided in sides.items()},
        {name: int((decided != labels).sum()) for name, decided in sides.items()},
    )  # fmt: skip


@dataclass(frozen=True)
class BreakEven:
    """Months until a one-off cost is paid back by the monthly saving (None: not on this evidence)."""

    months: float | None
    low: float | None  # at the saving's upper bound
    high: float | None  # at the saving's lower bound (None: may never pay back)

    @property
    def sentence(self) -> str:
        if self.months is None:
            return "It does not pay back on this evidence: the saving is not above zero."
        if self.high is None:
            return (f"It pays back in about {self.months:.1f} months at the measured saving, but the interval "
                    "includes no saving at all, so it may never pay back.")  # fmt: skip
        return f"It pays back in about {self.months:.1f} months (95% interval {self.low:.1f} to {self.high:.1f})."


def break_even_months(one_off_cost: float, saving: Interval) -> BreakEven:
    """``one_off_cost`` divided by the monthly saving, with the interval's ends swapped over."""
    if one_off_cost < 0:
        raise ValueError(f"a one-off cost cannot be negative, got {one_off_cost}")
    if saving.value <= 0:
        return BreakEven(None, None, None)
    low = one_off_cost / saving.high if saving.high > 0 else None
    high = one_off_cost / saving.low if saving.low > 0 else None
    return BreakEven(one_off_cost / saving.value, low, high)
