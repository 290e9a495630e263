"""Edge figures of issue 21 on the shipped DEQs, with MET/MISSED per target.

    OMP_NUM_THREADS=1 python benchmarks/edge.py [--models inspection-deq handwritten-deq] [--repeats 30] [--json PATH]

For each model: the flips-against-K table on the validation split picks K (the smallest
K from which on no validation decision differs from the full model) and the K at which
the probabilities settle within 1e-4 of the fixed point; then, on the test split,

- fp32 at the chosen K: decision agreement with the full model (target 100%) and the
  batch-1 latency ratio onnxruntime / PyTorch, medians of ``--repeats`` alternating runs,
  one thread each (target <= 0.5x);
- fp32 at the settled K: the largest probability gap to the fixed point (the tight
  reference solve, target <= 1e-4) and, beside it, to the full model, whose own solve
  stops at relative residual 1e-4 and is itself off the fixed point (printed);
- int8 at the chosen K (static QDQ quantisation, calibrated on 256 training cases):
  agreement >= 99.5%, accuracy within 0.5 point of the full model, file <= 0.35x fp32.

Seeds: none needed (no randomness: fixed splits, deterministic export and calibration).
The machine's load average is printed: latency is a ratio measured in one run, but a
busy machine still widens it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deq_core.edge import check_onnx, export_onnx, missing_runtime, steps_table  # noqa: E402
from deq_core import Lens  # noqa: E402

MODELS = ("inspection-deq", "handwritten-deq")


def measure(name: str, repeats: int, folder: Path) -> dict:
    lens = Lens.open(ROOT / "assets" / "models" / name, device="cpu")
    table = steps_table(lens, "val")
    k, settled = table.chosen_steps, table.settled_steps()
    if k is None:
        return {"model": name, "error": "no K up to 30 decides every validation case as the full model",
                "steps_table": table.to_dict()}  # fmt: skip
    fp32 = check_onnx(lens, export_onnx(lens, k, folder / f"{name}-k{k}.onnx"), "test", repeats=repeats)
    int8 = check_onnx(lens, export_onnx(lens, k, folder / f"{name}-k{k}-int8.onnx", precision="int8"), "test",
                      repeats=repeats)  # fmt: skip
    settled_check = None
    if settled is not None:
        settled_check = check_onnx(lens, export_onnx(lens, settled, folder / f"{name}-k{settled}.onnx"), "test",
                                   repeats=3)  # fmt: skip
    return {"model": name, "chosen_steps": k, "settled_steps": settled, "steps_table": table.to_dict(),
            "fp32": fp32.to_dict(), "int8": int8.to_dict(),
            "fp32_settled": None if settled_check is None else settled_check.to_dict()}  # fmt: skip


def targets(m: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) rows of one model."""
    fp32, int8, settled = m["fp32"], m["int8"], m["fp32_settled"]
    k = m["chosen_steps"]
    rows = [
        (f"fp32 K={k}: decision agreement 100%", f"{fp32['agreement']:.2%} ({fp32['flips']} flips)",
         fp32["agreement"] == 1.0),
        (f"fp32 K={k}: batch-1 latency <= 0.5x PyTorch", f"{fp32['latency_ratio_batch1']:.2f}x "
         f"({fp32['latency_ms']['batch1']['onnxruntime']['p50']:.2f} vs {fp32['latency_ms']['batch1']['pytorch']['p50']:.2f} ms)",
         fp32["latency_ratio_batch1"] <= 0.5),
    ]  # fmt: skip
    if settled is None:
        rows.append(("fp32 settled: max |dp| to fixed point <= 1e-4", "never settles up to K=30", False))
    else:
        rows.append((f"fp32 settled K={m['settled_steps']}: max |dp| to fixed point <= 1e-4",
                     f"{settled['max_difference_from_fixed_point']:.1e} (to the full model {settled['max_probability_difference']:.1e}; "
                     f"full model to fixed point {settled['full_from_fixed_point']:.1e})",
                     settled["max_difference_from_fixed_point"] <= 1e-4))  # fmt: skip
    rows += [
        (f"int8 K={k}: agreement >= 99.5%", f"{int8['agreement']:.2%}", int8["agreement"] >= 0.995),
        (f"int8 K={k}: accuracy within 0.5 point", f"{int8['accuracy_onnx']:.2%} vs {int8['accuracy_full']:.2%}",
         abs(int8["accuracy_onnx"] - int8["accuracy_full"]) <= 0.005),
        (f"int8 K={k}: file <= 0.35x fp32", f"{int8['size_bytes'] / fp32['size_bytes']:.3f}x "
         f"({int8['size_bytes'] / 1e6:.3f} / {fp32['size_bytes'] / 1e6:.3f} MB)",
         int8["size_bytes"] <= 0.35 * fp32["size_bytes"]),
    ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    hint = missing_runtime()
    if hint:
        parser.error(hint)
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            m = measure(name, args.repeats, Path(tmp))
            results.append(m)
            print(f"\n== {name}")
            if "error" in m:
                print(m["error"])
                continue
            print(f"validation: chosen K = {m['chosen_steps']}, probabilities within 1e-4 of the fixed point "
                  f"from K = {m['settled_steps']}; the full model is {m['steps_table']['full_vs_fixed_point']:.1e} "
                  "from its fixed point")  # fmt: skip
            rows = [(k, f"{r['flips']}", f"{r['max_dp_full']:.1e}", f"{r['max_dp_fixed_point']:.1e}")
                    for k, r in ((r["steps"], r) for r in m["steps_table"]["rows"]) if k <= 20]  # fmt: skip
            print("  K  flips  max|dp| full  max|dp| fixed point")
            for row in rows:
                print(f"{row[0]:3d}  {row[1]:>5}  {row[2]:>12}  {row[3]:>19}")
            width = max(len(t) for t, _, _ in targets(m))
            for target, measured, met in targets(m):
                print(f"  {target:<{width}}  {'MET   ' if met else 'MISSED'}  {measured}")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"load_average": load, "models": results}, indent=2) + "\n")
    return 0 if all("error" not in m and all(met for *_, met in targets(m)) for m in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
