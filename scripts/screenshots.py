"""Drive the app in Chromium as a person would and save a screenshot of every page.

    python scripts/screenshots.py [--out assets/screenshots] [--models DIR]
    python scripts/screenshots.py --example      # the torchdeq example (examples/torchdeq_fusion/model) as example-*.png

Starts `streamlit run app/serve.py` (the app with its warm start) on a free port, walks Overview, Inspect (picks a
case), the Lab (switches an input off), Tuning (loosens the tolerance) and
Robustness, waits for the Plotly charts before each screenshot, and always stops
the server. The browser test (tests/app/test_app_browser.py) runs the same tour.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 800}
SCRIPT = REPO / "app" / "serve.py"  # the app with its warm start; app/main.py is the same app without it
LONG = 600_000  # ms: a first visit may evaluate four models and sweep robustness on a busy CPU


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(env: dict[str, str] | None = None, port: int | None = None, log: Path | None = None,
          timeout: float = 120.0, script: Path = SCRIPT) -> Iterator[tuple[str, float]]:  # fmt: skip
    """Run the app; yields (base URL, seconds from launch to a healthy server). The server is always stopped.

    ``script``: what ``streamlit run`` starts, ``app/serve.py`` (the warm start) by default.
    """
    port = port or free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]  # fmt: skip
    output = open(log, "w") if log else subprocess.DEVNULL
    started = time.perf_counter()
    # Its own process group, so stopping it also stops anything it started.
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {process.returncode}" + (f"; see {log}" if log else ""))
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.2)
        yield url, time.perf_counter() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log:
            output.close()


# --------------------------------------------------------------------------- driving the page


RUNNING = "[data-testid=\"stStatusWidgetRunningIcon\"]"


def wait_idle(page, timeout: float = LONG, started: bool = False, settle_ms: int = 300) -> None:
    """Until the rerun a click started is over: its running indicator came (or the rerun was quicker) and went.

    ``started``: the page already shows the rerun's output, so it has begun; do not wait for it to start.
    ``settle_ms``: then wait this long for the charts to draw (0 where the caller times the rerun itself).
    """
    try:  # widgets debounce before they rerun the script; a fast rerun may come and go unseen
        if not started:
            page.wait_for_selector(RUNNING, state="attached", timeout=2500)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: nothing ran, or it already finished
        pass
    page.wait_for_selector(RUNNING, state="detached", timeout=timeout)
    if settle_ms:
        page.wait_for_timeout(settle_ms)  # charts draw after the run ends


def wait_charts(page, at_least: int = 1, timeout: float = LONG) -> int:
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length >= {at_least}", timeout=timeout)
    return page.locator(".js-plotly-plot").count()


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
    return box.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def selected(box) -> str:
    """The shown value of a Streamlit selectbox (its label excluded)."""
    return box.get_by_role("combobox").input_value().strip()


def go_to(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=LONG)
    wait_idle(page)


def until(page, changed, timeout: float = 120.0) -> float:
    """Seconds until ``changed()`` is true (polled), i.e. until the page shows the answer to an action."""
    start = time.perf_counter()
    while not changed():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the page did not change")
        page.wait_for_timeout(50)
    return time.perf_counter() - start


def headline(page) -> str:
    return page.locator("h4").first.inner_text()


def tour(page, base_url: str, out: Path, launch_seconds: float = 0.0, prefix: str = "", trust_code: bool = False) -> dict:
    """Walk every page as a person would; returns what was seen and how long it took.

    ``trust_code``: tick the sidebar's "Run model code" first (a user's own model);
    ``prefix``: put before each screenshot's name.
    """
    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"shots": {}, "prefix": prefix}
    start = time.perf_counter()
    chart_code: list[float] = []  # when the browser asked for Plotly's frontend module (app/preload.py)
    page.on("request", lambda r: "/PlotlyChart." in r.url and chart_code.append(time.perf_counter() - start))
    page.goto(base_url, timeout=LONG)  # the default 30 s is not enough on a busy 2-core CI machine
    if trust_code:
        page.locator('[data-testid="stSidebar"]').get_by_text("Run model code").click()
    page.get_by_text("Model card").wait_for(timeout=LONG)
    page.locator('[data-testid="stSidebar"]').get_by_text("Checksum").wait_for(timeout=LONG)
    seen["seconds_server_start"] = launch_seconds
    seen["seconds_to_interactive"] = launch_seconds + time.perf_counter() - start
    seen["chart_code_before_heading"] = bool(chart_code) and chart_code[0] < seen["seconds_to_interactive"] - launch_seconds
    wait_charts(page, 3)
    seen["seconds_to_first_charts"] = launch_seconds + time.perf_counter() - start
    wait_idle(page)
    seen["seconds_to_overview_complete"] = launch_seconds + time.perf_counter() - start
    seen["overview_grades"] = page.locator('[data-testid="stMetricLabel"]').filter(has_text="affected").count()
    seen["overview_saving"] = metric(page, "per month")  # "<model> against <other>, per month"
    seen["model_box_fits"] = model_box_fits(page)
    seen["clipped_tables"] = {"overview": clipped_tables(page)}
    shoot(page, out, "overview", seen)

    # Inspect: pick the second case in the list.
    go_to(page, "Inspect a decision")
    wait_charts(page, 8)
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="match")
    before, decision = selected(box), headline(page)
    box.get_by_role("button", name="Open").click()
    page.get_by_role("option").nth(1).click()
    # Until the new case's decision is shown (its explanation, computed once per case, comes after).
    clicked = time.perf_counter()
    seen["seconds_new_case_decision"] = until(page, lambda: headline(page) != decision)
    wait_idle(page, started=True)
    seen["seconds_new_case_explained"] = time.perf_counter() - clicked  # Integrated Gradients and Shapley included
    seen["inspect_case_before"], seen["inspect_case_after"] = before, selected(box)
    page.get_by_text("How far to trust it").wait_for(timeout=LONG)
    wait_charts(page, 8)
    seen["inspect_trust"] = metric(page, "Solver")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Replay").get_by_role("slider")
    slider.focus()
    slider.press("Home")
    caption = page.get_by_text("At iteration").first
    seen["seconds_replay"] = until(page, lambda: caption.inner_text().startswith("At iteration 0"))
    wait_idle(page)
    seen["inspect_replay_caption"] = caption.inner_text()
    # Explain another class: until the contribution chart names it.
    target = page.locator('[data-testid="stSelectbox"]').filter(has_text="Explain the class")
    explained = selected(target)
    target.get_by_role("button", name="Open").click()
    page.get_by_role("option").filter(has_not_text=explained).first.click()
    clicked = time.perf_counter()
    heading = page.get_by_text("contribution to P(").first
    until(page, lambda: f"P({explained})" not in heading.inner_text())
    wait_idle(page, started=True, settle_ms=0)  # timed to the end of the rerun, not the drawing pause after it
    seen["seconds_explain_other_class"] = time.perf_counter() - clicked
    page.wait_for_timeout(300)
    seen["inspect_explained_before"], seen["inspect_explained_after"] = explained, selected(target)
    shoot(page, out, "inspect", seen)

    # Lab: switch the first input off.
    go_to(page, "Modality lab")
    wait_charts(page, 3)
    seen["lab_shift_before"] = metric(page, "Equilibrium shift")
    switch = page.locator('[data-testid="stMain"] [data-testid="stCheckbox"]').first
    seen["lab_switched"] = switch.inner_text().strip()
    switch.locator("label").first.click()
    seen["seconds_lab_switch"] = until(page, lambda: metric(page, "Equilibrium shift") != seen["lab_shift_before"])
    wait_idle(page)
    seen["lab_shift_after"] = metric(page, "Equilibrium shift")
    wait_charts(page, 3)
    shoot(page, out, "lab", seen)

    # Tuning: loosen the tolerance to its loosest value.
    go_to(page, "Convergence tuning")
    wait_charts(page, 3)
    seen["tuning_iterations_before"] = metric(page, "Iterations")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Tolerance").get_by_role("slider")
    slider.focus()
    slider.press("Home")
    # The case answers first; the whole-test-set figures follow with a progress bar.
    seen["seconds_tolerance_case"] = until(page, lambda: metric(page, "Iterations") != seen["tuning_iterations_before"])
    start = time.perf_counter()
    wait_idle(page, started=True)
    seen["seconds_tolerance_test_set"] = seen["seconds_tolerance_case"] + time.perf_counter() - start
    wait_charts(page, 3)
    seen["tuning_iterations_after"] = metric(page, "Iterations")
    seen["clipped_tables"]["tuning"] = clipped_tables(page)
    shoot(page, out, "tuning", seen)

    go_to(page, "Robustness")
    wait_charts(page, 1)
    seen["robustness_tables"] = page.locator('[data-testid="stDataFrame"]').count()
    seen["clipped_tables"]["robustness"] = clipped_tables(page)
    shoot(page, out, "robustness", seen)
    seen["timings"] = timings(seen)
    return seen


# The issue-23 speed targets: what each is, the measured key, the bound in seconds.
TARGETS = (
    ("first page with its charts, from the server's launch", "seconds_to_first_charts", 5.0),
    ("pick a case (its decision shown)", "seconds_new_case_decision", 0.5),
    ("explain another class", "seconds_explain_other_class", 0.5),
    ("a lab switch", "seconds_lab_switch", 0.5),
    ("a tolerance change (the case)", "seconds_tolerance_case", 0.5),
)


def timings(seen: dict) -> list[str]:
    """One line per speed target: measured seconds, the bound, met or not."""
    lines = []
    for what, key, bound in TARGETS:
        value = seen.get(key)
        verdict = "n/a" if value is None else ("met" if value <= bound else "NOT met")
        lines.append(f"{what}: {value:.2f} s (target <= {bound:g} s, {verdict})" if value is not None else f"{what}: n/a")
    return lines


def clipped_tables(page) -> int:
    """Tables on the page whose columns do not fit their width (a horizontal scrollbar: clipped on the right)."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller')]
        .filter(el => el.scrollWidth > el.clientWidth + 1).length""")


def model_box_fits(page) -> bool:
    """Whether the longest model name fits the sidebar's model box (measured in the box's own font)."""
    return page.evaluate("""() => {
        const box = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stSelectbox"]')][0];
        if (!box) return false;
        const input = box.querySelector('input');
        const names = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stSelectbox"] input')]
            .map(i => i.value);
        const style = getComputedStyle(input);
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
        const longest = Math.max(ctx.measureText('handwritten-weight_tied').width, ...names.map(n => ctx.measureText(n).width));
        return longest <= input.clientWidth;
    }""")


def shoot(page, out: Path, name: str, seen: dict) -> None:
    """The top of the page as a 1280 x 800 screen shows it, and the whole page."""
    page.mouse.move(5, 5)  # no hover tooltip in the picture
    main = '[data-testid="stMain"]'  # the app scrolls inside this, not the window
    page.evaluate(f"document.querySelector('{main}').scrollTo(0, 0)")
    page.wait_for_timeout(300)
    name = seen.get("prefix", "") + name
    page.screenshot(path=out / f"{name}.png")
    height = page.evaluate(f"document.querySelector('{main}').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height), 12_000)})
    page.wait_for_timeout(800)  # Plotly redraws on resize
    page.screenshot(path=out / f"{name}-full.png")
    page.set_viewport_size(VIEWPORT)
    page.wait_for_timeout(300)
    seen["shots"][name] = str(out / f"{name}.png")


def batch_tour(page, base_url: str, out: Path) -> dict:
    """The Batch audit page as an auditor uses it: the run, the ranked list, a filter, one case opened on Inspect.

    Needs a finished run under ``$DEQ_LENS_BATCH_RUNS`` made with the selected model.
    """
    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"shots": {}, "prefix": ""}
    page.goto(base_url, timeout=LONG)  # the default 30 s is not enough on a busy 2-core CI machine
    page.locator('[data-testid="stSidebar"]').get_by_text("Checksum").wait_for(timeout=LONG)
    go_to(page, "Batch audit")
    page.get_by_role("heading", name="Look at these first").wait_for(timeout=LONG)
    caption = page.get_by_text(re.compile(r"^\d+ of \d+ cases\.")).first
    seen["batch_caption"] = caption.inner_text()
    seen["batch_clipped_tables"] = clipped_tables(page)
    shoot(page, out, "batch", seen)
    picked = selected(page.locator('[data-testid="stSelectbox"]').filter(has_text="Case to inspect"))
    seen["batch_case"] = picked
    page.get_by_role("button", name="Open on the Inspect page").click()
    page.get_by_role("heading", name="Inspect a decision").first.wait_for(timeout=LONG)
    wait_idle(page)
    seen["batch_opened_shows_case"] = page.get_by_text(picked).count() > 0
    return seen


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "screenshots")
    parser.add_argument("--models", type=Path, default=None, help="models root (default: DEQ_LENS_MODELS or assets/models)")
    parser.add_argument("--log", type=Path, default=None, help="write the server's output here")
    parser.add_argument("--script", type=Path, default=SCRIPT,
                        help="what streamlit runs (default app/serve.py; app/main.py: the same app without the warm start)")
    parser.add_argument("--example", action="store_true",
                        help="the torchdeq example alone (a copy in a temporary models root), code trusted, as example-*.png")  # fmt: skip
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    env = {"DEQ_LENS_MODELS": str(args.models)} if args.models else {}
    if args.example:
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="lens-example-"))
        shutil.copytree(REPO / "examples" / "torchdeq_fusion" / "model", root / "torchdeq-example",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        for baseline in ("inspection-late", "inspection-early"):  # what the Overview compares it with
            shutil.copytree(REPO / "assets" / "models" / baseline, root / baseline)
        env = {"DEQ_LENS_MODELS": str(root), "DEQ_LENS_MAX_CASES": "60", "DEQ_LENS_ROBUSTNESS": "quick"}
    # The browser starts first and the page opens as soon as the server answers, so the
    # first page's seconds are the wall clock from the server's launch: nothing the
    # server does at its start hides behind the browser's own start.
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            with serve(env, log=args.log, script=args.script.resolve()) as (url, launch):
                seen = tour(page, url, args.out, launch, prefix="example-" if args.example else "", trust_code=args.example)
        finally:
            browser.close()
    print(json.dumps(seen, indent=2))
    print("\n".join(["App timings (issue 23 targets):", *seen["timings"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
