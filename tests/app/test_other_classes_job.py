"""The Inspect page's background job: the other classes of the case shown, one class at a time, runner-up first."""

from __future__ import annotations

import threading
import time

import numpy as np
from lens_setup import lens_env  # noqa: F401 - a fixture

from app import resources
from deq_core.lens import Lens

STEPS = 8  # enough for the job's bookkeeping; the explanations themselves are tested in tests/explain


def opened(case_index: int):
    entry = resources.default_model(resources.list_models(resources.models_root()))
    data = resources.test_data(entry)
    return entry, resources.test_case(entry, data.ids[case_index])


def recorded_targets(monkeypatch, on_call=None) -> list[list[int]]:
    """The targets of each Lens.explain_classes call, in order (every call, the job's and the test's)."""
    calls: list[list[int]] = []
    explain_classes = Lens.explain_classes

    def recording(self, case, targets=None, *args, **kwargs):
        calls.append([int(t) for t in (range(len(self.class_names)) if targets is None else targets)])
        if on_call is not None:
            on_call(len(calls))
        return explain_classes(self, case, targets, *args, **kwargs)

    monkeypatch.setattr(Lens, "explain_classes", recording)
    return calls


def test_the_job_explains_every_class_one_at_a_time_runner_up_first_into_the_foregrounds_cache(lens_env, monkeypatch):
    entry, case = opened(3)
    calls = recorded_targets(monkeypatch)
    job = resources.other_classes_job(entry, case, STEPS, None)
    assert job.wait(300) and not job.failed, job.error_text
    classes = len(resources.lens(entry).class_names)
    assert job.value == classes
    order = np.argsort(-resources.lens(entry).decide(case).probabilities, kind="stable").tolist()
    assert calls == [[t] for t in order]  # one call per class, by probability: the runner-up right after the decided class
    computed = len(resources.lens(entry).cache)
    every = resources.lens(entry).explain_classes(case, None, STEPS, None)  # the page's look-ups now
    assert sorted(every) == list(range(classes)) and len(resources.lens(entry).cache) == computed


def test_the_job_stops_at_the_next_class_once_another_case_is_opened(lens_env, monkeypatch):
    entry, case = opened(5)
    _, other = opened(6)

    def open_another_case(calls: int) -> None:
        if calls == 2:  # while the runner-up is explained, the person opens another case
            resources._LATEST_CASE[entry.checksum] = (other.key, other.fingerprint, STEPS, None)

    calls = recorded_targets(monkeypatch, open_another_case)
    job = resources.other_classes_job(entry, case, STEPS, None)
    assert job.wait(300) and not job.failed, job.error_text
    assert job.value == 2 and len(calls) == 2  # the decided class and the runner-up; the rest left for the new case


def test_the_job_steps_aside_while_a_page_runs_but_not_while_the_page_waits_for_a_job(lens_env, monkeypatch):
    entry, case = opened(7)
    calls = recorded_targets(monkeypatch)
    page_running, page_done = threading.Event(), threading.Event()

    def page():  # a script run that lasts until the test ends it
        with resources.foreground_run():
            page_running.set()
            page_done.wait(30)

    thread = threading.Thread(target=page)
    thread.start()
    assert page_running.wait(10)
    job = resources.other_classes_job(entry, case, STEPS, None)
    time.sleep(1.0)
    assert calls == [] and not job.done  # the page goes first
    page_done.set()
    thread.join(10)
    assert job.wait(300) and not job.failed, job.error_text
    assert len(calls) == len(resources.lens(entry).class_names)

    with resources.foreground_run():  # a run inside wait_for: the job it waits for may need the worker
        with resources.waiting_on_a_job():
            assert resources.wait_for_quiet_foreground(timeout=0.1)
        assert not resources.wait_for_quiet_foreground(timeout=0.1)
    assert resources.wait_for_quiet_foreground(timeout=0.1)
