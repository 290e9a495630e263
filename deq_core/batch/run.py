"""The batch driver: chunks of cases through one engine, written by one writer, resumable after kill -9.

    run_batch(BatchOptions(model="assets/models/inspection-deq", cases="cases/", out="runs/may"))

Layout of a run folder::

    run.json                  what was asked (model checksum, cases, options): a rerun must ask the same
    state.json                chunks whose log rows are all appended (rewritten atomically)
    chunks/chunk-000003.parquet   one file per chunk: written under a temporary name, then renamed
    records.parquet, summary.csv, summary.json   the whole run, written when every chunk is done
    reports/<case id>/        with --reports: a verifiable report per case (Lens.issue)

Why it survives a kill at any moment: a chunk's records become visible only by the
atomic rename of a complete file, so no record is half-written; a chunk whose file
exists is never computed again. The audit log is appended by the driver alone, chunk
by chunk in case order, after the chunk's file is on disk, each chunk's rows in one
transaction (``AuditLog.append_many``); a chunk is marked logged when its rows are in.
A kill between the two leaves a chunk on disk but not marked: on restart its rows are checked against the log by record hash (or by the
report file and claim with --reports) and only the missing ones appended, so no row
is logged twice and none is lost.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .records import RecordOptions

RUN_FILE, STATE_FILE, CHUNKS, REPORTS = "run.json", "state.json", "chunks", "reports"
RECORDS_FILE, SUMMARY_CSV, SUMMARY_JSON = "records.parquet", "summary.csv", "summary.json"
DEFAULT_CHUNK = 32
LOG_SOURCE = "batch"
SUMMARY_COLUMNS = ("case_id", "label", "decision", "confidence", "status", "iterations", "reliable",
                   "spectral_radius", "unique", "production_decision", "outcome", "disagrees")  # fmt: skip


class BatchError(ValueError):
    """A batch cannot run as asked (bad decisions file, a run folder made for another question)."""


@dataclass(frozen=True)
class BatchOptions:
    """One ``deq-lens batch`` command.

    Attributes:
        model: model folder; cases: dataset folder (or its manifest.csv); out: the run folder.
        decisions: optional CSV ``case_id,decision[,outcome]`` of what production decided.
        engine: ``"local"`` (no Ray) or ``"ray"``; address: Ray cluster (None: local mode).
        workers: Ray actors; chunk: cases per batched call; reports: issue a report per case.
        log: audit-log URL (None: the default); records: what each record holds.
        progress: show the tqdm bar on stderr.
        trust_code: leave to run a user's model code (adapter.json): a ``CodeTrust`` for the
            model folder (``--trust-code``), or True; the Ray actors get the same leave.
    """

    model: str | Path
    cases: str | Path
    out: str | Path
    decisions: str | Path | None = None
    engine: str = "local"
    address: str | None = None
    workers: int = 1
    chunk: int = DEFAULT_CHUNK
    reports: bool = False
    log: str | None = None
    records: RecordOptions = field(default_factory=RecordOptions)
    progress: bool = True
    threads: int = 1
    trust_code: Any = False  # deq_core.engine.adapter.TrustCode


@dataclass(frozen=True)
class BatchResult:
    """What a run did: cases in all, chunks computed now (the rest were already done), rows logged now."""

    out: Path
    cases: int
    chunks: int
    computed_chunks: int
    logged_rows: int
    seconds: float
    steady_cases: int = 0  # cases computed after the first chunk came back (start-up excluded)
    steady_seconds: float = 0.0  # from the first computed chunk back to the last

    @property
    def steady_rate(self) -> float | None:
        """Cases per second once the engine runs (model loads, Ray start and the first chunk excluded)."""
        return self.steady_cases / self.steady_seconds if self.steady_seconds > 0 else None


# ----------------------------------------------------------------------------- inputs


def _cases_folder(cases: str | Path) -> Path:
    path = Path(cases)
    return path.parent if path.is_file() and path.name.endswith(".csv") else path


def read_decisions(path: str | Path, class_names: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """``{case_id: (production decision, outcome or None)}`` from a CSV with a header.

    Columns: ``case_id`` (or ``id``), ``decision`` (or ``production_decision``), optional
    ``outcome``. Class names must be the model's; every problem is named with its line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise BatchError(f"{path}: cannot read the decisions file ({error})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    pick = lambda *names: next((n for n in names if n in header), None)  # noqa: E731
    id_col, dec_col, out_col = pick("case_id", "id"), pick("decision", "production_decision"), pick("outcome")
    if id_col is None or dec_col is None:
        raise BatchError(f"{path}: the header must name a case_id (or id) and a decision column, found {header}")
    found, seen, problems = {}, set(), []
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        case_id, decision, outcome = row.get(id_col, ""), row.get(dec_col, ""), row.get(out_col or "", "") or None
        if not case_id:
            problems.append(f"line {line}: empty case id")
        elif case_id in seen:
            problems.append(f"line {line}: case {case_id!r} appears twice")
        elif decision not in class_names:
            problems.append(f"line {line}: decision {decision!r} is not a class ({', '.join(class_names)})")
        elif outcome is not None and outcome not in class_names:
            problems.append(f"line {line}: outcome {outcome!r} is not a class ({', '.join(class_names)})")
        else:
            found[case_id] = (decision, outcome)
        seen.add(case_id)
    if problems:
        raise BatchError(f"{path}: " + "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""))
    return found


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _question(options: BatchOptions, lens, folder: Path) -> dict:
    """What the run answers; a rerun into the same folder must ask exactly this."""
    manifest = folder / "manifest.csv"
    return {
        "model": str(Path(options.model).resolve()),
        "model_checksum": lens.checksum,
        "cases": str(folder.resolve()),
        "manifest_sha256": _file_sha(manifest) if manifest.is_file() else None,
        "decisions_sha256": None if options.decisions is None else _file_sha(Path(options.decisions)),
        "chunk": options.chunk,
        "reports": options.reports,
        "records": asdict(options.records),
    }


# ----------------------------------------------------------------------------- files


def write_atomic(path: Path, write) -> None:
    """``write(temporary path)``, fsync, then rename onto ``path``: readers see all of it or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        with open(temporary, "rb") as done:
            os.fsync(done.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_atomic(path, lambda p: pq.write_table(pa.Table.from_pylist(rows), p))


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def chunk_path(out: Path, index: int) -> Path:
    return out / CHUNKS / f"chunk-{index:06d}.parquet"


def read_records(out: str | Path):
    """The run's records as a pandas DataFrame (``records.parquet``, or the chunks written so far)."""
    import pandas as pd

    out = Path(out)
    if (out / RECORDS_FILE).is_file():
        return pd.read_parquet(out / RECORDS_FILE)
    chunks = sorted((out / CHUNKS).glob("chunk-*.parquet"))
    if not chunks:
        raise FileNotFoundError(f"{out} holds no batch records")
    return pd.concat([pd.read_parquet(p) for p in chunks], ignore_index=True)


def list_runs(root: str | Path) -> list[Path]:
    """Run folders under ``root`` (those with a ``run.json``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if (p / RUN_FILE).is_file()]
    return sorted(runs, key=lambda p: (p / RUN_FILE).stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of the case set: the unit of work, of files and of resumption."""

    index: int
    start: int
    stop: int


def plan(n: int, size: int) -> list[Chunk]:
    if size < 1:
        raise BatchError(f"--chunk must be at least 1, got {size}")
    return [Chunk(k, s, min(s + size, n)) for k, s in enumerate(range(0, n, size))]


def chunk_payload(data, chunk: Chunk, report_source: dict | None = None) -> dict:
    """What a worker needs for one chunk, as plain arrays (Ray ships it to an actor); ``report_source``: what
    the chunk's reports record as their source (None: no reports)."""
    rows = range(chunk.start, chunk.stop)
    return {
        "report_source": report_source,
        "index": chunk.index,
        "inputs": [x[chunk.start : chunk.stop].numpy() for x in data.inputs],
        "ids": [data.ids[i] for i in rows],
        "labels": [int(data.labels[i]) for i in rows],
        "texts": [{k: v[i] for k, v in data.texts.items()} for i in rows],
        "dataset": data.name,
    }


def compute_payload(lens, payload: dict, options: RecordOptions) -> tuple[list[dict], list | None]:
    """Records of one chunk's payload (the same call on every engine), and its decision reports when the
    payload asks for them (``report_source``) and the records' explanations are a report's (else None:
    the driver explains those cases again, with the report's settings)."""
    import torch

    from .records import chunk_records, chunk_reports, reports_reuse_records

    inputs = [torch.from_numpy(x) for x in payload["inputs"]]
    torch.manual_seed(0)
    source = payload.get("report_source")
    if source is None or not reports_reuse_records(options):
        rows = chunk_records(lens, inputs, payload["ids"], payload["labels"], payload["texts"], options,
                             payload["dataset"])  # fmt: skip
        return rows, None
    rows, cases, explanations = chunk_records(lens, inputs, payload["ids"], payload["labels"], payload["texts"],
                                              options, payload["dataset"], keep_explanations=True)  # fmt: skip
    return rows, chunk_reports(lens, cases, explanations, source)


def local_engine(lens, payloads: Iterator[dict], options: RecordOptions) -> Iterator[tuple[int, list[dict], list | None]]:
    """Chunks in order, in this process: no Ray imported."""
    for payload in payloads:
        yield payload["index"], *compute_payload(lens, payload, options)


# ----------------------------------------------------------------------------- the log


def _production(rows: list[dict], decisions: dict | None) -> list[dict]:
    if decisions is None:
        return rows
    for row in rows:
        given = decisions.get(row["case_id"])
        row["production_decision"] = None if given is None else given[0]
        row["outcome"] = None if given is None else given[1]
        row["disagrees"] = None if given is None else given[0] != row["decision"]
    return rows


def _log_summary(row: dict) -> dict:
    return {"probability": row["confidence"], "label": row["label"], "reliable": row["reliable"],
            "converged": row["converged"], "corruption": None, "plain": f"batch record of {row['case_id']}"}  # fmt: skip


def _logged_hashes(log, model_name: str, case_id: str) -> set[str]:
    return {e.report_sha256 for e in log.entries(model_name=model_name, case_id=case_id)}


def log_chunk(lens, log, out: Path, index: int, rows: list[dict], cases: dict | None, check_existing: bool,
              reports: list | None = None) -> int:  # fmt: skip
    """Append the chunk's rows to the audit log in case order; returns how many were appended.

    ``check_existing``: the chunk may be partly logged (a kill): skip rows already there.
    With ``cases`` (case id -> Case; ``--reports``) each row is a report issued into
    ``reports/<case id>``: one of ``reports`` (built by the engine from the row's own
    explanation), or, where there is none (a chunk logged after a restart), ``Lens.issue``.
    """
    if cases is not None:
        built = {r.case_id: r for r in reports or ()}
        return sum(_issue_report(lens, log, out, row, cases[row["case_id"]], built.get(row["case_id"])) for row in rows)
    missing = [row for row in rows
               if not (check_existing and row["record_sha256"] in _logged_hashes(log, lens.name, row["case_id"]))]  # fmt: skip
    path = str(chunk_path(out, index).resolve())
    log.append_many([dict(model_name=lens.name, model_checksum=lens.checksum, case_id=row["case_id"],
                          prediction=row["decision"], report_sha256=row["record_sha256"], report_path=path,
                          summary=_log_summary(row), source=LOG_SOURCE) for row in missing])  # fmt: skip
    return len(missing)


def report_source(case, out: Path) -> dict:
    """What a batch report records as its source."""
    return {"dataset": case.provenance.dataset, "split": "all", "batch": str(out)}


def _issue_report(lens, log, out: Path, row: dict, case, report=None) -> int:
    """One verifiable report (``report``, else via ``Lens.issue``); one already issued (or logged before a kill)
    is not redone."""
    from deq_core.audit.report import CLAIM_NAME, JSON_NAME, issue, read_claim

    folder = out / REPORTS / row["case_id"]
    if (folder / JSON_NAME).exists():
        return 0
    claim = read_claim(folder)
    if claim is not None:
        if claim.get("report_sha256") in _logged_hashes(log, lens.name, row["case_id"]):
            return 0  # logged, then killed before the file was written: the claim stays as the log's explanation
        (folder / CLAIM_NAME).unlink()  # killed before logging: nothing points here
    if report is not None:
        issue(report, log, folder)
    else:
        lens.issue(case, folder, log=log, source=report_source(case, out))
    return 1


# ----------------------------------------------------------------------------- the run


def _load_cases(lens, folder: Path):
    from deq_core.data import load_folder

    return load_folder(folder, split="all", modalities=lens.modalities)


def _open_run(out: Path, question: dict) -> dict:
    """The run's state; refuses a folder made for another question."""
    if (out / RUN_FILE).is_file():
        asked = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
        if asked != question:
            differs = sorted(k for k in question if asked.get(k) != question[k])
            raise BatchError(f"{out} holds a run of another question (differs in {', '.join(differs)}); "
                             "use a new --out folder")  # fmt: skip
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / RUN_FILE, question)
    for stale in (out / CHUNKS).glob(".*.partial"):  # a chunk file a kill interrupted: never renamed, never read
        stale.unlink(missing_ok=True)
    state = out / STATE_FILE
    return json.loads(state.read_text(encoding="utf-8")) if state.is_file() else {"logged": []}


def run_batch(options: BatchOptions, lens=None) -> BatchResult:
    """Run (or continue) a batch audit; see the module docstring for the guarantees."""
    import torch

    from deq_core.audit import AuditLog, default_url
    from deq_core.lens import Lens

    started = time.perf_counter()
    torch.set_num_threads(max(1, options.threads))
    if options.engine not in ("local", "ray"):
        raise BatchError(f"--engine must be local or ray, got {options.engine!r}")
    if options.workers < 1:
        raise BatchError(f"--workers must be at least 1, got {options.workers}")
    lens = lens or Lens.open(options.model, device="cpu", trust_code=options.trust_code)
    folder = _cases_folder(options.cases)
    data = _load_cases(lens, folder)
    decisions = None if options.decisions is None else read_decisions(options.decisions, lens.class_names)
    out = Path(options.out)
    state = _open_run(out, _question(options, lens, folder))
    chunks = plan(len(data), options.chunk)
    logged = set(state["logged"])
    log = AuditLog(options.log or default_url())
    on_disk = {c.index for c in chunks if chunk_path(out, c.index).is_file()}
    todo = [c for c in chunks if c.index not in on_disk]
    cases = None
    if options.reports:
        from .records import chunk_cases

        listed = chunk_cases(lens.modalities, data.inputs, data.ids, data.labels.tolist(),
                             [{k: v[i] for k, v in data.texts.items()} for i in range(len(data))], data.name)  # fmt: skip
        cases = {c.key: c for c in listed}
    bar = _progress(options, len(data), sum(c.stop - c.start for c in chunks if c.index in on_disk))
    appended = 0
    first_back, last_back, steady = None, None, 0

    def finish(index: int, rows: list[dict], check: bool, reports: list | None = None) -> None:
        nonlocal appended
        appended += log_chunk(lens, log, out, index, rows, cases, check, reports)
        logged.add(index)
        _write_json(out / STATE_FILE, {"logged": sorted(logged)})

    # Chunks already on disk but not fully logged (a kill after the rename): log what is missing, in order.
    for c in chunks:
        if c.index in on_disk and c.index not in logged:
            finish(c.index, _read_parquet(chunk_path(out, c.index)), check=True)
    source = report_source(next(iter(cases.values())), out) if cases else None  # None: no reports
    payloads = (chunk_payload(data, c, source) for c in todo)
    engine = local_engine(lens, payloads, options.records) if options.engine == "local" else _ray(options, payloads)
    for index, rows, reports in engine:  # in chunk order, whatever the engine
        rows = _production(rows, decisions)
        _write_parquet(chunk_path(out, index), rows)
        finish(index, rows, check=False, reports=reports)
        bar.update(len(rows))
        last_back = time.perf_counter()
        if first_back is None:
            first_back = last_back
        else:
            steady += len(rows)
    bar.close()
    _write_outputs(out, chunks)
    return BatchResult(out, len(data), len(chunks), len(todo), appended, time.perf_counter() - started, steady,
                       0.0 if first_back is None else last_back - first_back)


def _ray(options: BatchOptions, payloads):
    from .ray_engine import ray_engine

    return ray_engine(options, payloads)


def _progress(options: BatchOptions, total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="case", desc="batch", disable=not options.progress, file=sys.stderr,
                smoothing=0.1, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")  # fmt: skip


def _write_outputs(out: Path, chunks: Sequence[Chunk]) -> None:
    """records.parquet, summary.csv and summary.json of the whole run (rewritten on every completed run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .triage import run_summary

    tables = [pq.read_table(chunk_path(out, c.index)) for c in chunks]
    table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    write_atomic(out / RECORDS_FILE, lambda p: pq.write_table(table, p))
    frame = table.to_pandas()
    columns = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    write_atomic(out / SUMMARY_CSV, lambda p: frame[columns].to_csv(p, index=False))
    _write_json(out / SUMMARY_JSON, run_summary(frame))
