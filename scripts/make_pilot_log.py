"""Generate the shipped pilot log: sample_data/pilot/inspection-pilot.csv (python scripts/make_pilot_log.py).

A pilot runs a new model beside the current process; this log plays the current
process's side. The "current process" is documented and reproducible: the decisions
of the shipped late-fusion model (assets/models/inspection-late) on the inspection
test split, the baseline a plant would run today. The outcome (the true class) is
known for 80% of the cases, chosen with a fixed seed, as in a pilot where some
parts have not come back from the lab yet; a few parts carry their own miss cost
(a premium customer's parts), the others use the calculator's price.

Deterministic: same models, same seed, same file (checked by tests/test_pilot_log.py).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CURRENT_PROCESS = REPO / "assets" / "models" / "inspection-late"
OUT = REPO / "sample_data" / "pilot" / "inspection-pilot.csv"
SEED = 23
KNOWN_SHARE = 0.8
PREMIUM_EVERY = 25  # every 25th case is a premium part with its own miss cost
PREMIUM_MISS_COST = 4000.0


def pilot_rows(seed: int = SEED) -> list[dict[str, str]]:
    """One row per test case: id, the late-fusion model's decision, the outcome where known, a premium cost."""
    import torch

    from deq_core import Lens

    torch.set_num_threads(1)
    lens = Lens.open(CURRENT_PROCESS, device="cpu")
    _, predictions = lens.evaluate()
    names = lens.class_names
    rng = np.random.default_rng(seed)
    known = rng.random(len(predictions.ids)) < KNOWN_SHARE
    rows = []
    for i, case_id in enumerate(predictions.ids):
        rows.append({
            "case_id": case_id,
            "current_decision": names[int(predictions.predicted[i])],
            "outcome": names[int(predictions.labels[i])] if known[i] else "",
            "miss_cost": f"{PREMIUM_MISS_COST:.0f}" if i % PREMIUM_EVERY == 0 else "",
        })  # fmt: skip
    return rows


def as_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="fail if the shipped file differs from a fresh one")
    args = parser.parse_args(argv)
    text = as_csv(pilot_rows())
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'differs from a fresh run'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: {text.count(chr(10)) - 1} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
