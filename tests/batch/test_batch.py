"""deq-lens batch: batched records equal one-at-a-time ones, resumption after kill -9, decisions, triage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from deq_core.audit import AuditLog
from deq_core.batch import BatchError, BatchOptions, RecordOptions, chunk_records, one_at_a_time_records, read_decisions, run_batch
from deq_core.batch.records import chunk_cases
from deq_core.batch.run import RECORDS_FILE, chunk_path
from deq_core.batch.triage import TriageWeights, run_summary, triage
from deq_core.data import load_folder
from deq_core.data.generate import generate_folder
from deq_core.lens import Lens

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "models" / "inspection-deq"
FAST = RecordOptions(n_steps=8, stability_starts=2)
TOLERANCE = 1e-5  # the batch-invariance tolerance of deq_core.explain.faithfulness


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    return generate_folder("inspection", 6, tmp_path_factory.mktemp("gen") / "cases")


@pytest.fixture(scope="module")
def lens() -> Lens:
    torch.set_num_threads(1)
    return Lens.open(MODEL, device="cpu")


def _log_rows(url: str) -> list[tuple[str, str]]:
    return [(e.case_id, e.report_sha256) for e in sorted(AuditLog(url).entries(), key=lambda e: e.id)]


def test_generate_is_deterministic_and_readable(tmp_path, cases):
    again = generate_folder("inspection", 6, tmp_path / "again")
    assert (again / "manifest.csv").read_text() == (cases / "manifest.csv").read_text()
    data = load_folder(cases)
    assert len(data) == 6 and data.ids[0] == "insp-test-0000"
    with pytest.raises(FileExistsError):
        generate_folder("inspection", 6, cases)
    with pytest.raises(ValueError, match="at least 1"):
        generate_folder("inspection", 0, tmp_path / "none")


def test_batched_records_equal_one_at_a_time(lens, cases):
    data = load_folder(cases, modalities=lens.modalities)
    texts = [{k: v[i] for k, v in data.texts.items()} for i in range(len(data))]
    labels = data.labels.tolist()
    batched = chunk_records(lens, data.inputs, data.ids, labels, texts, FAST)
    single = one_at_a_time_records(Lens.open(MODEL, device="cpu"),
                                   chunk_cases(lens.modalities, data.inputs, data.ids, labels, texts, "x"), FAST)
    assert [r["case_id"] for r in batched] == list(data.ids)
    for a, b in zip(batched, single):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], abs=TOLERANCE), key
            elif key != "record_sha256":
                assert value == b[key], key
        assert a["spectral_radius"] is not None and a["unique"] is not None


def _options(cases: Path, out: Path, log: str, **kw) -> BatchOptions:
    return BatchOptions(model=MODEL, cases=cases, out=out, log=log, chunk=2, records=FAST, progress=False, **kw)


def test_rerun_is_idempotent_and_a_kill_inside_the_logging_loses_and_duplicates_nothing(lens, cases, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    out = tmp_path / "run"
    before = set(sys.modules)  # an earlier test of the session may have imported Ray itself
    from deq_core.audit import log as log_module

    real = log_module.Checkpoint.sign
    calls = {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # inside the second chunk's transaction: its file is on disk, its rows being logged
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(log_module.Checkpoint, "sign", staticmethod(dying))
    with pytest.raises(KeyboardInterrupt):
        run_batch(_options(cases, out, url), lens=lens)
    monkeypatch.setattr(log_module.Checkpoint, "sign", real)
    # the chunk's transaction was rolled back whole: none of its rows is in, the chunk file is kept
    assert len(_log_rows(url)) == 2 and chunk_path(out, 1).is_file() and not (out / RECORDS_FILE).exists()
    result = run_batch(_options(cases, out, url), lens=lens)
    assert result.computed_chunks == 1 and result.logged_rows == 4  # chunk 1 from its file, chunk 2 computed
    rows = _log_rows(url)
    records = pd.read_parquet(out / RECORDS_FILE)
    assert [c for c, _ in rows] == list(records["case_id"]) == [f"insp-test-{i:04d}" for i in range(6)]
    assert [h for _, h in rows] == list(records["record_sha256"])
    again = run_batch(_options(cases, out, url), lens=lens)
    assert again.computed_chunks == 0 and again.logged_rows == 0 and len(_log_rows(url)) == 6
    loaded = {m for m in set(sys.modules) - before if m == "ray" or m.startswith("ray.")}
    assert not loaded, loaded  # --engine local never imports Ray


def test_a_run_folder_refuses_another_question(lens, cases, tmp_path):
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    run_batch(_options(cases, tmp_path / "run", url), lens=lens)
    with pytest.raises(BatchError, match="another question"):
        run_batch(BatchOptions(model=MODEL, cases=cases, out=tmp_path / "run", log=url, chunk=3, records=FAST,
                               progress=False), lens=lens)


def test_sigkill_mid_run_then_rerun(cases, tmp_path):
    """A real kill -9 of the CLI while it works; the same command finishes with every record once."""
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    out = tmp_path / "run"
    command = [sys.executable, "-m", "deq_core", "batch", "--model", str(MODEL), "--cases", str(cases),
               "--out", str(out), "--chunk", "1", "--steps", "8", "--starts", "2", "--log", url, "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not chunk_path(out, 1).is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / RECORDS_FILE).exists()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    records = pd.read_parquet(out / RECORDS_FILE)
    rows = _log_rows(url)
    assert [c for c, _ in rows] == list(records["case_id"]) == [f"insp-test-{i:04d}" for i in range(6)]
    assert len(set(h for _, h in rows)) == 6
    assert not list((out / "chunks").glob(".*"))


def test_decisions_give_a_disagreement_column_and_bad_files_are_named(lens, cases, tmp_path):
    good = tmp_path / "decisions.csv"
    good.write_text("case_id,decision,outcome\ninsp-test-0000,crack,ok\ninsp-test-0001,scratch,\n")
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    run_batch(_options(cases, tmp_path / "run", url, decisions=good), lens=lens)
    records = pd.read_parquet(tmp_path / "run" / RECORDS_FILE).set_index("case_id")
    assert records.loc["insp-test-0000", "production_decision"] == "crack"
    assert records.loc["insp-test-0000", "disagrees"] == (records.loc["insp-test-0000", "decision"] != "crack")
    assert records.loc["insp-test-0000", "outcome"] == "ok"
    assert pd.isna(records.loc["insp-test-0003", "disagrees"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cases"] == 6 and summary["with_production_decision"] == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,decision\na,broken\na,ok\n,ok\n")
    with pytest.raises(BatchError) as error:
        read_decisions(bad, lens.class_names)
    assert "line 2" in str(error.value) and "line 3" in str(error.value) and "line 4" in str(error.value)
    with pytest.raises(BatchError, match="header"):
        (tmp_path / "nohead.csv").write_text("x,y\n1,2\n")
        read_decisions(tmp_path / "nohead.csv", lens.class_names)


def _table() -> pd.DataFrame:
    base = {"label": "ok", "status": "converged", "converged": True, "iterations": 6, "confidence": 0.95,
            "shapley_photo": 0.3, "shapley_sensors": 0.2, "shapley_note": 0.1, "shapley_empty": 0.2,
            "max_abs_interaction": 0.05, "spectral_radius": 0.2, "unique": True, "reliable": True,
            "decision": "ok", "disagrees": None}
    rows = [dict(base, case_id=f"c{i}") for i in range(6)]
    rows[1].update(converged=False, status="max_iter", iterations=40)
    rows[2].update(confidence=0.4)
    rows[3].update(disagrees=True)
    rows[4].update(shapley_note=-0.3)
    rows[5].update(spectral_radius=1.2)
    return pd.DataFrame(rows)


def test_triage_ranks_each_signal_above_clean_cases_and_names_it():
    table = _table()
    clean = pd.DataFrame([dict(table.iloc[0], case_id=f"clean{i}") for i in range(3)])
    ranked = triage(pd.concat([clean, table], ignore_index=True))
    flagged = set(ranked["case_id"].iloc[:5])
    assert flagged == {"c1", "c2", "c3", "c4", "c5"}
    assert ranked["case_id"].iloc[0] == "c1"  # an unsettled solve outweighs the rest
    reasons = dict(zip(ranked["case_id"], ranked["reasons"]))
    assert reasons["c4"] == "conflicting input (note)" and reasons["c5"] == "second equilibrium"
    assert reasons["c3"] == "disagreement" and "low confidence" in reasons["c2"] and reasons["c0"] == ""
    assert list(ranked["score"]) == sorted(ranked["score"], reverse=True)
    assert len(table) == 6 and "score" not in table  # pure
    strict = triage(table, TriageWeights(conflict=0.5))
    assert dict(zip(strict["case_id"], strict["reasons"]))["c4"] == ""
    summary = run_summary(table)
    assert summary["unsettled"] == 1 and summary["low_confidence"] == 1 and summary["second_equilibrium"] == 0


def test_cli_data_generate_and_batch_refusals(cases, tmp_path, capsys):
    from deq_core.cli import main

    assert main(["data", "generate", "--dataset", "inspection", "--n", "3", "--out", str(tmp_path / "three")]) == 0
    assert len(load_folder(tmp_path / "three")) == 3
    assert main(["data", "generate", "--n", "3", "--out", str(tmp_path / "three")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,decision\ninsp-test-0000,nonsense\n")
    out = tmp_path / "run"
    assert main(["batch", "--model", str(MODEL), "--cases", str(cases), "--out", str(out), "--decisions", str(bad),
                 "--log", f"sqlite:///{tmp_path / 'log.sqlite'}", "--no-progress"]) == 2
    assert "line 2" in capsys.readouterr().err and not out.exists()  # refused before anything was written
    assert main(["batch", "--model", str(tmp_path / "no-model"), "--cases", str(cases), "--out", str(out),
                 "--no-progress"]) == 2


def test_reports_are_verifiable_and_not_reissued(lens, tmp_path):
    cases = generate_folder("inspection", 2, tmp_path / "two")
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    out = tmp_path / "run"
    options = BatchOptions(model=MODEL, cases=cases, out=out, log=url, chunk=1, records=FAST, progress=False,
                           reports=True)  # fmt: skip
    run_batch(options, lens=lens)
    report = out / "reports" / "insp-test-0001" / "report.json"
    assert report.is_file() and Lens.verify(report, log=url).ok
    assert [c for c, _ in _log_rows(url)] == ["insp-test-0000", "insp-test-0001"]
    # A kill after the claim, before logging: the claim is taken back and the report issued on the rerun.
    report.unlink()
    (report.parent / "report.html").unlink(missing_ok=True)
    (report.parent / ".report.claim").write_text('{"report_sha256": "not-logged"}')
    (out / "state.json").write_text('{"logged": [0]}')
    assert run_batch(options, lens=lens).logged_rows == 1 and report.is_file()
    assert len(_log_rows(url)) == 3  # the one re-issued report; the first case was not logged again


def test_reports_are_issued_from_the_records_own_explanations(lens, tmp_path, monkeypatch):
    """--reports with the report's settings explains each case once: the report is built from the batched
    explanation its record came from, and still verifies (a one-case re-run)."""
    import deq_core.audit.report as report_module

    cases = generate_folder("inspection", 2, tmp_path / "two")
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    out = tmp_path / "run"

    def no_second_explanation(*args, **kwargs):
        raise AssertionError("a report explained its case again")

    monkeypatch.setattr(report_module, "explain_case", no_second_explanation)
    run_batch(BatchOptions(model=MODEL, cases=cases, out=out, log=url, chunk=2, progress=False, reports=True),
              lens=lens)  # fmt: skip
    monkeypatch.undo()
    records = pd.read_parquet(out / RECORDS_FILE).set_index("case_id")
    for case_id in ("insp-test-0000", "insp-test-0001"):
        path = out / "reports" / case_id / "report.json"
        record = json.loads(path.read_text())
        assert record["prediction"]["probabilities"][record["prediction"]["class"]] == pytest.approx(
            records.loc[case_id, "confidence"], abs=1e-12)  # fmt: skip
        assert record["stability"] is not None
        assert Lens.verify(path, log=url).ok
