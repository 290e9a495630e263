"""Reports on disk: safe names, no report overwritten by another run, and a kill at any moment leaves folder and log agreeing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from audit_helpers import key_dir  # noqa: F401  (fixture)
from deq_core import ModelConfig, build_model, save_model
from deq_core.audit import AuditLog, check_files, main, safe_name, verify_report
from deq_core.audit.report import CLAIM_NAME

REPO = Path(__file__).resolve().parents[2]
CASES = ",".join(f"insp-test-{i:04d}" for i in range(6))


def test_case_ids_become_one_safe_name_each():
    ids = ["..", ".", "a/b", "a_b", "a%2Fb", "A", "a", "..\\x", "con", "hw-0001", "x.", ".hidden", "é", "a" * 400, "a" * 401]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids)  # injective
    assert len({n.lower() for n in names}) == len(ids)  # also on case-insensitive file systems
    for name in names:
        assert "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 255 and not name.endswith(".")
    assert safe_name("hw-0001") == "hw-0001" and safe_name("insp-test-0003") == "insp-test-0003"
    with pytest.raises(ValueError):
        safe_name("")


@pytest.fixture(scope="module")
def inspection_model(tmp_path_factory):
    """A tiny untrained DEQ on the inspection data's inputs (reports need a model of the dataset, not a good one)."""
    from deq_core.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("inspection", "test")
    model = build_model(ModelConfig("deq", data.modalities, data.class_names, width=16, groups=4, unroll_steps=4,
                                    dataset="inspection"))  # fmt: skip
    model.fit_statistics(tuple(x[:16] for x in data.inputs))
    return save_model(model.eval(), tmp_path_factory.mktemp("insp") / "tiny-insp")


def cli(model: Path, out: Path, url: str, cases: str = CASES) -> list[str]:
    return [sys.executable, "-m", "deq_core.audit", "report", "--model", str(model), "--cases", cases,
            "--out", str(out), "--steps", "4", "--db", url]  # fmt: skip


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_two_runs_sharing_out_never_make_an_entry_point_at_another_report(inspection_model, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    out = tmp_path / "out"
    assert main(["report", "--model", str(inspection_model), "--case", "insp-test-0000", "--out", str(out),
                 "--steps", "4", "--db", url]) == 0  # fmt: skip
    assert main(["report", "--model", str(inspection_model), "--case", "insp-test-0001", "--out", str(out),
                 "--steps", "4", "--db", url]) == 2  # fmt: skip
    assert "already holds a report" in capsys.readouterr().err
    log = AuditLog(url)
    assert [e.case_id for e in log.entries()] == ["insp-test-0000"]  # the refused run logged nothing
    assert check_files(log) == ([], [])
    assert verify_report(json.loads((out / "report.json").read_text()), log=log).ok
    # a case id of ".." is written inside --out, under its own name
    assert safe_name("..") != ".." and (out / safe_name("..")).resolve().parent == out.resolve()


def check_agreement(out: Path, log: AuditLog) -> tuple[int, int]:
    """Every report.json on disk is a logged, verifying report; every entry's file exists or was not written."""
    entries = {e.report_path: e for e in log.entries()}
    on_disk = sorted(out.glob(f"*/{'report.json'}"))
    for path in on_disk:
        record = json.loads(path.read_text())
        entry = entries.get(str(path.resolve()))
        assert entry is not None and entry.report_sha256 == record["report_sha256"], path
        result = verify_report(record, log=log)
        assert result.ok, (path, result.problems)
    problems, notes = check_files(log)
    assert not problems, problems
    # Runs share the log: only this run's entries count; cases are written one after another, so at most
    # this run's last entry was cut short.
    ours = [e for e in log.entries() if Path(e.report_path).is_relative_to(out.resolve())]
    notes = [n for n in notes if str(out.resolve()) in n]
    assert len(notes) <= 1
    for note in notes:
        assert "was not written" in note and note.startswith(f"entry {max(e.id for e in ours)}:")  # entries(): newest first
    assert not list(out.glob("*/report.html")) or all(p.stat().st_size > 0 for p in out.glob("*/report.html"))
    assert log.verify().ok
    return len(on_disk), len(notes)


def test_a_kill_at_any_moment_leaves_folder_log_and_verify_agreeing(inspection_model, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    started = time.monotonic()
    full = subprocess.run(cli(inspection_model, tmp_path / "full", url), cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    duration = time.monotonic() - started
    assert full.returncode == 0, full.stderr
    assert check_agreement(tmp_path / "full", AuditLog(url)) == (6, 0)
    seen = set()
    for seed in range(5):
        out = tmp_path / f"killed-{seed}"
        wait = random.Random(seed).uniform(0.4, 1.0) * duration  # past start-up, somewhere in the writing
        process = subprocess.Popen(cli(inspection_model, out, url), cwd=REPO, env=env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(wait)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        seen.add(check_agreement(out, AuditLog(url)) if out.exists() else (0, 0))
        claim = [p for p in out.glob(f"*/{CLAIM_NAME}")] if out.exists() else []
        assert len(claim) <= 1
    assert any(written > 0 for written, _ in seen), seen  # the kills did land while reports were being written
