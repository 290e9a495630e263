"""--engine ray in local mode: the same records as --engine local, and no hang on a 2-core machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deq_core.batch.ray_engine import actor_cpus

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "models" / "inspection-deq"

pytest.importorskip("ray")


def test_actor_cpus_leave_room_for_the_read_task():
    assert actor_cpus(2, 1) == 1.0
    assert actor_cpus(2, 2) == 0.75  # two actors on two cores: 1.5 CPUs, half a CPU free
    assert actor_cpus(64, 8) == 1.0
    with pytest.raises(ValueError):
        actor_cpus(2, 0)


def test_ray_local_mode_equals_local_engine(tmp_path):
    from deq_core.data.generate import generate_folder

    cases = generate_folder("inspection", 4, tmp_path / "cases")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    base = [sys.executable, "-m", "deq_core", "batch", "--model", str(MODEL), "--cases", str(cases), "--chunk", "2",
            "--steps", "8", "--starts", "2", "--no-progress"]
    frames = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        command = base + ["--out", str(out), "--engine", engine, "--workers", "2",
                          "--log", f"sqlite:///{tmp_path / (engine + '.sqlite')}"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)  # a hang guard: a starved pipeline never returns
        assert done.returncode == 0, done.stderr[-3000:]
        frames[engine] = pd.read_parquet(out / "records.parquet")
    local, ray = frames["local"], frames["ray"]
    assert list(local["case_id"]) == list(ray["case_id"])
    pd.testing.assert_frame_equal(local, ray, check_exact=False, atol=1e-5, rtol=0)
