"""Broken model folders under the models root: listed as broken with their message, and every other folder still opens.

The root holds the four tiny inspection models and, beside them, folders corrupted as
tests/engine/test_model_folder_limits.py corrupts them (resealed: their checksums match).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from deq_core.engine import CHECKSUMS, CONFIG, WEIGHTS, sha256_file
from lens_setup import APP, app_environment, apply_environment, restore_environment, tiny_models

TIMEOUT = 300


def reseal(folder: Path) -> None:
    (folder / CHECKSUMS).write_text(json.dumps({name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)}))


def _deep_config(folder: Path) -> None:
    (folder / CONFIG).write_text("[" * 100_000 + "]" * 100_000)
    reseal(folder)


def _deep_checksums(folder: Path) -> None:
    (folder / CHECKSUMS).write_text("[" * 30_000 + "]" * 30_000)


def _config_number(field: str, value: object):
    def corrupt(folder: Path) -> None:
        config = json.loads((folder / CONFIG).read_text())
        section = config["solver"] if field.startswith("solver.") else config
        section[field.removeprefix("solver.")] = value
        (folder / CONFIG).write_text(json.dumps(config))
        reseal(folder)

    return corrupt


def _stale_config(folder: Path) -> None:
    (folder / CONFIG).write_text("[" * 100_000 + "]" * 100_000)  # checksums not rewritten


BROKEN = {  # folder name -> (corruption, fragment of the message shown)
    "broken-deep-config": (_deep_config, "nested deeper than"),
    "broken-deep-checksums": (_deep_checksums, "nested deeper than"),
    "broken-width": (_config_number("width", 10**9), "width = 1000000000"),
    "broken-max-iter": (_config_number("solver.max_iter", 10**9), "solver.max_iter = 1000000000"),
    "broken-tol": (_config_number("solver.tol", 1e-300), "solver.tol = 1e-300"),
    "broken-stale": (_stale_config, "changed after the model was saved"),
}


@pytest.fixture(scope="module")
def broken_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models-with-broken")
    good = tiny_models()
    for folder in sorted(good.iterdir()):
        shutil.copytree(folder, root / folder.name)
    for name, (corrupt, _) in BROKEN.items():
        shutil.copytree(good / "inspection-deq", root / name)
        corrupt(root / name)
    (root / "notes").mkdir()  # a folder that is not a model at all stays out of the listing
    previous = apply_environment(app_environment(root, tmp_path_factory.mktemp("lens-broken-cache")))
    yield root
    restore_environment(previous)


def first_run(choice: str | None = None) -> AppTest:
    # AppTest reruns only the page script of an st.navigation app, so the sidebar is driven on a first run.
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if choice is not None:
        at.session_state["model_choice"] = choice
    return at.run()


def test_broken_folders_are_listed_as_broken_and_the_default_model_opens(broken_root):
    at = first_run()
    assert not at.exception, [e.value for e in at.exception]
    box = at.sidebar.selectbox(key="model_choice")
    assert box.value == "inspection-deq"
    for name in BROKEN:
        assert any(name in option and "broken" in option for option in box.options), box.options
    for name in ("inspection-deq", "inspection-weight_tied", "inspection-early", "inspection-late"):
        assert name in box.options
    assert not any("notes" in option for option in box.options)
    assert "inspection-deq" in at.sidebar.caption[0].value


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_choosing_a_broken_folder_shows_its_message_and_no_page(broken_root, name):
    at = first_run(name)
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.sidebar.error]
    assert any(name in e and BROKEN[name][1] in e for e in errors), errors
    assert [t.value for t in at.title] == ["DEQ Fusion Lens"]  # no page without a model


def test_a_broken_folder_typed_as_another_folder_gets_its_message(broken_root):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "Another folder…"
    at.session_state["model_path"] = str(broken_root / "broken-width")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("width = 1000000000" in e.value for e in at.sidebar.error)


def test_after_a_broken_folder_another_session_opens_a_good_one(broken_root):
    assert not first_run("broken-deep-config").exception
    at = first_run("inspection-late")
    assert not at.exception, [e.value for e in at.exception]
    assert "inspection-late" in at.sidebar.caption[0].value
