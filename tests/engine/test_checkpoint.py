import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from deq_core import ARCHITECTURES, ModelLoadError, load_model, model_checksum, save_model
from deq_core.engine.checkpoint import CHECKSUMS, CONFIG, WEIGHTS, sha256_file

from conftest import tiny_inputs, tiny_model


def reseal(folder):
    """Rewrite checksums.json as a careless (or malicious) editor would, so deeper checks are reached."""
    sums = {name: sha256_file(folder / name) for name in (WEIGHTS, CONFIG)}
    (folder / CHECKSUMS).write_text(json.dumps(sums))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_round_trip_is_bit_exact(architecture, tmp_path):
    model = tiny_model(architecture).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    inputs = tiny_inputs(3)
    with torch.no_grad():
        assert torch.equal(model(*inputs), loaded(*inputs))
    assert not loaded.training


def test_folder_holds_no_pickle_and_saving_again_replaces_it(tmp_path):
    model = tiny_model("early")
    save_model(model, tmp_path / "m", extra_files={"metrics.json": "{}"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CHECKSUMS, CONFIG, "metrics.json", WEIGHTS]
    first = model_checksum(tmp_path / "m")
    with torch.no_grad():
        model.head.bias.add_(1)
    save_model(model, tmp_path / "m")
    assert model_checksum(tmp_path / "m") != first
    assert not (tmp_path / "m" / "metrics.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging or backup folders left behind


def test_edited_weights_are_detected(tmp_path):
    save_model(tiny_model("deq"), tmp_path / "m")
    raw = bytearray((tmp_path / "m" / WEIGHTS).read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "m" / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="changed after the model was saved"):
        load_model(tmp_path / "m")


def test_a_tampered_tensor_shape_is_rejected_by_name(tmp_path):
    save_model(tiny_model("deq"), tmp_path / "m")
    tensors = load_file(tmp_path / "m" / WEIGHTS)
    tensors["head.weight"] = torch.zeros(3, 7)
    save_file(tensors, tmp_path / "m" / WEIGHTS)
    reseal(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="'head.weight' has shape \\(3, 7\\)"):
        load_model(tmp_path / "m")


def test_a_config_that_does_not_fit_the_weights_is_rejected(tmp_path):
    save_model(tiny_model("deq"), tmp_path / "m")
    config = json.loads((tmp_path / "m" / CONFIG).read_text())
    config["width"] = 64
    (tmp_path / "m" / CONFIG).write_text(json.dumps(config))
    reseal(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="tensor '.*' has shape"):
        load_model(tmp_path / "m")
    config["architecture"] = "late"
    (tmp_path / "m" / CONFIG).write_text(json.dumps(config))
    reseal(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="do not fit config 'late'"):
        load_model(tmp_path / "m")


def test_truncated_or_missing_files_are_rejected(tmp_path):
    save_model(tiny_model("late"), tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    reseal(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="unreadable safetensors"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / CHECKSUMS).unlink()
    with pytest.raises(ModelLoadError, match="checksums missing"):
        load_model(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="weights file missing"):
        load_model(tmp_path / "nowhere")


def test_non_finite_weights_are_rejected(tmp_path):
    model = tiny_model("early")
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    save_model(model, tmp_path / "m")
    with pytest.raises(ModelLoadError, match="NaN"):
        load_model(tmp_path / "m")


def test_invalid_config_json_is_reported_with_its_path(tmp_path):
    save_model(tiny_model("early"), tmp_path / "m")
    (tmp_path / "m" / CONFIG).write_text("{not json")
    reseal(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="invalid config"):
        load_model(tmp_path / "m")
