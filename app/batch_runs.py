"""Batch audit runs for the app: where they are, and the pure tables the Batch audit page shows.

A run is a folder written by ``deq-lens batch`` (``run.json``, ``records.parquet``,
``summary.json``); the page lists those under ``batch_runs_root()``. The table
builders take DataFrames and return DataFrames, so they are tested without Streamlit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deq_core.cache import cache_root

RUNS_ENV = "DEQ_LENS_BATCH_RUNS"
SIGNAL_LABELS = {"unsettled": "Unsettled or slow solve", "second_equilibrium": "Second equilibrium / radius >= 1",
                 "disagreement": "Disagrees with production", "conflicting_input": "Conflicting input",
                 "low_confidence": "Low confidence", "large_interaction": "Large interaction"}  # fmt: skip
TRIAGE_COLUMNS = ("case_id", "score", "reasons", "decision", "confidence", "production_decision", "label", "status",
                  "iterations", "conflicting_modality", "max_abs_interaction", "spectral_radius", "unique")  # fmt: skip


def batch_runs_root() -> Path:
    """``$DEQ_LENS_BATCH_RUNS``, else ``batch-runs`` under the cache root (``deq-lens batch --out`` a folder there)."""
    return Path(os.environ.get(RUNS_ENV) or cache_root() / "batch-runs").expanduser()


@dataclass(frozen=True)
class RunInfo:
    """One run folder: what it answered (``run.json``) and its counts (``summary.json``; None while unfinished)."""

    folder: Path
    question: dict
    summary: dict | None

    @property
    def name(self) -> str:
        return self.folder.name


def list_run_infos(root: Path) -> list[RunInfo]:
    """Runs under ``root``, newest first; a folder whose files do not parse is skipped."""
    from deq_core.batch import list_runs

    infos = []
    for folder in list_runs(root):
        try:
            question = json.loads((folder / "run.json").read_text(encoding="utf-8"))
            summary_file = folder / "summary.json"
            summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else None
        except (OSError, ValueError):
            continue
        infos.append(RunInfo(folder, question, summary))
    return infos


def run_records(folder: Path) -> pd.DataFrame:
    """The run's records (``records.parquet``, or the chunks written so far)."""
    from deq_core.batch import read_records

    return read_records(folder)


def ranked(records: pd.DataFrame) -> pd.DataFrame:
    """``deq_core.batch.triage`` of the records: the list an auditor works down."""
    from deq_core.batch import triage

    return triage(records)


def runs_table(infos: list[RunInfo]) -> pd.DataFrame:
    """One row per run: cases, unsettled solves, low confidence, disagreements, model."""
    rows = []
    for info in infos:
        s = info.summary or {}
        rows.append({
            "run": info.name, "model": Path(info.question.get("model", "")).name,
            "cases": s.get("cases"), "unsettled": s.get("unsettled"), "low confidence": s.get("low_confidence"),
            "disagreements": s.get("disagreements"), "second equilibrium": s.get("second_equilibrium"),
            "finished": info.summary is not None,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "model", "cases", "unsettled", "low confidence", "disagreements",
                                       "second equilibrium", "finished"])  # fmt: skip


def decisions_table(summary: dict) -> pd.DataFrame:
    """Decisions per class of a run."""
    decisions = summary.get("decisions", {})
    return pd.DataFrame({"class": list(decisions), "decisions": list(decisions.values())})


def filter_triage(ranked: pd.DataFrame, signals: list[str], decided: list[str], min_score: float) -> pd.DataFrame:
    """Rows of the ranked triage list where any chosen signal fired, of the chosen decided classes, above ``min_score``."""
    keep = ranked["score"] >= min_score
    if signals:
        keep &= ranked[list(signals)].gt(0).any(axis=1)
    if decided:
        keep &= ranked["decision"].isin(decided)
    return ranked[keep]


def triage_view(ranked: pd.DataFrame) -> pd.DataFrame:
    """The columns an auditor reads, in that order (those the run has)."""
    return ranked[[c for c in TRIAGE_COLUMNS if c in ranked.columns]].reset_index(drop=True)


# What the page's ranked table shows (it fits 1280 px); every column of ``triage_view`` is in the CSV download.
TRIAGE_DISPLAY = {"case_id": "case", "score": "score", "reasons": "why", "decision": "decision",
                  "confidence": "confidence", "production_decision": "production decided", "label": "true class"}  # fmt: skip


def triage_display(view: pd.DataFrame) -> pd.DataFrame:
    """``triage_view`` as the page shows it: the columns of ``TRIAGE_DISPLAY``, readable names, two decimals."""
    shown = view[[c for c in TRIAGE_DISPLAY if c in view.columns]].rename(columns=TRIAGE_DISPLAY)
    for column in ("score", "confidence"):
        if column in shown:
            shown[column] = pd.to_numeric(shown[column], errors="coerce").round(2)
    return shown.reset_index(drop=True)
