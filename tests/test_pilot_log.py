"""The shipped pilot log: reproducible from its script, readable, and its current process as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from deq_core.costs import read_pilot_log

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "sample_data" / "pilot" / "inspection-pilot.csv"


def _script():
    spec = importlib.util.spec_from_file_location("make_pilot_log", REPO / "scripts" / "make_pilot_log.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_pilot_log_is_what_the_script_generates():
    script = _script()
    assert SHIPPED.read_text() == script.as_csv(script.pilot_rows())


def test_shipped_pilot_log_reads_with_known_and_unknown_outcomes():
    classes = ("ok", "scratch", "crack", "overheating", "bearing_wear", "misalignment")
    log = read_pilot_log(SHIPPED.read_bytes(), classes)
    assert len(log.case_ids) == 300 and 0.7 < log.known.mean() < 0.9
    assert (log.costs["miss_cost"] == 4000).sum() == 12
