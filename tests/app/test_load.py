"""Ten people at once: one Streamlit server, ten browser sessions opening Inspect and the Lab concurrently.

Each session must show its page without an exception within ``ANSWER_SECONDS``, and
the server's resident memory must stay under ``MAX_SERVER_RSS_MIB`` throughout
(read from /proc, so psutil is not needed).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from pathlib import Path

import pytest

from lens_setup import REPO, app_environment, tiny_models

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SESSIONS = 10
ANSWER_SECONDS = 300  # per session, both pages, on two busy CPU cores with ten Chromium renderers beside the server
MAX_SERVER_RSS_MIB = 3072  # the tiny models, their caches and ten sessions' state; a leak per rerun would pass this
EXCEPTION = '[data-testid="stException"]'


def load_tour():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_pid(port: int) -> int:
    """The streamlit process serving ``port`` (found by its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(command) and str(port).encode() in command:
            return int(proc.name)
    raise LookupError(f"no streamlit process on port {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MemoryWatch(threading.Thread):
    """Samples a process's VmRSS every half second until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
                self.samples += 1
            except OSError:
                return
            self._stop_event.wait(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


async def visit(browser, url: str, tour) -> dict:
    """One person: Inspect (until the trust section is shown), then the Lab (until both decisions are shown)."""
    context = await browser.new_context(viewport=tour.VIEWPORT)
    page = await context.new_page()
    timeout = ANSWER_SECONDS * 1000
    start = time.perf_counter()
    try:
        await page.goto(f"{url}/inspect", timeout=timeout)
        await page.get_by_role("heading", name="Inspect a decision").first.wait_for(timeout=timeout)
        await page.get_by_text("How far to trust it").first.wait_for(timeout=timeout)
        inspect_seconds = time.perf_counter() - start
        inspect_errors = await page.locator(EXCEPTION).count()
        await page.goto(f"{url}/lab", timeout=timeout)
        await page.get_by_role("heading", name="Modality lab").first.wait_for(timeout=timeout)
        await page.get_by_text("Variant decides").first.wait_for(timeout=timeout)
        await page.wait_for_selector(tour.RUNNING, state="detached", timeout=timeout)
        lab_errors = await page.locator(EXCEPTION).count()
        body = await page.locator("body").inner_text()
        return {"inspect_seconds": inspect_seconds, "seconds": time.perf_counter() - start,
                "exceptions": inspect_errors + lab_errors + body.count("Traceback")}  # fmt: skip
    finally:
        await context.close()


async def crowd(url: str, tour) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=tour.CHROMIUM, args=tour.CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(visit(browser, url, tour) for _ in range(SESSIONS)))
        finally:
            await browser.close()


def test_ten_concurrent_sessions_answer_without_errors_in_bounded_memory(tmp_path):
    pytest.importorskip("playwright.async_api")
    tour = load_tour()
    if not Path(tour.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {tour.CHROMIUM}")
    env = {**app_environment(tiny_models(), tmp_path / "cache"), "DEQ_LENS_AUDIT_DB": f"sqlite:///{tmp_path / 'audit.sqlite'}"}
    port = tour.free_port()
    with tour.serve(env, port=port, log=tmp_path / "streamlit.log") as (url, _):
        watch = MemoryWatch(server_pid(port))
        watch.start()
        try:
            results = asyncio.run(crowd(url, tour))
        finally:
            watch.stop()
    log = (tmp_path / "streamlit.log").read_text()
    assert len(results) == SESSIONS
    assert all(r["exceptions"] == 0 for r in results), results
    slowest = max(r["seconds"] for r in results)
    assert slowest < ANSWER_SECONDS, results
    assert watch.samples > 0 and watch.peak < MAX_SERVER_RSS_MIB, f"server peak RSS {watch.peak:.0f} MiB"
    assert "Traceback" not in log, log[-3000:]
    print(f"{SESSIONS} sessions: slowest {slowest:.1f} s (Inspect {max(r['inspect_seconds'] for r in results):.1f} s), "
          f"server peak RSS {watch.peak:.0f} MiB")  # fmt: skip
