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


PAGES = ("overview", "inspect_decision", "lab", "tuning", "robustness", "pilot", "audit_log", "batch_audit")


def test_every_page_is_an_app_page():
    assert set(PAGES) == {p.stem for p in (REPO / "app" / "pages").glob("*.py")}


def test_a_trusted_users_model_opens_on_every_page(own_folder):
    at = first_run(own_folder, "pumps-torchdeq", trust=True)
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Run model code" in w.value for w in at.warning)
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        # The shipped pilot log names the shipped split's cases, not this folder's: the pilot page says so (its own
        # refusal, about the data, tested in test_app_money); any other error would be about the model.
        errors = [e.value for e in at.error if not (page == "pilot" and "pilot log cannot be read" in e.value)]
        assert not errors, (page, errors)


def test_leave_to_run_code_is_per_session_and_lapses_when_the_code_changes(own_folder, tmp_path):
    trusted = first_run(own_folder, "pumps-torchdeq", trust=True)
    assert not any("Run model code" in w.value for w in trusted.warning)
    other_session = first_run(own_folder, "pumps-torchdeq")  # the same server process, another visitor
    assert any("Run model code" in w.value for w in other_session.warning)
    # The code changes under a session that allowed it: that session is asked again. (AppTest reruns only the
    # page of an st.navigation app, so the session is started with the leave it had for the old code.)
    from deq_core.engine import CodeTrust, write_adapter_checksums

    folder = own_folder / "models" / "pumps-torchdeq"
    old_leave = CodeTrust.grant(folder)
    source = folder / "code" / "torchdeq_fusion" / "model.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# a new version\n")
        write_adapter_checksums(folder)
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        at.session_state["dataset_path"] = str(own_folder)
        at.session_state["model_choice"] = "pumps-torchdeq"
        at.session_state[f"trust_{folder}"] = True
        at.session_state["trusted_code"] = {str(folder): old_leave}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("changed since you allowed it" in w.value for w in at.warning), [w.value for w in at.warning]
        assert not at.sidebar.checkbox(key=f"trust_{folder}").value
    finally:
        source.write_text(original)
        write_adapter_checksums(folder)
