"""A user's own DEQ behind the lens: adapter folders, trust, and the conformance check."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import json
import shutil
from pathlib import Path

import pytest
import torch

from deq_core import Lens
from deq_core.engine import ModelLoadError, load_model, save_adapter
from deq_core.testing import check_adapter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "torchdeq_fusion"


def _example_train():
    spec = importlib.util.spec_from_file_location("torchdeq_fusion_train", EXAMPLE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The example trained for one epoch on 48 cases (about 2 s)."""
    out = tmp_path_factory.mktemp("own") / "tiny-example"
    _example_train().train(out, epochs=1, cases=48, width=16)
    return out


def test_a_users_model_is_refused_without_trust_and_says_how(tiny):
    with pytest.raises(ModelLoadError, match=r"adapter\.json: this model is your own code .*--trust-code"):
        Lens.open(tiny)


def test_the_whole_path_on_a_tiny_example(tiny, tmp_path):
    lens = Lens.open(tiny, device="cpu", trust_code=True)
    assert lens.equilibrium and lens.config.modality_names == ("photo", "sensors", "note")
    case = lens.case(lens.data(max_cases=6).ids[0], data=lens.data(max_cases=6))
    decision = lens.decide(case)
    assert decision.trajectory is not None and decision.trajectory.has_gates
    explanation = lens.explain(case, n_steps=4)
    assert explanation.shapley.values.shape == (3,)
    assert explanation.gate_share is not None
    report = lens.issue(case, tmp_path / "report")
    assert report is not None
    verification = Lens.verify(tmp_path / "report" / "report.json", trust_code=True)
    assert verification.ok, verification.problems
    refused = Lens.verify(tmp_path / "report" / "report.json")
    assert not refused.ok and any("--trust-code" in p for p in refused.problems)


def test_an_edited_adapter_file_is_refused(tiny, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(tiny, folder)
    adapter = json.loads((folder / "adapter.json").read_text())
    adapter["options"] = {"changed": True}
    (folder / "adapter.json").write_text(json.dumps(adapter))
    with pytest.raises(ModelLoadError, match="adapter.json: SHA-256 .* differs"):
        load_model(folder, trust_code=True)


@pytest.mark.parametrize("adapter, message", [
    ({"factory": "os.system"}, "must name package.module:build"),
    ({"factory": "x:build", "code": "../.."}, "must be a folder inside the model folder"),
    ({"factory": "no_such_module_here:build"}, "factory no_such_module_here:build failed: ModuleNotFoundError"),
])  # fmt: skip
def test_bad_adapter_files_get_a_clear_error(tiny, tmp_path, adapter, message):
    folder = tmp_path / "bad"
    shutil.copytree(tiny, folder)
    (folder / "adapter.json").write_text(json.dumps(adapter))
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder, trust_code=True, verify_checksums=False)


@pytest.mark.parametrize("name", ["inspection-deq", "inspection-early", "inspection-weight_tied", "handwritten-deq"])
def test_check_adapter_passes_on_our_shipped_models(name):
    torch.set_num_threads(1)
    result = check_adapter(load_model(REPO / "assets" / "models" / name, device="cpu"))
    assert result.ok, result.problems
    assert "gradients reach every input in eval mode" in result.checked


def test_check_adapter_passes_on_the_shipped_example():
    result = check_adapter(load_model(EXAMPLE / "model", device="cpu", trust_code=True))
    assert result.ok, result.problems
    assert "state layout matches f" in result.checked


class _Broken(torch.nn.Module):
    """A wrong adapter: its modality rows are swapped (row 0 follows modality b) when ``swapped``; no gates."""

    def __init__(self, swapped: bool, noisy: bool):
        super().__init__()
        self.swapped, self.noisy = swapped, noisy
        self.enc = torch.nn.ModuleList(torch.nn.Linear(4, 8) for _ in range(2))
        self.mix = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 2)

    def encode(self, inputs):
        return torch.stack([self.enc[0](inputs[0]), self.enc[1](inputs[1])], dim=1)

    def f(self, z, x):
        x_rows = x.flip(1) if self.swapped else x
        modal = torch.tanh(0.3 * self.mix(z[:, :2]) + x_rows)
        fused = torch.tanh(0.3 * self.mix(z[:, 2]) + modal.sum(1))
        out = torch.cat([modal, fused[:, None]], dim=1)
        return out + (1e-2 * torch.randn_like(out) if self.noisy else 0)

    def head(self, fused):
        return self.out(fused)


def _broken(swapped: bool, noisy: bool):
    from deq_core.engine import AdaptedDEQ, Modality, ModelConfig

    config = ModelConfig(architecture="deq", modalities=(Modality("a", "vector", (4,)), Modality("b", "vector", (4,))),
                         class_names=("no", "yes"), width=8, groups=1)  # fmt: skip
    return AdaptedDEQ(config, _Broken(swapped, noisy)).eval()


def _inputs():
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator))


def test_check_adapter_passes_a_right_one_and_names_swapped_rows():
    torch.manual_seed(0)
    right = check_adapter(_broken(swapped=False, noisy=False), inputs=_inputs())
    assert right.ok, right.problems
    assert any("no gates" in n for n in right.notes)
    swapped = check_adapter(_broken(swapped=True, noisy=False), inputs=_inputs())
    assert any("changing 'a'" in p and "row 0 should move most" in p for p in swapped.problems), swapped.problems


def test_check_adapter_names_a_nondeterministic_model():
    torch.manual_seed(0)
    result = check_adapter(_broken(swapped=False, noisy=True), inputs=_inputs())
    assert any("not deterministic" in p for p in result.problems), result.problems


def test_an_adapter_without_gates_traces_and_says_it_has_none():
    from deq_core import Case

    model = _broken(swapped=False, noisy=False)
    lens = Lens(model)
    case = Case.from_inputs(model.config.modalities, (torch.randn(4), torch.randn(4)), key="c1")
    decision = lens.decide(case)
    assert not decision.trajectory.has_gates
    assert lens.explain(case, n_steps=4).gate_share is None


def test_the_command_line_opens_a_users_model_only_with_trust_code(tiny, capsys):
    from deq_core.explain.explanation import main

    case_id = Lens.open(tiny, trust_code=True).data(max_cases=3).ids[0]
    assert main(["--model", str(tiny), "--case", case_id, "--device", "cpu"]) != 0
    assert "--trust-code" in capsys.readouterr().err
    assert main(["--model", str(tiny), "--case", case_id, "--device", "cpu", "--trust-code", "--json", "--steps", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["modalities"] == ["photo", "sensors", "note"]


# --------------------------------------------------------------------------- the code is part of the checked folder
def _copy(tiny: Path, to: Path) -> Path:
    shutil.copytree(tiny, to, ignore=shutil.ignore_patterns("__pycache__"))
    return to


def test_a_swapped_code_file_is_refused_at_load_naming_it(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "swapped")
    source = folder / "code" / "torchdeq_fusion" / "model.py"
    source.write_text(source.read_text() + "\nimport os  # swapped in after saving\n")
    with pytest.raises(ModelLoadError, match=r"code/torchdeq_fusion/model\.py: SHA-256 .* differs"):
        load_model(folder, trust_code=True)
    with pytest.raises(ModelLoadError, match=r"code/torchdeq_fusion/model\.py: SHA-256"):
        from deq_core.engine import verify_folder

        verify_folder(folder)  # what the app's model list runs: the folder is listed as broken


def test_a_code_file_added_after_saving_is_refused(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "added")
    (folder / "code" / "torchdeq_fusion" / "helper.py").write_text("print('not saved with the model')\n")
    with pytest.raises(ModelLoadError, match=r"helper\.py: not recorded in checksums\.json"):
        load_model(folder, trust_code=True)


def test_the_import_itself_checks_each_source_against_checksums(tiny, tmp_path):
    """A file swapped between the folder's checks and the import still does not run (and no .pyc is read)."""
    from deq_core.engine import read_adapter
    from deq_core.engine.adapter import build_user_module
    from deq_core.engine.checkpoint import _adapter_config

    folder = _copy(tiny, tmp_path / "raced")
    config, _, digests = _adapter_config(folder, verify_checksums=True)
    source = folder / "code" / "torchdeq_fusion" / "model.py"
    source.write_text(source.read_text() + "\nRAN = True\n")
    assert read_adapter(folder)["code"] == "code"
    with pytest.raises(ModelLoadError, match=r"ImportError: .*model\.py: SHA-256 .* differs"):
        build_user_module(folder, config, trust_code=True, digests=digests)
    assert not list((folder / "code").rglob("*.pyc"))  # nothing written into the model folder


def test_a_report_fails_verification_once_a_code_file_is_swapped(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "reported")
    lens = Lens.open(folder, device="cpu", trust_code=True)
    data = lens.data(max_cases=2)
    lens.issue(lens.case(data.ids[0], data=data), tmp_path / "report")
    source = folder / "code" / "torchdeq_fusion" / "model.py"
    source.write_text(source.read_text() + "\n# swapped\n")
    result = Lens.verify(tmp_path / "report" / "report.json", trust_code=True)
    assert not result.ok
    assert any("code/torchdeq_fusion/model.py SHA-256" in p for p in result.problems), result.problems


def test_an_old_folder_without_code_checksums_still_loads_with_a_warning(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "old")
    checksums = json.loads((folder / "checksums.json").read_text())
    del checksums["code"]  # what save_adapter wrote before the code was recorded
    (folder / "checksums.json").write_text(json.dumps(checksums))
    with pytest.warns(UserWarning, match="records no checksums of the adapter's code files"):
        model = load_model(folder, device="cpu", trust_code=True)
    assert model.config.modality_names == ("photo", "sensors", "note")


def test_save_adapter_needs_the_code_in_place_first(tiny, tmp_path):
    model = load_model(tiny, device="cpu", trust_code=True)
    with pytest.raises(ModelLoadError, match="the code folder does not exist; copy your package there before saving"):
        save_adapter(model.user, model.config, tmp_path / "empty", "torchdeq_fusion.model:build", code="code")


# --------------------------------------------------------------------------- trust is per folder and per code
def test_trust_given_for_one_folder_does_not_open_another(tiny, tmp_path):
    from deq_core.engine import CodeTrust

    other = _copy(tiny, tmp_path / "other")
    grant = CodeTrust.grant(tiny)
    assert load_model(tiny, device="cpu", trust_code=grant) is not None
    with pytest.raises(ModelLoadError, match=r"Leave to run code was given for .*tiny-example, not for this folder"):
        load_model(other, device="cpu", trust_code=grant)
    assert load_model(other, device="cpu", trust_code=[grant, CodeTrust.grant(other)]) is not None


def test_trust_lapses_when_the_folders_code_changes(tiny, tmp_path):
    from deq_core.engine import CodeTrust, write_adapter_checksums

    folder = _copy(tiny, tmp_path / "changing")
    grant = CodeTrust.grant(folder)
    source = folder / "code" / "torchdeq_fusion" / "model.py"
    source.write_text(source.read_text() + "\n# new version\n")
    write_adapter_checksums(folder)  # even re-recorded consistently, the code is not the code trusted
    with pytest.raises(ModelLoadError, match="Its code changed since you allowed it to run"):
        load_model(folder, device="cpu", trust_code=grant)


def test_two_folders_with_the_same_package_each_run_their_own_code(tiny, tmp_path):
    from deq_core.engine import write_adapter_checksums

    first, second = _copy(tiny, tmp_path / "first"), _copy(tiny, tmp_path / "second")
    source = second / "code" / "torchdeq_fusion" / "model.py"
    source.write_text(source.read_text() + "\nSECOND_FOLDER = True\n")
    write_adapter_checksums(second)
    one = load_model(first, device="cpu", trust_code=True)
    two = load_model(second, device="cpu", trust_code=True)
    first_globals, second_globals = (type(m.user).__init__.__globals__ for m in (one, two))  # each class's own module
    assert second_globals.get("SECOND_FOLDER") and str(second) in second_globals["__file__"]
    assert "SECOND_FOLDER" not in first_globals and str(first) in first_globals["__file__"]


def test_a_package_named_like_an_installed_module_is_refused(tiny, tmp_path):
    folder = _copy(tiny, tmp_path / "shadow")
    shutil.copytree(folder / "code" / "torchdeq_fusion", folder / "code" / "json")
    adapter = json.loads((folder / "adapter.json").read_text())
    adapter["factory"] = "json.model:build"
    (folder / "adapter.json").write_text(json.dumps(adapter))
    with pytest.raises(ModelLoadError, match="has the name of the installed module 'json'"):
        load_model(folder, device="cpu", trust_code=True, verify_checksums=False)


def test_the_command_lines_trust_code_covers_the_model_folder_only(tiny, tmp_path, capsys):
    from deq_core.evaluate import main

    other = _copy(tiny, tmp_path / "compared")
    code = main(["--model", str(tiny), "--device", "cpu", "--trust-code", "--compare", str(other)])
    assert code != 0
    assert "not for this folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- batch and edge through an adapter
def test_batch_runs_on_a_users_model_with_trust_code_and_says_so_without(tiny, tmp_path, capsys):
    from deq_core.batch import read_records
    from deq_core.cli import main
    from deq_core.data.generate import generate_folder

    cases = generate_folder("inspection", 3, tmp_path / "cases")
    command = ["batch", "--model", str(tiny), "--cases", str(cases), "--out", str(tmp_path / "run"), "--no-progress",
               "--log", f"sqlite:///{tmp_path / 'log.sqlite'}", "--steps", "4", "--starts", "2", "--no-cross-check"]
    assert main(command) == 2
    assert "--trust-code" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main([*command, "--trust-code"]) == 0
    records = read_records(tmp_path / "run")
    assert len(records) == 3 and set(records["case_id"]) == set(load_folder_ids(cases))


def load_folder_ids(cases: Path) -> list[str]:
    from deq_core.data import load_folder

    return list(load_folder(cases).ids)


def test_edge_export_of_a_users_model_needs_trust_code_and_then_works(tiny, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from deq_core.cli import main

    out = tmp_path / "tiny.onnx"
    with pytest.raises(ModelLoadError, match=r"adapter\.json: this model is your own code .*--trust-code"):
        main(["edge", "export", "--model", str(tiny), "--steps", "4", "--out", str(out)])
    assert not out.exists()
    assert main(["edge", "export", "--model", str(tiny), "--steps", "4", "--out", str(out), "--trust-code"]) == 0
    lens = Lens.open(tiny, device="cpu", trust_code=True)
    inputs = lens.data(max_cases=2).inputs
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {f"input_{i}": x[:2].numpy() for i, x in enumerate(inputs)})[0]
    assert probabilities.shape == (2, len(lens.class_names))
    assert abs(probabilities.sum(1) - 1).max() < 1e-5
    with pytest.raises(ModelLoadError, match="your own code"):  # the leave ended with the command
        load_model(tiny, device="cpu")


def test_python_m_deq_core_edge_takes_trust_code_too(tiny, tmp_path):
    # `python -m deq_core.edge` is the same command as `deq-lens edge`: it took no --trust-code before.
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from deq_core.edge import main as edge_main

    out = tmp_path / "tiny.onnx"
    with pytest.raises(ModelLoadError, match="your own code"):
        edge_main(["export", "--model", str(tiny), "--steps", "3", "--out", str(out)])
    assert edge_main(["export", "--model", str(tiny), "--steps", "3", "--out", str(out), "--trust-code"]) == 0
    assert edge_main(["check", "--model", str(tiny), "--onnx", str(out), "--repeats", "1", "--max-steps", "3",
                      "--json", "--trust-code"]) == 0  # fmt: skip
    with pytest.raises(ModelLoadError, match="your own code"):  # the leave ended with the command
        load_model(tiny, device="cpu")
