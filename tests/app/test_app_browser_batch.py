"""The Batch audit page in a real browser: the run, its ranked list, and a case opened on the Inspect page."""

from __future__ import annotations

import pytest

from deq_core.batch import BatchOptions, RecordOptions, run_batch
from deq_core.data import generate_folder
from lens_setup import app_environment, tiny_models
from test_app_browser import leaves_the_machine, load_tour

pytestmark = pytest.mark.browser


def test_an_auditor_ranks_a_run_and_opens_a_case(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    tour = load_tour()
    if not tour.Path(tour.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {tour.CHROMIUM}")
    models = tiny_models()
    cases = generate_folder("inspection", 5, tmp_path / "cases")
    runs = tmp_path / "runs"
    run_batch(BatchOptions(model=models / "inspection-deq", cases=cases, out=runs / "may", chunk=3,
                           log=f"sqlite:///{tmp_path / 'audit.sqlite'}", records=RecordOptions(n_steps=4, stability_starts=2),
                           progress=False))  # fmt: skip
    env = {**app_environment(models, tmp_path / "cache"), "DEQ_LENS_BATCH_RUNS": str(runs),
           "DEQ_LENS_AUDIT_DB": f"sqlite:///{tmp_path / 'audit.sqlite'}"}  # fmt: skip
    with tour.serve(env, log=tmp_path / "streamlit.log") as (url, _), sync_api.sync_playwright() as playwright:
        browser = tour.launch_browser(playwright)
        try:
            page = browser.new_page(viewport=tour.VIEWPORT)
            outside: list[str] = []
            page.context.on("request", lambda request: leaves_the_machine(request.url) and outside.append(request.url))
            seen = tour.batch_tour(page, url, tmp_path / "shots")
        finally:
            browser.close()
    assert outside == []
    assert seen["batch_caption"].startswith("5 of 5 cases")
    assert seen["batch_clipped_tables"] == 0
    assert seen["batch_case"].startswith("insp-test-")
    assert seen["batch_opened_shows_case"]
    assert (tmp_path / "shots" / "batch.png").stat().st_size > 10_000
