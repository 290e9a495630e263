"""Where the Pilot page finds its logs and how it reads an upload; the figures come from ``deq_core``.

Shipped logs live in ``sample_data/pilot`` (``$DEQ_LENS_PILOT_DIR`` overrides it, for
tests and for a plant's own folder of logs), named ``<dataset>-*.csv`` so a model is
offered only the logs of its own data.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.widgets import upload_size_problem
from deq_core import PilotLogError

PILOT_DIR_ENV = "DEQ_LENS_PILOT_DIR"
SHIPPED = Path(__file__).resolve().parents[1] / "sample_data" / "pilot"


def pilot_dir() -> Path:
    return Path(os.environ.get(PILOT_DIR_ENV) or SHIPPED)


def shipped_logs(dataset: str) -> dict[str, Path]:
    """File name -> path of every pilot log for ``dataset`` (its name's last part), sorted."""
    name = Path(dataset).name
    return {p.name: p for p in sorted(pilot_dir().glob(f"{name}-*.csv"))}


def upload_bytes(upload) -> bytes:
    """An uploaded pilot log's bytes, refusing one too large to be a pilot log before reading it."""
    problem = upload_size_problem(f"pilot log ({upload.name})", upload.size)
    if problem:
        raise PilotLogError(problem)
    return upload.getvalue()
