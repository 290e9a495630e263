"""Cost intervals, wording, pilot logs and break-even (deq_core.costs)."""

from __future__ import annotations

import numpy as np
import pytest

from deq_core.costs import (
    CURRENT, Interval, PilotLogError, Prices, align_decisions, best_baseline, break_even_months,
    compare_costs, error_costs, pilot_readout, read_pilot_log, saving_sentence,
)  # fmt: skip

CLASSES = ("ok", "crack", "wear")
PRICES = Prices(1000, false_alarm_cost=10.0, miss_cost=100.0, wrong_fault_cost=1.0)


def test_error_costs_price_each_kind_of_error():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 0, 2, 2])  # right, false alarm, miss, wrong fault, right
    assert error_costs(labels, predicted, 0, PRICES).tolist() == [0, 10, 100, 1, 0]
    assert error_costs(labels, predicted, None, PRICES).tolist() == [0, 1, 1, 1, 0]
    per_case = {"miss_cost": np.array([np.nan, np.nan, 7.0, np.nan, np.nan])}
    assert error_costs(labels, predicted, 0, PRICES, per_case).tolist() == [0, 10, 7, 1, 0]


def test_a_clear_saving_excludes_zero_and_a_tie_reads_no_measurable_difference():
    rng = np.random.default_rng(1)
    cheap, dear = np.zeros(400), rng.choice([0.0, 100.0], size=400, p=[0.7, 0.3])
    result = compare_costs({"a": cheap, "b": dear}, "a", "b", 1000)
    assert result.saving.low > 0 and result.saving.value == pytest.approx(dear.mean() * 1000)
    assert result.costs["a"].value == 0 and "saves" in result.verdict
    same = compare_costs({"a": dear, "b": dear[::-1].copy()}, "a", "b", 1000)
    assert same.saving.includes_zero and same.verdict.startswith("No measurable difference")
    worse = compare_costs({"a": dear, "b": cheap}, "a", "b", 1000)
    assert "costs €" in worse.verdict and "more per month" in worse.verdict and "−" not in worse.verdict


def test_bootstrap_is_paired_and_seeded():
    rng = np.random.default_rng(2)
    base = rng.choice([0.0, 50.0], size=300)
    shifted = base + 1.0  # identical cases plus 1 each: a paired saving is exactly 1 per case
    result = compare_costs({"m": base, "o": shifted}, "m", "o", 100)
    assert result.saving.low == pytest.approx(100) and result.saving.high == pytest.approx(100)
    again = compare_costs({"m": base, "o": shifted}, "m", "o", 100)
    assert again.costs["m"] == result.costs["m"]


def test_saving_sentence_words():
    assert "No measurable" in saving_sentence(Interval(5, -1, 9), "DEQ", "late")
    assert saving_sentence(Interval(-4000, -6000, -2000), "DEQ", "late").startswith("DEQ costs €4,000 more per month")


def test_best_baseline_is_the_most_accurate_other_model():
    assert best_baseline({"deq": 0.99, "early": 0.9, "late": 0.95}, "deq") == "late"
    assert best_baseline({"deq": 0.99}, "deq") is None


def csv(text: str) -> bytes:
    return text.encode()


def test_pilot_log_reads_and_prices_both_sides():
    log = read_pilot_log(csv("case_id,current_decision,outcome,miss_cost\n"
                             "a,ok,ok,\nb,ok,crack,500\nc,crack,crack,\nd,wear,,\n"), CLASSES)  # fmt: skip
    assert log.known.tolist() == [True, True, True, False]
    decisions = align_decisions(log, ["d", "c", "b", "a"], np.array([2, 1, 1, 0]))
    assert decisions.tolist() == [0, 1, 1, 2]
    readout = pilot_readout(log, decisions, 0, PRICES, model="DEQ", resamples=200)
    assert readout.known == 3 and readout.errors == {"DEQ": 0, CURRENT: 1}
    assert readout.comparison.costs[CURRENT].value == pytest.approx(500 / 3 * 1000)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not a readable CSV"),
        ("id,decision\n1,ok\n", "missing column(s) case_id, current_decision, outcome"),
        ("case_id,current_decision,outcome\n", "no rows"),
        ("case_id,current_decision,outcome\na,ok,ok\na,ok,ok\n", "row 3: case_id 'a' repeats row 2"),
        ("case_id,current_decision,outcome\na,fine,ok\n", "row 2: current_decision 'fine' is not a class"),
        ("case_id,current_decision,outcome\na,ok,\n", "no row has a known outcome"),
        ("case_id,current_decision,outcome,miss_cost\na,ok,ok,lots\n", "row 2: miss_cost 'lots' is not a number"),
        ("case_id,current_decision,outcome,miss_cost\na,ok,ok,-3\n", "0 or more"),
        ("case_id,current_decision,outcome\n,ok,ok\n", "row 2: case_id is empty"),
    ],
)
def test_bad_pilot_logs_say_what_is_wrong(text, message):
    with pytest.raises(PilotLogError) as error:
        read_pilot_log(csv(text), CLASSES)
    assert message in str(error.value)


def test_pilot_case_ids_outside_the_data_are_named():
    log = read_pilot_log(csv("case_id,current_decision,outcome\nzz,ok,ok\n"), CLASSES)
    with pytest.raises(PilotLogError, match="'zz'"):
        align_decisions(log, ["a"], np.array([0]))


def test_break_even_months():
    result = break_even_months(12_000, Interval(1000, 500, 2000))
    assert (result.months, result.low, result.high) == (12, 6, 24) and "12.0 months" in result.sentence
    assert break_even_months(1, Interval(-5, -9, 1)).months is None
    assert break_even_months(100, Interval(10, -1, 20)).high is None
    with pytest.raises(ValueError):
        break_even_months(-1, Interval(1, 1, 1))


def test_cost_interval_figure_draws_each_interval_as_its_error_bar():
    from deq_core.figures import cost_intervals

    result = compare_costs({"a": np.array([0.0, 10, 0, 10]), "b": np.array([10.0, 10, 10, 0])}, "a", "b", 100)
    fig = cost_intervals({n: (c.value, c.low, c.high) for n, c in result.costs.items()}, highlight="a")
    bar = fig.data[0]
    assert list(bar.x) == ["a", "b"] and list(bar.y) == [500, 750]
    assert list(bar.error_y.array) == [result.costs[n].high - result.costs[n].value for n in ("a", "b")]
    assert list(bar.error_y.arrayminus) == [result.costs[n].value - result.costs[n].low for n in ("a", "b")]
    assert bar.marker.color[0] != bar.marker.color[1]
