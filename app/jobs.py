"""Long dataset-level work (evaluations, sweeps) run once per process, off the script thread.

A Streamlit rerun stops the script thread at its next Streamlit call; work done in
that thread is lost, and a cached function interrupted halfway caches nothing.
Running it here instead means a page can show progress, a user can keep clicking,
and every session sees the same result once it lands. One worker thread: the app
shares a small CPU with people, and two sweeps at once finish no sooner.

Finished jobs are kept for a while, not forever: an app that runs for weeks sees many
models and settings, and each finished job holds its result (predictions, sweep
tables) in memory. The registry keeps the most recently used ``max_finished`` of
them, each for at most ``max_age_s`` after it finished; a job still waiting or
running is never dropped. A dropped key is simply computed again on its next submit
(the heavy results are on disk, so that is mostly a read).

When the process stops, the running jobs are asked to stop and waited for (at most
``STOP_WAIT_S``): a daemon thread still inside torch while the interpreter finalises
takes the process down with "terminate called without an active exception" (exit
134), which a stopped server or a finished test run must not end with. A job stops at
its next ``report`` call, which raises ``JobCancelled`` from then on.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

Report = Callable[[float, str], None]

MAX_FINISHED = 64
MAX_AGE_S = 6 * 3600.0
STOP_WAIT_S = 60.0  # at exit: how long the running jobs get to reach their next report() and stop


class JobCancelled(Exception):
    """Raised by a job's ``report`` once its registry is stopping: the work unwinds from there."""


@dataclass
class Job:
    """One unit of work and what is known about it so far."""

    key: Hashable
    title: str
    fraction: float = 0.0
    message: str = "waiting for the worker"
    started: float | None = None
    finished: float | None = None
    value: Any = None
    error: BaseException | None = None
    error_text: str = ""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _ended: float | None = field(default=None, repr=False)  # the registry's clock when it finished

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def failed(self) -> bool:
        return self.done and self.error is not None

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.perf_counter()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Any:
        """The value; raises the job's own error if it failed."""
        if not self.done:
            raise RuntimeError(f"job {self.title!r} has not finished")
        if self.error is not None:
            raise self.error
        return self.value


class Jobs:
    """Registry of jobs by key: a key is computed once, then served from memory while it is kept.

    Args:
        workers: worker threads.
        max_finished: finished jobs kept, the most recently used (submitted or got) first.
        max_age_s: a finished job is dropped this long after it finished.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        workers: int = 1,
        max_finished: int = MAX_FINISHED,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_finished < 0 or max_age_s < 0:
            raise ValueError("max_finished and max_age_s must not be negative")
        self.max_finished = max_finished
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: OrderedDict[Hashable, Job] = OrderedDict()  # least recently used first
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        # Daemon threads: stopping the app must not wait for a sweep to finish (a
        # ThreadPoolExecutor's workers are joined at exit).
        self._workers = [
            threading.Thread(target=self._serve, name=f"deq-lens-job-{i}", daemon=True) for i in range(workers)
        ]
        for worker in self._workers:
            worker.start()
        _LIVE.add(self)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._run(*item)

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            self._prune()
            job = self._jobs.get(key)
            if job is not None:
                self._jobs.move_to_end(key)
            return job

    def __len__(self) -> int:
        """Jobs held: waiting, running, and the finished ones still kept."""
        with self._lock:
            self._prune()
            return len(self._jobs)

    def _prune(self) -> None:
        """Drop finished jobs past their age, then the least recently used beyond ``max_finished``.

        Called with ``self._lock`` held.
        """
        now = self._clock()
        for key in [k for k, j in self._jobs.items() if j.done and now - (j._ended or now) > self.max_age_s]:
            del self._jobs[key]
        finished = [k for k, j in self._jobs.items() if j.done]
        for key in finished[: max(len(finished) - self.max_finished, 0)]:
            del self._jobs[key]

    def submit(self, key: Hashable, title: str, work: Callable[[Report], Any]) -> Job:
        """The job for ``key``, started with ``work(report)`` unless it exists already.

        A failed job is started again on the next submit, so a transient error
        (a model folder written while it was read) does not stick.
        """
        with self._lock:
            self._prune()
            job = self._jobs.get(key)
            if job is not None and not job.failed:
                self._jobs.move_to_end(key)
                return job
            job = Job(key=key, title=title)
            self._jobs[key] = job
            self._jobs.move_to_end(key)
        self._queue.put((job, work))
        return job

    def _run(self, job: Job, work: Callable[[Report], Any]) -> None:
        def report(fraction: float, message: str) -> None:
            if self._stopping.is_set():
                raise JobCancelled(f"{job.title}: stopped because the process is stopping")
            job.fraction = min(max(float(fraction), 0.0), 1.0)
            job.message = message

        job.started = time.perf_counter()
        job.message = "started"
        try:
            job.value = work(report)
            job.fraction, job.message = 1.0, "done"
        except BaseException as error:  # reported on the page that waits for it
            job.error = error
            job.error_text = "".join(traceback.format_exception(error))
        finally:
            job.finished = time.perf_counter()
            job._ended = self._clock()
            job._done.set()
            with self._lock:
                self._prune()

    def shutdown(self) -> None:
        """Let the workers finish their current job and stop (queued jobs are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._workers:
            self._queue.put(None)

    def stop(self) -> None:
        """Drop the queued jobs and ask the running ones to stop at their next ``report``."""
        self._stopping.set()
        self.shutdown()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to end (after ``stop`` or ``shutdown``); whether all of them did within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return not any(worker.is_alive() for worker in self._workers)


_LIVE: "weakref.WeakSet[Jobs]" = weakref.WeakSet()


@atexit.register
def _stop_at_exit(timeout: float = STOP_WAIT_S) -> None:
    """Stop every registry's workers before the interpreter finalises (see the module's docstring)."""
    registries = list(_LIVE)
    for registry in registries:
        registry.stop()
    deadline = time.monotonic() + timeout
    for registry in registries:
        registry.join(max(deadline - time.monotonic(), 0.0))
