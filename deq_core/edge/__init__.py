"""On the edge: a DEQ exported to ONNX with a fixed solver budget of K steps.

    deq-lens edge steps  --model M [--split val]                    # flips against K, the K chosen from data
    deq-lens edge export --model M --steps auto|K [--precision fp32|int8] --out m.onnx
    deq-lens edge check  --model M --onnx m.onnx [--split test] [--json]

Each takes ``--trust-code`` for a model that is your own code (adapter.json), as every
other command does; ``python -m deq_core.edge`` is the same command.

The graph is encoders + K unrolled damped fixed-point steps + the head (``graph``); K is
the smallest from which on every validation case decides as the full model (``steps``);
``check`` measures the file against the full model (``check``). onnx and onnxruntime are
imported only inside the functions that use them (``pip install .[edge]``).
"""

from __future__ import annotations

import argparse
import json

from deq_core.edge.check import EdgeCheck, check_onnx, format_check, run_onnx, session
from deq_core.edge.graph import (
    PRECISIONS, ExplicitAdaptivePool, export_onnx, iterates, read_metadata, sha256, unrolled,
)  # fmt: skip
from deq_core.edge.steps import MAX_STEPS, StepRow, StepsTable, choose_steps, steps_table

__all__ = ["EdgeCheck", "ExplicitAdaptivePool", "MAX_STEPS", "PRECISIONS", "StepRow", "StepsTable", "check_onnx",
           "choose_steps", "export_onnx", "format_check", "iterates", "main", "read_metadata", "run_onnx",
           "session", "sha256", "steps_table", "unrolled", "missing_runtime"]  # fmt: skip

INSTALL_HINT = "pip install .[edge]  (onnx, onnxruntime and onnxscript, pinned in pyproject.toml)"


def missing_runtime() -> str | None:
    """None when onnx and onnxruntime import; otherwise what is missing and how to install it."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return f"{' and '.join(missing)} not installed: {INSTALL_HINT}" if missing else None


def _steps_arg(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        steps = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps takes an integer >= 1 or 'auto', got {value!r}") from None
    if steps < 1:
        raise argparse.ArgumentTypeError(f"--steps must be >= 1, got {steps}")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deq-lens edge", description="ONNX export with a fixed solver budget")
    sub = parser.add_subparsers(dest="verb", required=True)
    st = sub.add_parser("steps", help="flips and probability gaps against K; the K chosen from data")
    st.add_argument("--model", required=True)
    st.add_argument("--split", default="val")
    st.add_argument("--max-steps", type=int, default=MAX_STEPS)
    st.add_argument("--json", action="store_true")
    ex = sub.add_parser("export")
    ex.add_argument("--model", required=True)
    ex.add_argument("--steps", type=_steps_arg, required=True,
                    help="K, or 'auto': the smallest K from which on every validation case decides as the full model")
    ex.add_argument("--solver", choices=["fixed_point"], default="fixed_point",
                    help="Anderson does not export (its least-squares step has no ONNX lowering)")
    ex.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ex.add_argument("--out", required=True)
    ch = sub.add_parser("check")
    ch.add_argument("--model", required=True)
    ch.add_argument("--onnx", required=True)
    ch.add_argument("--split", default="test")
    ch.add_argument("--repeats", type=int, default=20)
    ch.add_argument("--max-steps", type=int, default=MAX_STEPS, help="rows of the flips-against-K table")
    ch.add_argument("--json", action="store_true")
    for verb in (st, ex, ch):
        verb.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    args = parser.parse_args(argv)
    if args.verb != "steps":
        hint = missing_runtime()
        if hint:
            parser.error(hint)
    from deq_core.engine.adapter import allowed_code, trust_for

    grant = trust_for(args.trust_code, args.model)
    # Export and check open the model folder again themselves: the leave covers those loads too (--model only).
    with allowed_code(*([grant] if grant else [])):
        return _run(args, grant)


def _run(args, grant) -> int:
    from deq_core.lens import Lens

    lens = Lens.open(args.model, device="cpu", trust_code=grant)
    if args.verb == "steps":
        table = steps_table(lens, args.split, args.max_steps)
        print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
        return 0
    if args.verb == "export":
        steps = args.steps
        if steps == "auto":
            steps, table = choose_steps(lens, "val")
            print(table.format())
        print(export_onnx(lens, steps, args.out, args.precision))
        return 0
    result = check_onnx(lens, args.onnx, args.split, repeats=args.repeats)
    table = steps_table(lens, args.split, max(args.max_steps, result.steps))
    if args.json:
        print(json.dumps(result.to_dict() | {"steps_table": table.to_dict()}, indent=2))
    else:
        print(format_check(result) + "\n\nflips against K (PyTorch, the same unroll):\n" + table.format())
    return 0
