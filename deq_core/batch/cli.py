"""``deq-lens batch``: audit every case of a dataset folder (see ``deq_core.batch.run``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parser(prog: str = "python -m deq_core.batch") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Audit many decisions: batched records as Parquet + CSV, "
                                "resumable after a kill (rerun the same command).")  # fmt: skip
    p.add_argument("--model", required=True, type=Path, help="model folder")
    p.add_argument("--cases", required=True, type=Path, help="dataset folder (or its manifest.csv)")
    p.add_argument("--out", required=True, type=Path, help="run folder (a rerun continues it)")
    p.add_argument("--decisions", type=Path, default=None, help="CSV case_id,decision[,outcome] from production")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, ray://host:port); default: local mode")
    p.add_argument("--workers", type=int, default=1, help="Ray actors (each holds one model)")
    p.add_argument("--chunk", type=int, default=32, help="cases per batched call")
    p.add_argument("--reports", action="store_true", help="also issue a verifiable report per case (slower)")
    p.add_argument("--no-ig", action="store_true", help="decision + Shapley only (no Integrated Gradients)")
    p.add_argument("--steps", type=int, default=0, help="Integrated Gradients steps (default: the reports')")
    p.add_argument("--starts", type=int, default=8, help="starts of the uniqueness check (0: no stability columns)")
    p.add_argument("--top-features", type=int, default=0, help="top-k IG features per modality as a JSON column")
    p.add_argument("--no-cross-check", action="store_true", help="skip Captum's FeatureAblation cross-check")
    p.add_argument("--log", default=None, help="audit-log URL (default $DEQ_LENS_AUDIT_DB)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def options_from(args: argparse.Namespace):
    from deq_core.engine.adapter import trust_for

    from .records import RecordOptions
    from .run import BatchOptions

    records = RecordOptions(n_steps=args.steps, cross_check=not args.no_cross_check, ig=not args.no_ig,
                            stability_starts=args.starts, top_features=args.top_features)  # fmt: skip
    return BatchOptions(model=args.model, cases=args.cases, out=args.out, decisions=args.decisions,
                        engine=args.engine, address=args.address, workers=args.workers, chunk=args.chunk,
                        reports=args.reports, log=args.log, records=records, progress=not args.no_progress,
                        threads=args.threads, trust_code=trust_for(args.trust_code, args.model))  # fmt: skip


def main(argv: list[str] | None = None, prog: str = "python -m deq_core.batch") -> int:
    """Run or continue a batch audit; exit 2 with a message on bad input."""
    from deq_core.data import DatasetError
    from deq_core.engine.checkpoint import ModelLoadError

    from .run import BatchError, run_batch

    args = parser(prog).parse_args(argv)
    try:
        result = run_batch(options_from(args))
    except (BatchError, DatasetError, ModelLoadError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        import json

        print(json.dumps({"out": str(result.out), "cases": result.cases, "chunks": result.chunks,
                          "computed_chunks": result.computed_chunks, "logged_rows": result.logged_rows,
                          "seconds": result.seconds, "steady_cases": result.steady_cases,
                          "steady_seconds": result.steady_seconds, "steady_rate": result.steady_rate}))  # fmt: skip
        return 0
    print(f"{result.cases} cases in {result.chunks} chunks ({result.computed_chunks} computed now, "
          f"{result.logged_rows} log rows appended) in {result.seconds:.1f} s -> {result.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
