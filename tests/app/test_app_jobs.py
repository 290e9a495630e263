"""app.jobs: dataset-level work runs once per key, off the calling thread, and reports progress."""

from __future__ import annotations

import threading

import pytest

from app.jobs import Jobs


def test_a_key_is_computed_once_and_shared():
    jobs, calls = Jobs(), []

    def work(report):
        calls.append(threading.current_thread().name)
        report(0.5, "half way")
        return 42

    first = jobs.submit(("evaluate", "m"), "evaluation", work)
    second = jobs.submit(("evaluate", "m"), "evaluation", work)
    assert first is second and first.wait(10)
    assert first.result() == 42 and first.fraction == 1.0 and first.message == "done"
    assert calls == [calls[0]] and calls[0] != threading.current_thread().name
    jobs.shutdown()


def test_a_failed_job_reports_its_error_and_runs_again_on_the_next_submit():
    jobs, attempts = Jobs(), []

    def flaky(report):
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("folder was being written")
        return "ok"

    job = jobs.submit("k", "flaky", flaky)
    job.wait(10)
    assert job.failed and "folder was being written" in job.error_text
    with pytest.raises(ValueError):
        job.result()
    again = jobs.submit("k", "flaky", flaky)
    assert again is not job and again.wait(10) and again.result() == "ok"
    jobs.shutdown()


def test_an_unfinished_job_has_no_result_yet():
    jobs, release = Jobs(), threading.Event()
    job = jobs.submit("slow", "slow", lambda report: release.wait(10))
    with pytest.raises(RuntimeError):
        job.result()
    release.set()
    assert job.wait(10) and job.result() is True
    jobs.shutdown()
