"""CPU against CUDA on the shipped DEQs: decisions, probabilities and attributions of the same cases.

    python scripts/gpu_check.py [--cases 20] [--json out.json]

Exits 0 when every decision agrees, probabilities are within 1e-4 and attribution
totals within 1e-3 (float32 kernels differ between devices in the last bits, and an
equilibrium solve can amplify that by its iteration count); 1 otherwise; 3 when no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deq_core import Lens  # noqa: E402

MODELS = ("inspection-deq", "handwritten-deq")
PROBABILITY_TOLERANCE, ATTRIBUTION_TOLERANCE = 1e-4, 1e-3


def compare(name: str, cases: int) -> dict:
    cpu, gpu = Lens.open(ROOT / "assets" / "models" / name, "cpu"), Lens.open(ROOT / "assets" / "models" / name, "cuda")
    data = cpu.data("test", cases)
    flips, worst_p, worst_a = 0, 0.0, 0.0
    for case_id in data.ids:
        case = cpu.case(case_id, data=data)
        a, b = cpu.decide(case), gpu.decide(case)
        flips += a.prediction != b.prediction
        worst_p = max(worst_p, float(np.abs(a.probabilities - b.probabilities).max()))
        ea, eb = cpu.explain(case, n_steps=32), gpu.explain(case, n_steps=32)
        worst_a = max(worst_a, float(np.abs(np.asarray(ea.attribution.totals) - np.asarray(eb.attribution.totals)).max()))
    return {"model": name, "cases": len(data), "decision_flips": int(flips), "max_probability_diff": worst_p,
            "max_attribution_total_diff": worst_a,
            "ok": flips == 0 and worst_p <= PROBABILITY_TOLERANCE and worst_a <= ATTRIBUTION_TOLERANCE}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here")
        return 3
    rows = [compare(name, args.cases) for name in MODELS]
    for r in rows:
        print(f"{r['model']}: {r['cases']} cases, {r['decision_flips']} flips, probabilities within "
              f"{r['max_probability_diff']:.1e}, attribution totals within {r['max_attribution_total_diff']:.1e}: "
              f"{'OK' if r['ok'] else 'DIFFERS'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
