import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deq_core import load_model
from deq_core.engine.checkpoint import save_model
from deq_core.data.inspection import generate_inspection
from deq_core.evaluate import (
    Evaluation,
    Predictions,
    alarm_rates,
    compare_predictions,
    evaluate,
    expected_calibration_error,
    format_comparison,
)
from deq_core.evaluate import main as evaluate_main
from deq_core.train import TrainingSettings, train_model
from deq_core.train import main as train_main

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
EVALUATION_KEYS = {
    "model", "dataset", "split", "n", "classes", "accuracy", "macro_f1", "weighted_f1", "confusion_matrix",
    "false_alarm_rate", "miss_rate", "ece", "iterations_mean", "iterations_median", "iterations_p95",
    "converged_fraction", "latency_ms_median",
}  # fmt: skip


@pytest.fixture(scope="module")
def small_inspection():
    return generate_inspection("train", n_per_class=6), generate_inspection("val", n_per_class=3)


@pytest.mark.parametrize("architecture", ["deq", "early"])
def test_a_tiny_training_run_selects_on_validation_and_evaluates(architecture, small_inspection):
    train, val = small_inspection
    settings = TrainingSettings(epochs=3, batch_size=12, width=32, seed=1)
    model, records, metrics = train_model("inspection", architecture, settings, "cpu", False, train, val)
    assert len(records) == 3
    assert metrics["selected_on"] == "val"
    assert metrics["val_accuracy"] == max(r.val_accuracy for r in records)
    assert metrics["val_ids"] == list(val.ids)
    assert records[-1].train_loss < records[0].train_loss
    evaluation, predictions = evaluate(model, val, "tiny")
    assert set(EVALUATION_KEYS) <= set(evaluation.to_dict())
    assert 0 <= evaluation.accuracy <= 1 and 0 <= evaluation.ece <= 1
    assert np.sum(evaluation.confusion_matrix) == len(val)
    assert evaluation.false_alarm_rate is not None  # inspection has a normal class
    if architecture == "deq":
        assert 1 <= evaluation.iterations_median <= 55
        assert 0 <= evaluation.converged_fraction <= 1
    else:
        assert evaluation.iterations_mean is None and evaluation.converged_fraction is None


def test_training_is_reproducible_for_a_seed(small_inspection):
    train, val = small_inspection
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, seed=3)
    first, _, _ = train_model("inspection", "late", settings, "cpu", False, train, val)
    second, _, _ = train_model("inspection", "late", settings, "cpu", False, train, val)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_image_pooling_reaches_the_saved_model_and_a_bad_one_is_refused_before_loading(
    small_inspection, tmp_path, monkeypatch
):
    train, val = small_inspection
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, image_pooling="global")
    model, _, metrics = train_model("inspection", "late", settings, "cpu", False, train, val)
    assert metrics["settings"]["image_pooling"] == "global"
    loaded = load_model(save_model(model, tmp_path / "m"), "cpu")
    assert loaded.config.encoder.image_pooling == "global"
    with torch.no_grad():
        assert torch.equal(loaded.eval().run(list(val.inputs)).logits, model.eval().run(list(val.inputs)).logits)

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr("deq_core.train.load_dataset", no_data)
    with pytest.raises(ValueError, match="image_pooling must be one of grid, global, got 'round'"):
        train_model("inspection", "late", TrainingSettings(image_pooling="round"), "cpu")


def test_cli_trains_writes_the_folder_and_evaluates_as_json(tmp_path, capsys):
    out = tmp_path / "hw-late"
    assert train_main(["--dataset", "handwritten", "--model", "late", "--out", str(out), "--epochs", "1",
                       "--width", "32", "--no-checkpoint-encoders", "--quiet"]) == 0  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["settings"]["checkpoint_encoders"] is False
    assert {"weights.safetensors", "config.json", "checksums.json", "metrics.json", "curves.csv"} <= {
        p.name for p in out.iterdir()
    }
    assert "wrote" in capsys.readouterr().out
    assert load_model(out).config.dataset == "handwritten"
    assert evaluate_main(["--model", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert EVALUATION_KEYS <= set(result)
    assert result["n"] == 400 and result["split"] == "test" and len(result["classes"]) == 10
    assert result["accuracy"] > 0.5
    assert result["false_alarm_rate"] is None  # digits have no normal class
    assert evaluate_main(["--model", str(out)]) == 0
    assert "confusion matrix" in capsys.readouterr().out
    shipped = str(MODELS / "handwritten-late")
    assert evaluate_main(["--model", str(out), "--json", "--compare", shipped]) == 0
    (comparison,) = json.loads(capsys.readouterr().out)["comparisons"]
    assert comparison["other"] == "handwritten-late" and comparison["n"] == 400
    assert sum(comparison[k] for k in ("both_right", "only_model", "only_other", "both_wrong")) == 400
    assert comparison["only_other"] > comparison["only_model"]  # one epoch at width 32 against the shipped model
    assert evaluate_main(["--model", str(out), "--compare", str(MODELS / "inspection-late")]) == 2
    assert "inspection-late was evaluated on other cases" in capsys.readouterr().err
    older = tmp_path / "older" / "hw-late"  # same name as the model: the line must tell them apart
    shutil.copytree(out, older)
    assert evaluate_main(["--model", str(out), "--compare", str(older)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"vs {older}: +0 correct") and f"only {older} right: 0" in line


def test_cli_errors_are_clear_and_write_nothing(tmp_path, capsys):
    assert train_main(["--dataset", "nope", "--model", "deq", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert evaluate_main(["--model", str(tmp_path / "missing")]) == 2
    assert "weights file missing" in capsys.readouterr().err


def test_calibration_error_and_alarm_rates_on_known_cases():
    perfect = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(perfect, np.array([0, 1, 2, 1])) == 0
    overconfident = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert expected_calibration_error(overconfident, np.array([0, 1])) == pytest.approx(0.4)
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 1])
    predicted = np.array([0, 1, 0, 0, 1, 0, 2, 0])
    assert alarm_rates(labels, predicted, normal=0) == (0.25, 0.5)
    assert set(Evaluation.__dataclass_fields__) >= EVALUATION_KEYS


def _predictions(correct: list[bool], ids=None) -> Predictions:
    labels = np.zeros(len(correct), dtype=int)
    predicted = np.where(correct, 0, 1)
    ids = ids or tuple(f"c{i}" for i in range(len(correct)))
    return Predictions(ids, labels, predicted, np.eye(2)[predicted], None, None, None)


def test_paired_comparison_counts_cases_and_gives_mcnemars_exact_p():
    # 10 cases: both right on 3, only the first on 0, only the second on 6, both wrong on 1.
    first = _predictions([True] * 3 + [False] * 6 + [False])
    second = _predictions([True] * 3 + [True] * 6 + [False])
    c = compare_predictions(first, second, "a", "b")
    assert (c.both_right, c.only_model, c.only_other, c.both_wrong, c.n) == (3, 0, 6, 1, 10)
    assert c.difference == -6
    assert c.p_value == pytest.approx(2 / 2**6)  # both tails of a fair coin: 0 or 6 heads of 6
    assert compare_predictions(second, first).p_value == pytest.approx(c.p_value)  # two-sided
    assert compare_predictions(first, first).p_value == 1.0  # no discordant case
    # 1 against 2 of 3 discordant: 2 * P(X <= 1) = 2 * 4/8, capped at 1
    assert compare_predictions(_predictions([True, False, False]), _predictions([False, True, True])).p_value == 1.0
    assert "p = 0.031" in format_comparison(c) and "unlikely to be chance" in format_comparison(c)
    with pytest.raises(ValueError, match="other cases"):
        compare_predictions(first, _predictions([True] * 10, ids=tuple(f"d{i}" for i in range(10))))


def test_path_points_scale_floats_and_token_embeddings_and_leave_no_hook(small_inspection):
    from deq_core.train import scaled_inputs

    train, _ = small_inspection
    model = train_model("inspection", "deq", TrainingSettings(epochs=1, batch_size=12, width=32), "cpu", False,
                        train, small_inspection[1])[0]  # fmt: skip
    inputs = [x[:4] for x in train.inputs]
    alpha = torch.tensor([0.0, 0.25, 0.5, 1.0])
    text = [i for i, m in enumerate(model.config.modalities) if m.kind == "text"]
    embedding = model.encoders[text[0]].embedding
    plain = embedding(inputs[text[0]])
    with scaled_inputs(model, inputs, alpha) as path:
        for i, (x, p) in enumerate(zip(inputs, path)):
            if i in text:
                assert torch.equal(p, x)  # tokens kept: they set the padding mask
                assert torch.allclose(embedding(p), plain * alpha[:, None, None])
            else:
                assert torch.allclose(p, x * alpha.reshape(-1, *[1] * (x.dim() - 1)))
    assert torch.equal(embedding(inputs[text[0]]), plain)  # the hook is gone


def test_the_path_penalty_trains_and_changes_the_model(small_inspection):
    train, val = small_inspection
    # A negligible weight draws the same random path points, so only the penalty's size differs.
    base = TrainingSettings(epochs=2, batch_size=12, width=32, seed=2, path_jacobian_weight=1e-12)
    with_path = TrainingSettings(epochs=2, batch_size=12, width=32, seed=2, path_jacobian_weight=1.0)
    plain, _, _ = train_model("inspection", "deq", base, "cpu", False, train, val)
    model, records, _ = train_model("inspection", "deq", with_path, "cpu", False, train, val)
    assert all(np.isfinite(r.train_loss) for r in records)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))


def test_modality_dropout_replaces_whole_modalities_by_the_training_mean_and_keeps_one():
    from deq_core.engine.config import ModelConfig
    from deq_core.engine.model import build_model
    from deq_core.train import drop_modalities

    data = generate_inspection("test").subset(range(40))
    model = build_model(ModelConfig(architecture="late", modalities=data.modalities, class_names=data.class_names, width=16))
    model.fit_statistics(data.inputs)
    generator = torch.Generator().manual_seed(0)
    dropped, mask = drop_modalities(model, data.inputs, 0.6, generator)
    assert mask.shape == (40, len(data.inputs)) and not mask.all(dim=1).any()
    kept_any = torch.zeros(40, dtype=torch.bool)
    seen_drop = False
    for x, out, mean, gone in zip(data.inputs, dropped, model.input_means(), mask.T):
        same = (out == x).flatten(1).all(dim=1)
        is_mean = (out == mean.to(x.dtype)).flatten(1).all(dim=1)
        assert (same | is_mean).all()  # a modality is kept whole or replaced whole
        assert is_mean[gone].all() and same[~gone].all()  # the mask says which
        kept_any |= same
        seen_drop |= bool((is_mean & ~same).any())
    assert kept_any.all() and seen_drop
    assert all(torch.equal(a, b) for a, b in zip(drop_modalities(model, data.inputs, 0.0, generator)[0], data.inputs))
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, modality_dropout=0.3)
    train = generate_inspection("train").subset(range(48))
    model, records, _ = train_model("inspection", "deq", settings, "cpu", False, train, data)
    assert np.isfinite(records[-1].train_loss)


def test_weight_averaging_saves_the_moving_average_of_every_step(small_inspection, monkeypatch):
    import deq_core.train as train_module

    train, val = small_inspection
    steps = []

    class Recording(train_module.AveragedModel):
        def update_parameters(self, model):
            steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            super().update_parameters(model)

    monkeypatch.setattr(train_module, "AveragedModel", Recording)
    decay = 0.6
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, seed=4, ema_decay=decay)
    model, _, metrics = train_model("inspection", "late", settings, "cpu", False, train, val)
    assert len(steps) == 3  # 36 cases in batches of 12, one update per optimiser step
    assert metrics["settings"]["ema_decay"] == decay
    for name, value in model.state_dict().items():
        expected = steps[0][name]  # the average starts at the first step's weights
        for step in steps[1:]:
            expected = decay * expected + (1 - decay) * step[name]
        assert torch.allclose(value, expected, atol=1e-6), name
    assert any(not torch.equal(model.state_dict()[k], steps[-1][k]) for k in steps[-1])  # not the last weights
    with pytest.raises(ValueError, match="ema_decay"):
        train_model("inspection", "late", TrainingSettings(epochs=1, ema_decay=1.0), "cpu", False, train, val)


def test_unimodal_loss_averages_each_modalitys_cross_entropy_over_what_was_not_dropped():
    from torch import nn
    from torch.nn import functional as F

    from deq_core.train import unimodal_loss

    torch.manual_seed(0)
    heads = nn.ModuleList(nn.Linear(4, 3) for _ in range(2))
    features, labels = torch.randn(5, 2, 4), torch.tensor([0, 1, 2, 1, 0])
    by_hand = (F.cross_entropy(heads[0](features[:, 0]), labels) + F.cross_entropy(heads[1](features[:, 1]), labels)) / 2
    assert torch.allclose(unimodal_loss(heads, features, labels), by_hand)
    dropped = torch.zeros(5, 2, dtype=torch.bool)
    dropped[1, 0] = dropped[3, 1] = True
    garbage = features.clone()
    garbage[1, 0] = garbage[3, 1] = 1e3  # what was dropped must not count
    kept = [F.cross_entropy(heads[i](features[r, i : i + 1]), labels[r : r + 1]) for r in range(5) for i in range(2)
            if not dropped[r, i]]  # fmt: skip
    assert torch.allclose(unimodal_loss(heads, garbage, labels, dropped=dropped), torch.stack(kept).mean())


def test_unimodal_heads_train_the_encoders_but_are_not_saved(small_inspection):
    train, val = small_inspection
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, modality_dropout=0.3)
    plain, _, _ = train_model("inspection", "deq", settings, "cpu", False, train, val)
    # The heads draw their weights aside, so every random draw matches the plain run and
    # the only difference left is the unimodal loss.
    settings = dataclasses.replace(settings, unimodal_weight=1.0)
    model, records, metrics = train_model("inspection", "deq", settings, "cpu", False, train, val)
    assert np.isfinite(records[-1].train_loss) and metrics["settings"]["unimodal_weight"] == 1.0
    assert model.state_dict().keys() == plain.state_dict().keys()  # the heads stay behind
    encoder = [k for k in plain.state_dict() if k.startswith("encoders.") and k.endswith("weight")]
    assert any(not torch.equal(plain.state_dict()[k], model.state_dict()[k]) for k in encoder)
    with pytest.raises(ValueError, match="unimodal_weight"):
        train_model("inspection", "deq", TrainingSettings(epochs=1, unimodal_weight=-1.0), "cpu", False, train, val)


def test_unsupervised_modalities_names_what_the_auxiliary_loss_leaves_out():
    from deq_core.train import unsupervised_modalities

    names = ["photo", "sensors", "note"]
    assert unsupervised_modalities("", names).tolist() == [[False, False, False]]
    assert unsupervised_modalities("photo, sensors", names).tolist() == [[False, False, True]]
    with pytest.raises(ValueError, match="unknown modality notes; choose from photo, sensors, note"):
        unsupervised_modalities("photo,notes", names)
    with pytest.raises(ValueError, match="twice"):
        unsupervised_modalities("photo,photo", names)


def test_unimodal_modalities_leave_the_other_encoders_out_of_the_auxiliary_loss(small_inspection, monkeypatch):
    import deq_core.train as train_module

    train, val = small_inspection
    settings = TrainingSettings(epochs=1, batch_size=12, width=32, modality_dropout=0.3, unimodal_weight=1.0)
    everything, _, _ = train_model("inspection", "deq", settings, "cpu", False, train, val)
    named = dataclasses.replace(settings, unimodal_modalities="note,photo,sensors")
    same, _, _ = train_model("inspection", "deq", named, "cpu", False, train, val)
    for key, value in everything.state_dict().items():  # naming every modality is the default
        assert torch.equal(value, same.state_dict()[key]), key
    seen = []
    real = train_module.unimodal_loss

    def spy(heads, features, labels, label_smoothing=0.0, dropped=None):
        seen.append(dropped.clone())
        return real(heads, features, labels, label_smoothing, dropped)

    monkeypatch.setattr(train_module, "unimodal_loss", spy)
    restricted = dataclasses.replace(settings, unimodal_modalities="photo,sensors")
    model, _, metrics = train_model("inspection", "deq", restricted, "cpu", False, train, val)
    assert metrics["settings"]["unimodal_modalities"] == "photo,sensors"
    assert seen and all(mask[:, 2].all() for mask in seen)  # the note is never supervised alone
    assert any(mask[:, :2].any() for mask in seen)  # modality dropout still leaves out what it dropped
    assert any(not mask[:, :2].all() for mask in seen)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in everything.state_dict().items())
    with pytest.raises(ValueError, match="unknown modality"):
        train_model("inspection", "deq", dataclasses.replace(settings, unimodal_modalities="audio"), "cpu", False,
                    train, val)  # fmt: skip


def test_unimodal_loss_is_zero_when_every_supervised_modality_was_dropped():
    from torch import nn

    from deq_core.train import unimodal_loss

    heads = nn.ModuleList(nn.Linear(4, 3) for _ in range(2))
    loss = unimodal_loss(heads, torch.randn(3, 2, 4), torch.tensor([0, 1, 2]), dropped=torch.ones(3, 2, dtype=torch.bool))
    assert loss.item() == 0.0


# ----------------------------------------------------------------------------- --out never loses files

TINY_TRAIN = ["--dataset", "handwritten", "--model", "early", "--epochs", "1", "--width", "32", "--quiet"]


def _no_training(*args, **kwargs):
    raise AssertionError("trained although --out was going to be refused")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_refuses_a_folder_that_is_not_a_model_before_training_even_with_force(tmp_path, capsys, monkeypatch):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "thesis.txt").write_text("x")
    before = _snapshot(precious)
    monkeypatch.setattr("deq_core.train.train_model", _no_training)
    for extra in ([], ["--force"]):
        assert train_main([*TINY_TRAIN, "--out", str(precious), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not empty and is not a model folder" in err and "thesis.txt" in err and "Traceback" not in err
    assert _snapshot(precious) == before and (precious / "sub").is_dir()
    (tmp_path / "afile").write_text("keep")
    assert train_main([*TINY_TRAIN, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "keep"


def test_out_dot_is_resolved_refused_when_not_empty_and_written_into_when_empty(tmp_path, capsys, monkeypatch):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.md").write_text("mine")
    monkeypatch.chdir(busy)
    assert train_main([*TINY_TRAIN, "--out", "."]) == 2
    assert f"{busy} is not empty and is not a model folder" in capsys.readouterr().err
    assert (busy / "notes.md").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert train_main([*TINY_TRAIN, "--out", "."]) == 0
    assert f"wrote {empty}" in capsys.readouterr().out
    assert load_model(Path(".")).config.dataset == "handwritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]  # no staging folder left beside it
    assert train_main([*TINY_TRAIN, "--out", ".", "--force"]) == 2  # replacing the folder the shell is in
    assert f"Run from {tmp_path} with --out empty --force" in capsys.readouterr().err


def test_a_model_folder_is_replaced_only_with_force_and_only_once_the_new_one_is_complete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m"
    assert train_main([*TINY_TRAIN, "--out", str(out)]) == 0
    first = _snapshot(out)
    assert train_main([*TINY_TRAIN, "--out", str(out), "--seed", "5"]) == 2
    assert "already holds a model; add --force" in capsys.readouterr().err
    assert _snapshot(out) == first

    def broken_save(model, folder, extra_files=None):  # the new model fails half-way: the old one stays
        staging = Path(folder).with_name(".m-broken")
        staging.mkdir()
        raise OSError("disk full")

    monkeypatch.setattr("deq_core.train.save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train_main([*TINY_TRAIN, "--out", str(out), "--seed", "5", "--force"])
    assert _snapshot(out) == first
    monkeypatch.undo()
    assert train_main([*TINY_TRAIN, "--out", str(out), "--seed", "5", "--force"]) == 0
    second = _snapshot(out)
    assert second["weights.safetensors"] != first["weights.safetensors"]
    assert load_model(out).config.dataset == "handwritten"
    (out / "report.pdf").write_text("somebody's report")
    assert train_main([*TINY_TRAIN, "--out", str(out), "--force"]) == 2
    assert "also report.pdf, which replacing it would delete" in capsys.readouterr().err
    assert (out / "report.pdf").read_text() == "somebody's report"
