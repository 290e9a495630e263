"""The `deq-lens` command (deq_core.cli, `python -m deq_core`) and the package metadata behind it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from deq_core import ModelConfig, build_model, cli, save_model
from deq_core.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("app", "train", "evaluate", "explain", "faithfulness", "robustness", "tune", "stability", "card", "audit")
TIMING_KEYS = {"latency_ms_median", "seconds"}  # wall times: they differ between any two runs


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([*args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def handwritten_models(tmp_path_factory):
    """A tiny DEQ and a tiny late-fusion model of the shipped Handwritten dataset, saved as folders."""
    train = load_dataset("handwritten", "train")
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for architecture in ("deq", "late"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(architecture, train.modalities, train.class_names, width=16, groups=4,
                                        unroll_steps=4, dataset="handwritten"))  # fmt: skip
        model.fit_statistics(train.inputs)
        folders[architecture] = save_model(model, root / f"handwritten-{architecture}")
    return folders


# ----------------------------------------------------------------------------- packaging


def _requirements(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [re.sub(r"\s+", "", line) for line in lines if line]


def test_pyproject_lists_exactly_the_requirements_files():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert [re.sub(r"\s+", "", d) for d in project["dependencies"]] == _requirements(REPO / "requirements.txt")
    test_extra = [re.sub(r"\s+", "", d) for d in project["optional-dependencies"]["test"]]
    assert test_extra == _requirements(REPO / "requirements-test.txt")
    assert "torch==2.13.0" in project["dependencies"]  # unpinned, pip fetches a multi-GB CUDA build
    assert project["scripts"] == {"deq-lens": "deq_core.cli:main"}
    assert project["requires-python"] == ">=3.11"


def test_the_installed_console_script_runs_the_cli():
    script = shutil.which("deq-lens")
    if script is None:
        pytest.skip("deq-lens is not installed here (.ci/run installs it with pip install -e .)")
    result = _run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in SUBCOMMANDS)


# ----------------------------------------------------------------------------- dispatch


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deq-lens")
    for name in SUBCOMMANDS:
        assert re.search(rf"^\s+{name}\b", out, re.M), name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_its_own_help_named_after_deq_lens(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deq-lens {name}"), out[:200]
    assert "python -m deq_core" not in out.split("\n\n")[0]


def test_audit_subcommands_pass_through(capsys):
    for sub in ("report", "verify", "verify-log"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["audit", sub, "--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: deq-lens audit {sub}")


def test_the_modules_keep_their_own_program_names(capsys):
    from deq_core import evaluate

    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])  # the renaming ends with the subcommand
    assert capsys.readouterr().out.startswith("usage: python -m deq_core.evaluate")


def test_an_unknown_subcommand_or_no_subcommand_exits_2_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evalute", "--model", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'evalute'" in err and "evaluate" in err
    assert cli.main([]) == 2
    assert "usage: deq-lens" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--model", "x"])
    assert exit_.value.code == 2


def test_python_dash_m_deq_core_refuses_an_unknown_subcommand():
    result = _run(sys.executable, "-m", "deq_core", "nonsense")
    assert result.returncode == 2 and "unknown command 'nonsense'" in result.stderr


def test_a_subcommand_returns_the_modules_exit_status(tmp_path, capsys):
    assert cli.main(["evaluate", "--model", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err


# ----------------------------------------------------------------------------- same output as the modules


def _without_timing(text: str) -> dict:
    data = json.loads(text)
    assert TIMING_KEYS & set(data), "the evaluation JSON should carry its latency"
    return {k: v for k, v in data.items() if k not in TIMING_KEYS}


def test_evaluate_through_the_cli_prints_what_the_module_prints(handwritten_models):
    folder = str(handwritten_models["deq"])
    through_cli = _run(sys.executable, "-m", "deq_core", "evaluate", "--model", folder, "--device", "cpu", "--json")
    module = _run(sys.executable, "-m", "deq_core.evaluate", "--model", folder, "--device", "cpu", "--json")
    assert through_cli.returncode == module.returncode == 0, through_cli.stderr + module.stderr
    assert _without_timing(through_cli.stdout) == _without_timing(module.stdout)
    assert json.loads(through_cli.stdout).keys() == json.loads(module.stdout).keys()


# ----------------------------------------------------------------------------- explain and tune


def test_explain_prints_the_explanation_as_json(handwritten_models, capsys):
    from deq_core import Explanation

    args = ["explain", "--model", str(handwritten_models["deq"]), "--case", "hw-0004", "--steps", "4", "--device", "cpu"]
    assert cli.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = set(Explanation.__dataclass_fields__) - {"modality_names", "class_names"} | {"modalities", "classes"}
    assert expected <= set(out) and {"predicted_class", "target_class"} <= set(out)
    assert out["target"] == out["prediction"] and len(out["probabilities"]) == 10
    assert set(out["shapley"]["values"]) == set(out["modalities"]) and len(out["modalities"]) == 6
    assert {"reliable", "status", "warnings"} <= set(out["reliability"])
    total = sum(out["shapley"]["values"].values())
    assert total == pytest.approx(out["shapley"]["full_value"] - out["shapley"]["empty_value"], abs=1e-6)

    assert cli.main([*args, "--target", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target_class"] == "3"
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert table.startswith("case hw-0004 (label: ")
    assert "decision: " in table and "reliability: " in table
    assert all(re.search(rf"^{name}\s+[+-]\d", table, re.M) for name in out["modalities"])


def test_explain_refuses_an_unknown_case_or_target(handwritten_models, capsys):
    folder = str(handwritten_models["deq"])
    assert cli.main(["explain", "--model", folder, "--case", "no-such-case"]) == 2
    assert "no case 'no-such-case'" in capsys.readouterr().err
    assert cli.main(["explain", "--model", folder, "--case", "hw-0004", "--target", "eleven"]) == 2
    assert "neither a class" in capsys.readouterr().err


def test_tune_prints_the_tolerance_sweep_as_json(handwritten_models, capsys):
    args = ["tune", "--model", str(handwritten_models["deq"]), "--cases", "12", "--tolerances", "1e-1", "1e-3",
            "--latency-cases", "2", "--device", "cpu"]  # fmt: skip
    assert cli.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"model", "dataset", "split", "n", "base", "reference", "recommended_tol", "rows"} <= set(out)
    assert out["n"] == 12 and out["split"] == "test" and out["reference"]["tol"] <= 1e-6
    assert [r["tolerance"] for r in out["rows"]] == [1e-1, 1e-3]  # loosest first
    for row in out["rows"]:
        assert {"tolerance", "accuracy", "flips", "iterations_mean", "latency_ms"} <= set(row)
        assert 0 <= row["flips"] <= 12 and 0 <= row["accuracy"] <= 1 and row["iterations_mean"] >= 1
        assert row["latency_ms"] > 0
    tight, loose = out["rows"][1], out["rows"][0]
    assert tight["iterations_mean"] >= loose["iterations_mean"]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert re.search(r"^\s*tolerance\s+accuracy\s+flips\s+iterations", table, re.M)
    assert "recommended tolerance" in table


def test_tune_refuses_a_model_without_a_solver(handwritten_models, capsys):
    assert cli.main(["tune", "--model", str(handwritten_models["late"]), "--cases", "4"]) == 2
    assert "no solver to tune" in capsys.readouterr().err


# ----------------------------------------------------------------------------- app


def test_app_runs_streamlit_on_the_checkouts_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command, cwd, env = cli.app_command(["--models", "models", "--server.port", "8599"])
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == REPO / "app" / "serve.py" and command[5:] == ["--server.port", "8599"]  # main.py, warm
    assert cwd == REPO  # where .streamlit/config.toml is read
    assert env["DEQ_LENS_MODELS"] == str(tmp_path / "models")
    command, _, env = cli.app_command([])
    assert command[5:] == [] and env.get("DEQ_LENS_MODELS") == os.environ.get("DEQ_LENS_MODELS")


def test_app_hands_streamlits_exit_status_back(monkeypatch):
    seen = {}

    class FakeProcess:
        def __init__(self, command, cwd, env):
            seen.update(command=command, cwd=cwd)

        def wait(self):
            return 3

    monkeypatch.setattr(cli.subprocess, "Popen", FakeProcess)
    assert cli.main(["app", "--server.headless", "true"]) == 3
    assert seen["command"][-2:] == ["--server.headless", "true"] and seen["cwd"] == REPO
