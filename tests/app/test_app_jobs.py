"""app.jobs: dataset-level work runs once per key, off the calling thread, and reports progress."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from lens_setup import REPO

from app.jobs import JobCancelled, Jobs


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


def _finish(jobs, key, calls):
    job = jobs.submit(key, str(key), lambda report: calls.append(key) or key)
    assert job.wait(10)
    return job


def test_only_the_most_recently_used_finished_jobs_are_kept():
    jobs, calls = Jobs(max_finished=2), []
    _finish(jobs, "a", calls)
    _finish(jobs, "b", calls)
    assert jobs.get("a") is not None  # a is now used more recently than b
    _finish(jobs, "c", calls)
    assert jobs.get("b") is None and jobs.get("a") is not None and jobs.get("c") is not None
    assert len(jobs) == 2
    _finish(jobs, "b", calls)  # a dropped key is computed again
    assert calls == ["a", "b", "c", "b"]
    assert jobs.get("a") is None  # c and b were used after a
    jobs.shutdown()


def test_a_waiting_or_running_job_is_never_dropped():
    jobs, release, calls = Jobs(max_finished=0), threading.Event(), []
    slow = jobs.submit("slow", "slow", lambda report: release.wait(10))
    queued = jobs.submit("queued", "queued", lambda report: "later")  # behind slow on the one worker
    assert jobs.get("slow") is slow and jobs.get("queued") is queued and len(jobs) == 2
    release.set()
    assert slow.wait(10) and queued.wait(10)
    assert jobs.get("slow") is None and jobs.get("queued") is None and len(jobs) == 0
    assert slow.result() is True and queued.result() == "later"  # a page holding a job still reads it
    _finish(jobs, "x", calls)
    assert calls == ["x"] and jobs.get("x") is None
    jobs.shutdown()


def test_a_finished_job_is_dropped_after_its_maximum_age():
    now = [1000.0]
    jobs, calls = Jobs(max_age_s=60, clock=lambda: now[0]), []
    first = _finish(jobs, "k", calls)
    now[0] += 59
    assert jobs.submit("k", "k", lambda report: calls.append("again")) is first
    now[0] += 2  # 61 s after it finished: used a moment ago, but too old
    assert jobs.get("k") is None
    again = _finish(jobs, "k", calls)
    assert again is not first and calls == ["k", "k"]
    jobs.shutdown()


def test_bounds_must_not_be_negative():
    with pytest.raises(ValueError):
        Jobs(max_finished=-1, workers=0)


def test_a_process_ends_cleanly_while_a_job_is_inside_torch(tmp_path):
    # A daemon thread still running torch as the interpreter finalises aborts the process
    # ("terminate called without an active exception", exit 134): a stopped server, or a test
    # run whose last page queued a job, would end that way. The registry stops it at exit.
    script = tmp_path / "busy.py"
    script.write_text(textwrap.dedent("""
        import sys, threading
        import torch
        from app.jobs import Jobs

        started = threading.Event()

        def work(report):
            x = torch.randn(128, 128, requires_grad=True)
            while True:
                (x @ x).sum().backward()
                started.set()
                report(0.5, "busy")

        job = Jobs().submit("busy", "busy", work)
        started.wait(60)
        print("leaving", flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "leaving" in done.stdout and "terminate called" not in done.stderr


def test_stop_cancels_the_running_job_at_its_next_report_and_drops_the_queue():
    jobs = Jobs()
    started, go, calls = threading.Event(), threading.Event(), []

    def work(report):
        started.set()
        go.wait(10)
        while True:
            calls.append(1)
            report(0.1, "step")
            time.sleep(0.01)

    running = jobs.submit("a", "a", work)
    queued = jobs.submit("b", "b", lambda report: "never")
    assert started.wait(10)
    jobs.stop()
    go.set()
    assert jobs.join(10)
    assert running.failed and isinstance(running.error, JobCancelled) and len(calls) == 1
    assert not queued.done  # dropped, never run
