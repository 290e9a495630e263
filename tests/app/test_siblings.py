"""Baselines are found beside a model by their configs, not by their folder names."""

from __future__ import annotations

import shutil

from lens_setup import tiny_models

from app import resources


def test_baselines_are_found_by_config_whatever_their_folder_is_called(tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_models(), root)
    (root / "inspection-late").rename(root / "line-3 late fusion")
    (root / "notes").mkdir()  # not a model: ignored
    deq = resources.model_entry(root / "inspection-deq")
    found = resources.baselines_of(deq)
    assert set(found) == {"deq", "weight_tied", "early", "late"}
    assert found["late"].name == "line-3 late fusion" and found["deq"] == deq
    # Two folders of one architecture: the one named like the model wins.
    shutil.copytree(root / "inspection-early", root / "a-early")
    assert resources.baselines_of(deq)["early"].name == "inspection-early"


def test_the_default_model_is_named_by_the_environment_or_is_the_first_deq(monkeypatch):
    entries = resources.list_models(tiny_models())
    monkeypatch.delenv("DEQ_LENS_MODEL", raising=False)
    assert resources.default_model(entries).architecture == "deq"
    monkeypatch.setenv("DEQ_LENS_MODEL", "inspection-late")
    assert resources.default_model(entries).name == "inspection-late"
