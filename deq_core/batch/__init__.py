"""Batch audits: every case of a dataset folder explained in batched chunks, written as Parquet + CSV.

    deq-lens batch --model assets/models/inspection-deq --cases cases/ --out runs/may

``run_batch`` (``deq_core.batch.run``) is the resumable driver; ``chunk_records``
(``.records``) the batched computation of one chunk; ``triage`` (``.triage``) ranks a
run's cases for an auditor. Ray (``--engine ray``) and pyarrow are imported only by
the functions that use them, so ``import deq_core.batch`` costs nothing.
"""

from __future__ import annotations

from deq_core._lazy import lazy_exports

_EXPORTS = {
    "RecordOptions": ".records",
    "explain_chunk": ".records",
    "chunk_records": ".records",
    "chunk_cases": ".records",
    "case_record": ".records",
    "one_at_a_time_records": ".records",
    "BatchOptions": ".run",
    "BatchError": ".run",
    "BatchResult": ".run",
    "run_batch": ".run",
    "read_decisions": ".run",
    "read_records": ".run",
    "list_runs": ".run",
    "TriageWeights": ".triage",
    "triage": ".triage",
    "run_summary": ".triage",
}

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
