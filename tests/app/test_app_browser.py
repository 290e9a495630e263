"""The app in a real browser: Chromium drives every page as a person would and saves a screenshot of each."""

from __future__ import annotations

import importlib.util
import urllib.request
from urllib.parse import urlparse

import pytest

from lens_setup import REPO, app_environment, tiny_models

pytestmark = pytest.mark.browser
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def leaves_the_machine(url: str) -> bool:
    """A request to a host other than this machine (data:, blob: and about: URLs stay in the browser)."""
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS


def load_tour():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_local_hosts_count_as_staying_on_the_machine():
    assert not leaves_the_machine("http://127.0.0.1:8599/_stcore/health")
    assert not leaves_the_machine("ws://localhost:8501/_stcore/stream")
    assert not leaves_the_machine("data:image/png;base64,AAAA")
    assert leaves_the_machine("https://fonts.gstatic.com/s/i/short-term/release/materialsymbolsrounded/x/24px.svg")


def test_a_person_can_walk_every_page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    tour = load_tour()
    if not (tour.Path(tour.CHROMIUM).exists()):
        pytest.skip(f"no Chromium at {tour.CHROMIUM}")
    env = app_environment(tiny_models(), tmp_path / "cache")
    shots = tmp_path / "screenshots"
    with tour.serve(env, log=tmp_path / "streamlit.log") as (url, launch):
        with sync_api.sync_playwright() as playwright:
            browser = tour.launch_browser(playwright)
            try:
                page = browser.new_page(viewport=tour.VIEWPORT)
                outside: list[str] = []  # the app must work offline: fonts, icons, scripts all from this server
                page.context.on("request", lambda request: leaves_the_machine(request.url) and outside.append(request.url))
                seen = tour.tour(page, url, shots, launch)
            finally:
                browser.close()
    with pytest.raises(OSError):  # the server is gone once the block is left
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)

    assert outside == [], f"requests that left the machine: {sorted(set(outside))}"
    assert seen["overview_grades"] == 3  # one plain grade per input
    assert seen["chart_code_before_heading"]  # the chart code is on its way before the first chart (app/preload.py)
    assert seen["inspect_case_after"] != seen["inspect_case_before"]  # picking a case shows that case
    assert seen["inspect_trust"] in ("converged", "max iter", "diverged")
    assert seen["inspect_replay_caption"].startswith("At iteration 0")
    assert seen["lab_shift_before"] == "0.0%" and seen["lab_shift_after"] != "0.0%"  # switching an input off moves it
    assert int(seen["tuning_iterations_after"]) < int(seen["tuning_iterations_before"])  # a looser tolerance stops sooner
    assert seen["robustness_tables"] == 2
    assert seen["inspect_explained_after"] != seen["inspect_explained_before"]  # another class is explained
    assert seen["seconds_explain_other_class"] > 0 and len(seen["timings"]) == 5
    assert seen["clipped_tables"] == {"overview": 0, "tuning": 0, "robustness": 0}  # nothing cut off at 1280 px
    assert seen["model_box_fits"]  # the longest model name is not cut in the sidebar
    for name in ("overview", "inspect", "lab", "tuning", "robustness"):
        for suffix in ("", "-full"):
            assert (shots / f"{name}{suffix}.png").stat().st_size > 10_000
