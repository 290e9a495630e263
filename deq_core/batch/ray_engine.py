"""``--engine ray``: the same chunk computation on Ray Data actors, each holding one Lens.

Ray Data ``map_batches`` runs ``LensWorker`` (a stateful callable class): the model
is loaded once per actor, in ``__init__``, and every call computes one chunk
(``compute_payload``, the local engine's own function), so Ray and local results are
the same numbers. Order is preserved, so the driver writes chunks and log rows in
case order as with the local engine.

Starvation: in local mode Ray has as many CPUs as the machine; two 1-CPU actors on
a 2-core machine leave none for the read task that feeds them, and the pipeline
waits forever. Each actor therefore asks for ``actor_cpus`` (a fraction that leaves
half a CPU free), never a whole CPU it cannot have.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

READ_RESERVE = 0.5  # CPUs left free for Ray Data's read and scheduling tasks


def actor_cpus(total_cpus: float, workers: int) -> float:
    """CPUs each actor asks for: at most 1, and together leaving ``READ_RESERVE`` for the rest of the pipeline."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return max(0.05, min(1.0, (float(total_cpus) - READ_RESERVE) / workers))


class LensWorker:
    """One Ray actor: one Lens, loaded once; each call turns one chunk's payload into its records."""

    def __init__(self, model: str, records: dict, threads: int = 1, trust_code=False):
        import torch

        from deq_core.lens import Lens

        from .records import RecordOptions

        torch.set_num_threads(max(1, threads))
        self.lens = Lens.open(model, device="cpu", trust_code=trust_code)  # a CodeTrust: the same folder and code
        self.options = RecordOptions(**records)

    def __call__(self, batch: dict) -> dict:
        from .run import compute_payload

        out_index, out_rows = [], []
        for index, blob in zip(batch["index"], batch["payload"]):
            rows_and_reports = compute_payload(self.lens, pickle.loads(blob), self.options)
            out_index.append(int(index))
            out_rows.append(pickle.dumps(rows_and_reports))
        return {"index": out_index, "rows": out_rows}


def _init(options) -> bool:
    """Start (or join) Ray; True when this call started it (and must shut it down)."""
    import ray

    import deq_core

    if ray.is_initialized():
        return False
    root = str(Path(deq_core.__file__).resolve().parents[1])  # actors import this deq_core, not another install
    ray.init(address=options.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})  # fmt: skip
    return True


def ray_engine(options, payloads: Iterator[dict]) -> Iterator[tuple[int, list[dict], list | None]]:
    """Chunks computed by ``options.workers`` actors, yielded in chunk order: index, records, reports."""
    import ray
    import ray.data

    started = _init(options)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        items = [{"index": p["index"], "payload": pickle.dumps(p)} for p in payloads]
        if not items:
            return
        cpus = actor_cpus(ray.cluster_resources().get("CPU", 1.0), options.workers)
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            LensWorker, batch_size=1, concurrency=options.workers, num_cpus=cpus, batch_format="numpy",
            fn_constructor_kwargs={"model": str(Path(options.model).resolve()), "records": asdict(options.records),
                                   "threads": options.threads, "trust_code": options.trust_code},
        )  # fmt: skip
        for row in dataset.iter_rows():
            yield int(row["index"]), *pickle.loads(row["rows"])
    finally:
        if started:
            ray.shutdown()
