"""``python -m deq_core.audit``: write reports (``report``), re-run them (``verify``), check the log (``verify-log``).

    python -m deq_core.audit report --model assets/models/handwritten-deq --case hw-0001 --out reports/hw-0001
    python -m deq_core.audit report --model assets/models/handwritten-deq --cases all --out reports/all
    python -m deq_core.audit verify reports/hw-0001/report.json
    python -m deq_core.audit verify-log
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from deq_core.audit.log import AuditLog
from deq_core.audit.record import ReportRecord
from deq_core.audit.report import HTML_NAME, JSON_NAME, ReportSettings, build_report, log_report
from deq_core.audit.verify import verify_report
from deq_core.engine.checkpoint import ModelLoadError, load_model
from deq_core.explain.attribution import DEFAULT_STEPS
from deq_core.explain.corrupt import CorruptionSet

DESCRIPTION = "Decision reports: one case's decision, its explanation and everything needed to re-run it."


def _report_cases(args) -> int:
    from tqdm import tqdm

    from deq_core.data import load_dataset

    model = load_model(args.model, device=args.device)
    dataset = args.data or model.config.dataset
    data = load_dataset(dataset, args.split, modalities=model.config.modalities)
    corruption = CorruptionSet.from_dict(json.loads(Path(args.corruption).read_text())) if args.corruption else None
    settings = ReportSettings(n_steps=args.steps, seed=args.seed)
    log = AuditLog(args.db)
    out = Path(args.out)
    if args.cases == "all":
        ids = list(data.ids)
    else:
        ids = [c.strip() for c in (args.cases or args.case).split(",") if c.strip()]
        unknown = [c for c in ids if c not in data.ids]
        if unknown:
            raise ValueError(f"{dataset}/{args.split} has no case {unknown[0]!r} (e.g. {data.ids[0]!r})")
    many = len(ids) > 1 or args.cases == "all"
    rows = []
    for case_id in tqdm(ids, desc="reports", unit="case", disable=not many):
        inputs, label = data.case(case_id)
        row = data.ids.index(case_id)
        report = build_report(model, args.model, inputs, case_id, texts={k: v[row] for k, v in data.texts.items()},
                              corruption=corruption, settings=settings,
                              source={"dataset": data.name, "split": args.split}, label=label)  # fmt: skip
        folder = out / _safe(case_id) if many else out
        json_path, _ = report.write(folder)
        log_report(report, log, json_path.resolve(), source="cli")
        r = report.data
        rows.append({
            "case_id": case_id, "label": r.prediction.label, "prediction": r.prediction.class_name,
            "confidence": r.prediction.confidence,
            "reliable": r.reliability.reliable, "converged": r.reliability.converged,
            "iterations": r.reliability.iterations, "report_sha256": report.sha256,
            "folder": str(folder),
        })  # fmt: skip
    if many:
        with open(out / "summary.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"{len(rows)} reports under {out}; summary in {out / 'summary.csv'}")
    else:
        print(f"{out / HTML_NAME}\n{out / JSON_NAME}\nprediction: {rows[0]['prediction']}  sha256: {rows[0]['report_sha256']}")
    return 0


def _safe(case_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def _verify(args) -> int:
    failed = 0
    for path in args.reports:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        result = verify_report(record, args.model)
        if result.ok:  # then the record reads; its tolerances are printed as the file has them (sorted keys)
            tolerances = dict(sorted(ReportRecord.from_dict(record).tolerances.to_dict().items()))
            print(f"OK: {path} verified ({', '.join(result.checked)}; tolerances {tolerances})")
            continue
        failed += 1
        print(f"FAILED: {path}")
        for problem in result.problems:
            print(f"  - {problem}")
    return 1 if failed else 0


def _verify_log(args) -> int:
    log = AuditLog(args.db)
    result = log.verify()
    if result.ok:
        print(f"OK: {result.entries} entries, chain intact ({log.url})")
        return 0
    print(f"FAILED: {log.url} ({result.entries} entries)")
    for problem in result.problems:
        print(f"  - {problem}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.audit", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write report.html and report.json for one or more cases")
    report.add_argument("--model", required=True, type=Path, help="model folder")
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--case", help="case id")
    which.add_argument("--cases", help="comma-separated case ids, or 'all'")
    report.add_argument("--out", required=True, type=Path, help="output folder")
    report.add_argument("--split", default="test", choices=("train", "val", "test"))
    report.add_argument("--data", default=None, help="dataset name or folder (default: the model's own)")
    report.add_argument("--corruption", default=None, help="JSON file of a CorruptionSet applied before the decision")
    report.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integrated Gradients steps")
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--device", default="cpu")
    report.add_argument("--db", default=None, help="audit log URL (default: $DEQ_LENS_AUDIT_DB or .cache/audit.sqlite)")
    verify = commands.add_parser("verify", help="re-run a report's decision and compare")
    verify.add_argument("reports", type=Path, nargs="+", metavar="report.json")
    verify.add_argument("--model", default=None, type=Path, help="model folder (default: the one recorded)")
    verify_log = commands.add_parser("verify-log", help="check the audit log's hash chain")
    verify_log.add_argument("--db", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return _report_cases(args)
        if args.command == "verify":
            return _verify(args)
        return _verify_log(args)
    except (ModelLoadError, ValueError, KeyError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if args.command == "report" else 1  # verify: anything but a full match is a failure



if __name__ == "__main__":
    raise SystemExit(main())
