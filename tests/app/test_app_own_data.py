"""Your own dataset folder and your own model in the app (AppTest): the sidebar opens them, every page browses the folder's cases."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from deq_core.data import load_dataset
from deq_core.data.folder import export_folder
from deq_core.data.inspection import generate_inspection
from lens_setup import APP, REPO, app_environment, apply_environment, restore_environment, tiny_models

TIMEOUT = 300
EXAMPLE = REPO / "examples" / "torchdeq_fusion" / "model"


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """A dataset folder ``pumps`` (the documented format) with ``models/`` inside: two tiny models and the torchdeq example."""
    root = tmp_path_factory.mktemp("own-data")
    data = generate_inspection("test", n_per_class=8, seed=7)
    data = dataclasses.replace(data, ids=tuple(f"pump-{i:03d}" for i in range(len(data))))  # not the shipped ids
    folder = export_folder(data, root / "pumps")
    (folder / "models").mkdir()
    for name in ("inspection-deq", "inspection-late"):
        shutil.copytree(tiny_models() / name, folder / "models" / f"pumps-{name.split('-')[1]}")
    shutil.copytree(EXAMPLE, folder / "models" / "pumps-torchdeq", ignore=shutil.ignore_patterns("__pycache__"))
    previous = apply_environment(app_environment(tiny_models(), tmp_path_factory.mktemp("own-cache")))
    yield folder
    restore_environment(previous)


def first_run(folder: Path | None, choice: str | None = None, trust: bool = False) -> AppTest:
    # AppTest reruns only the page script of an st.navigation app, so the sidebar is driven on a first run.
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if folder is not None:
        at.session_state["dataset_path"] = str(folder)
    if choice is not None:
        at.session_state["model_choice"] = choice
    if trust and choice is not None:
        at.session_state[f"trust_{folder / 'models' / choice}"] = True
    return at.run()


def test_a_dataset_folder_lists_its_models_and_every_page_browses_its_cases(own_folder):
    at = first_run(own_folder, "pumps-deq")
    assert not at.exception, [e.value for e in at.exception]
    box = at.sidebar.selectbox(key="model_choice")
    assert {"pumps-deq", "pumps-late", "pumps-torchdeq"} <= set(box.options), box.options
    assert "inspection-early" not in box.options  # the environment's models are not this folder's
    overview = " ".join(m.value for m in at.markdown) + " ".join(str(t.value) for t in at.dataframe)
    assert "pumps-late" in overview or "late" in overview
    expected = set(load_dataset(str(own_folder), "test").ids)
    at.switch_page("pages/inspect_decision.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {o.split(" · ")[0] for o in at.selectbox(key="insp_case").options}
    assert shown and shown <= expected, (shown, expected)  # the folder's test split, none of the shipped cases
    for page in ("lab", "tuning", "robustness"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])


def test_a_users_model_waits_for_the_run_code_setting(own_folder):
    at = first_run(own_folder, "pumps-torchdeq")
    assert not at.exception, [e.value for e in at.exception]
    assert any("Run model code" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.sidebar.checkbox(key=f"trust_{own_folder / 'models' / 'pumps-torchdeq'}").value


def test_a_trusted_users_model_opens_on_every_page(own_folder):
    at = first_run(own_folder, "pumps-torchdeq", trust=True)
    assert not at.exception, [e.value for e in at.exception]
    for page in ("inspect_decision", "lab", "tuning", "robustness", "audit_log"):
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
