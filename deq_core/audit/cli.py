"""``python -m deq_core.audit``: issue reports (``report``), re-run them (``verify``), check the log (``verify-log``).

    python -m deq_core.audit report --model assets/models/handwritten-deq --case hw-0001 --out reports/hw-0001
    python -m deq_core.audit report --model assets/models/handwritten-deq --cases all --out reports/all
    python -m deq_core.audit verify reports/hw-0001/report.json
    python -m deq_core.audit checkpoint --out head.json          # a signed copy of the log's head, to keep elsewhere
    python -m deq_core.audit verify-log --checkpoint head.json reports/hw-0001/report.json --files

Threat model, and what each check catches: ``docs/audit.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from deq_core.engine.adapter import trust_for
from deq_core.audit.log import AuditLog
from deq_core.audit.report import HTML_NAME, JSON_NAME, ReportSettings, build_report, issue, write_atomically
from deq_core.audit.files import check_files, read_checkpoint, safe_name
from deq_core.audit.signing import SigningKeyError
from deq_core.audit.verify import TOLERANCES, verify_report
from deq_core.engine.checkpoint import ModelLoadError, load_model
from deq_core.explain.attribution import DEFAULT_STEPS
from deq_core.explain.corrupt import CorruptionSet

DESCRIPTION = "Decision reports: one case's decision, its explanation and everything needed to re-run it."


def _report_cases(args) -> int:
    from tqdm import tqdm

    from deq_core.data import load_dataset

    model = load_model(args.model, device=args.device, trust_code=trust_for(args.trust_code, args.model))
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
    folders = {case_id: out / safe_name(case_id) if many else out for case_id in ids}
    taken = [f for f in folders.values() if (f / JSON_NAME).exists()]
    if taken:  # before anything is logged: a log entry must never point at another run's report
        raise FileExistsError(f"{taken[0] / JSON_NAME} already holds a report; write into another --out")
    rows = []
    for case_id in tqdm(ids, desc="reports", unit="case", disable=not many):
        inputs, label = data.case(case_id)
        row = data.ids.index(case_id)
        report = build_report(model, args.model, inputs, case_id, texts={k: v[row] for k, v in data.texts.items()},
                              corruption=corruption, settings=settings,
                              source={"dataset": data.name, "split": args.split}, label=label,
                              edge=args.onnx)  # fmt: skip
        folder = folders[case_id]
        report = issue(report, log, folder, source="cli", scripts=out)  # one plotly.min.js for the run
        if args.pdf:
            from deq_core.audit.pdf import write_report_pdf

            write_report_pdf(report, folder)
        r = report.data
        rows.append({
            "case_id": case_id, "label": r.prediction.label, "prediction": r.prediction.class_name,
            "confidence": r.prediction.confidence,
            "reliable": r.reliability.reliable, "converged": r.reliability.converged,
            "iterations": r.reliability.iterations, "report_sha256": report.sha256,
            "folder": str(folder),
        })  # fmt: skip
    if many:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(out / "summary.csv", buffer.getvalue())
        print(f"{len(rows)} reports under {out}; summary in {out / 'summary.csv'}")
    else:
        print(f"{out / HTML_NAME}\n{out / JSON_NAME}\nprediction: {rows[0]['prediction']}  sha256: {rows[0]['report_sha256']}")
    return 0


def _pdf(args) -> int:
    """``audit pdf report.json ...``: a PDF per report, from the record (read and checked field by field)."""
    from deq_core.audit.pdf import PDF_NAME, write_report_pdf

    if args.out is not None and len(args.reports) > 1 and not args.out.is_dir():
        raise ValueError(f"--out {args.out} must be an existing folder when there are {len(args.reports)} reports")
    for path in args.reports:
        target = args.out if args.out is not None else path.parent / PDF_NAME
        if target.is_dir():
            target = target / (PDF_NAME if len(args.reports) == 1 else f"{path.parent.name or path.stem}.pdf")
        print(write_report_pdf(path, target))
    return 0


def _verify(args) -> int:
    failed = 0
    log = AuditLog(args.db)
    for path in args.reports:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        folder = args.model or (record.get("model") or {}).get("folder") if isinstance(record, dict) else args.model
        trust = trust_for(args.trust_code, folder) if folder else False  # the folder verified, not any other
        result = verify_report(record, args.model, log, trust_code=trust, edge_file=args.onnx)
        if result.ok:  # the verifier's own tolerances (sorted keys), which the report's must equal
            tolerances = dict(sorted(TOLERANCES.to_dict().items()))
            print(f"OK: {path} verified ({', '.join(result.checked)}; tolerances {tolerances})")
            if result.unchecked:
                print(f"  not recomputable, resting on the signature: {'; '.join(result.unchecked)}")
            continue
        failed += 1
        print(f"FAILED: {path}")
        for problem in result.problems:
            print(f"  - {problem}")
    return 1 if failed else 0


def _verify_log(args) -> int:
    log = AuditLog(args.db)
    if (args.expect_hash is None) != (args.expect_count is None) and args.expect_count is None:
        raise ValueError("--expect-hash needs --expect-count")
    checkpoints = [(str(path), read_checkpoint(path)) for path in args.checkpoint]
    result = log.verify(checkpoints, expect_count=args.expect_count, expect_hash=args.expect_hash)
    problems = list(result.problems)
    notes: list[str] = []
    if args.files:
        file_problems, notes = check_files(log)
        problems += file_problems
    against = f", against {len(checkpoints)} checkpoint{'s' * (len(checkpoints) != 1)}" if checkpoints else ""
    if not problems:
        print(f"OK: {result.entries} entries, chain intact{against} ({log.url})")
        for note in notes:
            print(f"  note: {note}")
        return 0
    print(f"FAILED: {log.url} ({result.entries} entries{against})")
    for problem in problems:
        print(f"  - {problem}")
    for note in notes:
        print(f"  note: {note}")
    return 1


def _checkpoint(args) -> int:
    checkpoint = AuditLog(args.db).checkpoint()
    if checkpoint is None:
        raise ValueError("the audit log holds no signed checkpoint yet (nothing was recorded since checkpoints began)")
    text = json.dumps(checkpoint.to_dict(), indent=1, sort_keys=True) + "\n"
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.out, text)
        print(f"{args.out}: {checkpoint.count} entries, head {checkpoint.head_hash[:16]}...")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deq_core.audit", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="write report.html and report.json for one or more cases")
    report.add_argument("--model", required=True, type=Path, help="model folder")
    report.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
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
    report.add_argument("--onnx", default=None, type=Path,
                        help="an .onnx file exported from the model (deq-lens edge export) that also decided the case; "
                             "recorded with its SHA-256, K and precision, re-run by verify")  # fmt: skip
    report.add_argument("--pdf", action="store_true", help="also write report.pdf (from the signed record) beside report.json")
    pdf = commands.add_parser("pdf", help="write a PDF of an existing report.json (its figures from the record alone)")
    pdf.add_argument("reports", type=Path, nargs="+", metavar="report.json")
    pdf.add_argument("--out", default=None, type=Path, help="PDF file (one report) or folder (default: beside each report)")
    verify = commands.add_parser("verify", help="re-run a report's decision and compare")
    verify.add_argument("reports", type=Path, nargs="+", metavar="report.json")
    verify.add_argument("--model", default=None, type=Path, help="model folder (default: the one recorded)")
    verify.add_argument("--trust-code", action="store_true", help="the model is your own (adapter.json): import and run its code")
    verify.add_argument("--db", default=None, help="the audit log that must hold the reports (default as for report)")
    verify.add_argument("--onnx", default=None, type=Path,
                        help="where the exported model a report names is now (default: the path it records)")
    verify_log = commands.add_parser("verify-log", help="check the audit log's hash chain and signed checkpoints")
    verify_log.add_argument("--db", default=None)
    verify_log.add_argument("--checkpoint", nargs="+", type=Path, default=[], metavar="FILE_OR_REPORT",
                            help="checkpoints kept outside the log (exports or report.json files): the log must "
                            "still hold every state they signed")  # fmt: skip
    verify_log.add_argument("--expect-count", type=int, default=None, help="the log must hold at least this many entries")
    verify_log.add_argument("--expect-hash", default=None, help="... and entry --expect-count must hash to this")
    verify_log.add_argument("--files", action="store_true", help="also check every entry's report file on disk")
    checkpoint = commands.add_parser("checkpoint", help="export the log's newest signed checkpoint (keep it elsewhere)")
    checkpoint.add_argument("--db", default=None)
    checkpoint.add_argument("--out", default=None, type=Path, help="file to write (default: print it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            return _report_cases(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "checkpoint":
            return _checkpoint(args)
        if args.command == "pdf":
            return _pdf(args)
        return _verify_log(args)
    except (ModelLoadError, ValueError, KeyError, FileNotFoundError, FileExistsError, SigningKeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if args.command == "report" else 1  # verify: anything but a full match is a failure



if __name__ == "__main__":
    raise SystemExit(main())
