"""Tiny trained models and the environment the app tests run the app in (built once per process).

Not a conftest: tests/ already has one whose helpers other tests import by the
module name ``conftest``, and a second conftest.py would shadow it.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from deq_core import save_model
from deq_core.engine.config import ARCHITECTURES
from deq_core.data.inspection import generate_inspection
from deq_core.train import TrainingSettings, curves_csv, train_model

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app" / "main.py"
TEST_CASES = 18  # the app's dataset-level views use this many test cases (3 per class)


@functools.cache
def tiny_models() -> Path:
    """A models root with inspection-deq, -weight_tied, -early and -late trained for one epoch at width 32.

    About 10 s on two busy cores; the folder lives for the test process.
    """
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="lens-models-"))
    train = generate_inspection("train", n_per_class=8)
    val = generate_inspection("val", n_per_class=3)
    for architecture in ARCHITECTURES:
        model, records, metrics = train_model(
            "inspection", architecture, TrainingSettings(epochs=1, width=32, unroll_steps=4),
            device="cpu", progress=False, train_data=train, val_data=val,
        )  # fmt: skip
        save_model(model, root / f"inspection-{architecture}", extra_files={
            "metrics.json": json.dumps(metrics) + "\n", "curves.csv": curves_csv(records)})  # fmt: skip
    return root


def app_environment(models: Path, cache: Path) -> dict[str, str]:
    """Variables that point the app at the tiny models and keep its caches out of the checkout."""
    return {
        "DEQ_LENS_MODELS": str(models),
        "DEQ_LENS_MAX_CASES": str(TEST_CASES),
        "DEQ_LENS_ROBUSTNESS": "quick",
        "DEQ_LENS_ROBUSTNESS_CACHE": str(cache / "robustness"),
        "DEQ_LENS_CACHE": str(cache / "lens"),
        "DEQ_LENS_KEY_DIR": str(cache / "keys"),  # the deployment key of a test run, never the user's
        "DEQ_LENS_THREADS": "1",
        "DEQ_LENS_ALLOW_ANY_FOLDER": "1",  # the tests open folders in tmp_path; test_app_bad_uploads checks without
    }


def apply_environment(variables: dict[str, str]) -> dict[str, str | None]:
    """Set ``variables`` in this process; returns the previous values for ``restore_environment``."""
    previous = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def lens_env(tmp_path_factory):
    """The app's environment on the tiny models with a cache of the module's own (import it into a test module)."""
    previous = apply_environment(app_environment(tiny_models(), tmp_path_factory.mktemp("lens-cache")))
    yield
    restore_environment(previous)
