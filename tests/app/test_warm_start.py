"""The warm start (app/serve.py): what the first page waits for is in the caches before anyone visits."""

from __future__ import annotations

import shutil

import deq_core
from lens_setup import REPO, lens_env, tiny_models  # noqa: F401 - lens_env is a fixture

from app import resources


def counted_loads(monkeypatch) -> list[str]:
    loads: list[str] = []
    load = deq_core.load_model

    def counting(folder, *args, **kwargs):
        loads.append(str(folder))
        return load(folder, *args, **kwargs)

    monkeypatch.setattr(deq_core, "load_model", counting)
    return loads


def test_the_warm_start_loads_the_default_model_and_queues_its_baselines(lens_env, monkeypatch):
    resources._lens.clear()  # the process's models as a fresh server has them: none loaded
    resources._background_lens.clear()
    loads = counted_loads(monkeypatch)
    entry = resources.warm_start()
    assert entry is not None and entry.name == "inspection-deq"
    siblings = resources.baselines_of(entry)
    assert set(siblings) == {"deq", "weight_tied", "early", "late"}
    for sibling in siblings.values():  # each evaluation queued (and soon done) under the key the Overview asks for
        job = resources.evaluation_job(sibling)
        assert job.wait(120) and not job.failed, job.error_text
    warmed = len(loads)
    resources.lens(entry)  # the first page's own call: a look-up now
    resources.test_data(entry)
    assert len(loads) == warmed and str(tiny_models() / "inspection-deq") in loads


def test_the_warm_start_never_runs_a_users_model_code(lens_env, monkeypatch, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(REPO / "examples" / "torchdeq_fusion" / "model", root / "torchdeq-example",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    assert resources.is_user_model(resources.model_entry(root / "torchdeq-example"))  # adapter.json: its own code
    loads = counted_loads(monkeypatch)
    assert resources.warm_start(root) is None  # opening it needs a session's leave (the sidebar's tick)
    assert loads == []


def test_a_cached_robustness_sweep_is_read_without_a_pass_per_model(lens_env, monkeypatch):
    entry = resources.default_model(resources.list_models())
    resources.jobs.clear()  # a sweep another module ran is in its own cache folder, not this module's
    first, _ = resources.robustness_job(entry, "quick")
    assert first.wait(600) and not first.failed, first.error_text
    calls: list[bool] = []
    sweep = deq_core.Lens.robustness

    def counting(self, others, *args, **kwargs):
        calls.append(others is None)  # None: one model's own pass (the progress bar's); else the joint call
        return sweep(self, others, *args, **kwargs)

    monkeypatch.setattr(deq_core.Lens, "robustness", counting)
    resources.jobs.clear()  # a restarted server: the sweep is on disk, not in memory
    again, _ = resources.robustness_job(entry, "quick")
    assert again.wait(120) and not again.failed, again.error_text
    assert calls == [False]  # one joint read of the cache, no pass per model
    assert again.value.summary.equals(first.value.summary)
