import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from deq_core import ModelConfig, build_model, save_model
from deq_core.explain import robustness
from deq_core.explain.corrupt import CorruptionSpec, InputReference, apply
from deq_core.data import MultimodalDataset, load_dataset
from deq_core.explain.robustness import (
    ROW_KEYS,
    SUMMARY_KEYS,
    effective_robustness,
    effective_robustness_fit,
    find_baselines,
    relative_robustness,
    robustness_sweep,
    summarise,
)

from conftest import make_contractive, tiny_inputs, tiny_model, tiny_modalities

SEVERITIES = (0.0, 0.5, 1.0)
ARCHITECTURES = ("deq", "weight_tied", "early", "late")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Hundreds of tiny batches: thread start-up costs more than it saves on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(architecture):
    model = tiny_model(architecture)
    if architecture == "deq":
        make_contractive(model)  # settles in a few steps, as a trained DEQ does
    return model.eval()


@pytest.fixture(scope="module")
def models():
    return {a: _model(a) for a in ARCHITECTURES}


@pytest.fixture(scope="module")
def data(models):
    inputs = tiny_inputs(24, seed=5)
    with torch.no_grad():  # half the labels are the DEQ's own answers, so accuracy is neither 0 nor 1
        predicted = models["deq"](*inputs).argmax(dim=1)
    labels = torch.where(torch.arange(24) % 2 == 0, predicted, (predicted + 1) % 3)
    return MultimodalDataset("tiny", "test", tiny_modalities(), ("a", "b", "c"), inputs, labels,
                             tuple(f"case-{i}" for i in range(24)))  # fmt: skip


@pytest.fixture(scope="module")
def report(models, data):
    return robustness_sweep(models, data, SEVERITIES)


def _accuracy(model, inputs, labels):
    with torch.no_grad():
        return float((model(*inputs).argmax(dim=1) == labels).float().mean())


def test_rows_cover_every_setting_with_the_right_keys_and_ranges(report, data):
    rows = report.rows
    assert list(rows.columns) == list(ROW_KEYS)
    kinds = sum(len(k) for k in report.corruptions.values())
    assert kinds == 7 + 7 + 5 + 4
    assert len(rows) == len(ARCHITECTURES) * kinds * len(SEVERITIES)
    assert rows["accuracy"].between(0, 1).all()
    assert (rows["equilibrium_shift"] >= 0).all() and np.isfinite(rows["equilibrium_shift"]).all()
    for architecture in ("deq", "weight_tied"):
        assert (rows.loc[rows["model"] == architecture, "iterations_mean"] >= 1).all()
    for architecture in ("early", "late"):
        assert rows.loc[rows["model"] == architecture, "iterations_mean"].isna().all()
    as_json = json.loads(json.dumps(report.to_dict()))
    assert set(as_json["rows"][0]) == set(ROW_KEYS)
    assert any(r["iterations_mean"] is None for r in as_json["rows"])
    assert {(s["model"], s["modality"]) for s in as_json["summary"]} == {
        (a, m.name) for a in ARCHITECTURES for m in data.modalities}  # fmt: skip


def test_severity_zero_is_the_clean_run_and_corruption_moves_the_equilibrium(report, models, data):
    rows = report.rows
    for name, model in models.items():
        clean = _accuracy(model, data.inputs, data.labels)
        mine = rows[rows["model"] == name]
        at_zero = mine[mine["severity"] == 0]
        assert np.allclose(at_zero["accuracy"], clean)
        assert (at_zero["equilibrium_shift"] == 0).all()
        dropped = mine[(mine["corruption"] == "drop") & (mine["severity"] > 0)]
        assert (dropped["equilibrium_shift"] > 0.01).all()
        # drop removes the whole input at any severity above 0: the same input, the same answer
        for _, same in dropped.groupby("modality"):
            assert same["accuracy"].nunique() == 1
    deq_clean = models["deq"].run(data.inputs).solve.iterations.float().mean()
    assert np.allclose(rows[(rows["model"] == "deq") & (rows["severity"] == 0)]["iterations_mean"], float(deq_clean))


def test_a_row_matches_running_the_model_on_the_replayed_corruption(report, models, data):
    spec = CorruptionSpec("photo", "occlusion", 0.5, seed=0)
    corrupted = apply(data.inputs, data.modalities, spec, InputReference.of_model(models["early"]), case_keys=data.ids)
    row = report.rows.query("model == 'early' and corruption == 'occlusion' and severity == 0.5")
    assert float(row["accuracy"].iloc[0]) == pytest.approx(_accuracy(models["early"], corrupted, data.labels))
    with torch.no_grad():
        fused = models["early"].run(corrupted).fused
        clean = models["early"].run(data.inputs).fused
    shift = ((fused - clean).norm(dim=1) / clean.norm(dim=1)).mean()
    assert float(row["equilibrium_shift"].iloc[0]) == pytest.approx(float(shift), rel=1e-5)


def test_summaries_follow_the_rows(report):
    summary = report.summary
    assert list(summary.columns) == ["model", "modality", *SUMMARY_KEYS]
    assert report.baseline == "late"
    assert np.allclose(summary.loc[summary["model"] == "late", "effective_robustness"], 0)
    assert summary["effective_robustness"].notna().all() and summary["effective_robustness_fit"].notna().all()
    one = summary[(summary["model"] == "deq") & (summary["modality"] == "sensors")].iloc[0]
    curve = report.rows.query("model == 'deq' and modality == 'sensors'").groupby("severity")["accuracy"].mean()
    assert one["clean_accuracy"] == pytest.approx(curve[0.0])
    assert one["relative_robustness"] == pytest.approx((curve[0.0] + 2 * curve[0.5] + curve[1.0]) / 4)
    assert one["retained_accuracy"] == pytest.approx(one["relative_robustness"] / curve[0.0])
    per_kind = report.corruption_summary
    assert len(per_kind) == len(report.rows) // len(SEVERITIES)


def test_the_cache_is_reused_and_invalidated_when_a_model_changes(models, data, tmp_path, monkeypatch):
    calls = []
    measure = robustness.measure

    def counting(model, *args, **kwargs):
        calls.append(model)
        return measure(model, *args, **kwargs)

    monkeypatch.setattr(robustness, "measure", counting)
    two = {"deq": _model("deq"), "early": _model("early")}
    corruptions = {"photo": ("occlusion", "drop"), "note": ("typos",)}
    first = robustness_sweep(two, data, SEVERITIES, corruptions, cache_dir=tmp_path)
    assert calls and first.cached == {"deq": False, "early": False}
    # An input seen before is not run again: drop is one input at every severity > 0, and
    # occlusion at 1 covers the whole photo with the mean, as drop does. Per model: clean,
    # occlusion 0.5, occlusion 1 (= drop), typos 0.5, typos 1.
    assert len(calls) == 2 * 5

    calls.clear()
    second = robustness_sweep(two, data, SEVERITIES, corruptions, cache_dir=tmp_path)
    assert calls == [] and second.cached == {"deq": True, "early": True}
    pd.testing.assert_frame_equal(first.rows, second.rows)

    with torch.no_grad():
        two["early"].head.bias.add_(0.5)
    third = robustness_sweep(two, data, SEVERITIES, corruptions, cache_dir=tmp_path)
    assert third.cached == {"deq": True, "early": False}
    assert calls and all(model is two["early"] for model in calls)

    calls.clear()
    robustness_sweep(two, data, (0.0, 0.3), corruptions, cache_dir=tmp_path)  # other severities: another key
    assert len(calls) == 2 * 4


def test_is_cached_says_whether_a_sweep_would_read_every_model(models, data, tmp_path):
    two = {"deq": models["deq"], "early": models["early"]}
    checksums = {"deq": "checksum-deq", "early": "checksum-early"}
    corruptions = {"photo": ("drop",), "stats": ("feature_dropout",)}
    asked = dict(data=data, severities=(1.0,), corruptions=corruptions, seed=3, cache_dir=tmp_path)
    assert not robustness.is_cached(checksums, **asked)
    robustness_sweep({"deq": two["deq"]}, data, (1.0,), corruptions, seed=3, cache_dir=tmp_path,
                     checksums=checksums)  # fmt: skip
    assert robustness.is_cached(["checksum-deq"], **asked)
    assert not robustness.is_cached(checksums, **asked)  # early is not in the cache yet
    first = robustness_sweep(two, data, (1.0,), corruptions, seed=3, cache_dir=tmp_path, checksums=checksums)
    assert first.cached == {"deq": True, "early": False}
    assert robustness.is_cached(checksums, **asked)
    assert robustness.is_cached(checksums, **{**asked, "severities": (0.0, 1.0)})  # 0 is always swept
    assert not robustness.is_cached(checksums, **{**asked, "seed": 4})
    assert not robustness.is_cached(checksums, **{**asked, "severities": (0.5, 1.0)})
    assert not robustness.is_cached(checksums, **{**asked, "corruptions": {"photo": ("drop",)}})
    assert not robustness.is_cached(checksums, **{**asked, "data": data.subset(range(len(data) - 1))})
    assert not robustness.is_cached(checksums, **{**asked, "cache_dir": None})
    assert not robustness.is_cached(checksums, **{**asked, "cache_dir": tmp_path / "elsewhere"})
    assert not robustness.is_cached({}, **asked)
    with pytest.raises(ValueError, match="do not apply"):
        robustness.is_cached(checksums, **{**asked, "corruptions": {"stats": ("blur",)}})
    for entry in tmp_path.glob("*.json"):
        entry.write_text("{broken")  # an unreadable entry is a miss, and the sweep recomputes it
    assert not robustness.is_cached(checksums, **asked)
    again = robustness_sweep(two, data, (1.0,), corruptions, seed=3, cache_dir=tmp_path, checksums=checksums)
    assert again.cached == {"deq": False, "early": False}
    pd.testing.assert_frame_equal(again.rows, first.rows)


def test_the_cli_caches_under_the_cache_root_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEQ_LENS_CACHE", str(tmp_path / "root"))
    assert robustness.default_cache_dir() == tmp_path / "root" / "robustness"
    assert robustness.DEFAULT_CACHE == tmp_path / "root" / "robustness"  # the old name follows it
    train = load_dataset("handwritten", "train")
    folder = _save_tiny(tmp_path / "handwritten-late", "late", "handwritten", train.modalities, train.class_names,
                        train.inputs)  # fmt: skip
    args = ["--model", str(folder), "--severities", "1", "--json", "--quiet", "--no-baselines"]
    assert robustness.main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(list((tmp_path / "root" / "robustness").glob("*.json"))) == 1
    data = load_dataset("handwritten", "test", modalities=train.modalities)
    assert robustness.is_cached({"m": first["models"]["handwritten-late"]["checksum"]}, data, (1.0,))
    assert robustness.main(args) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == {"handwritten-late": True}


def test_severity_zero_is_always_swept_and_bad_requests_are_refused(models, data):
    small = robustness_sweep({"late": models["late"]}, data, (1.0,), {"stats": ("feature_dropout",)})
    assert small.severities == (0.0, 1.0)
    assert math.isnan(small.summary["effective_robustness_fit"].iloc[0])  # one model: no line to fit
    with pytest.raises(ValueError, match="do not apply"):
        robustness_sweep({"late": models["late"]}, data, SEVERITIES, {"note": ("blur",)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        robustness_sweep({"late": models["late"]}, data, (0.5, 2.0))
    other = build_model(ModelConfig("early", tiny_modalities()[:2], ("a", "b", "c"), width=32))
    with pytest.raises(ValueError, match="does not take the modalities"):
        robustness_sweep({"other": other}, data, SEVERITIES)


# ----------------------------------------------------------------------------- metrics by hand


def test_relative_robustness_is_multibench_area():
    accuracy = [0.9, 0.85, 0.8, 0.7, 0.65, 0.5, 0.45, 0.4, 0.3, 0.2, 0.1]
    multibench = sum((accuracy[i] + accuracy[i + 1]) * 0.1 / 2 for i in range(10))
    assert relative_robustness(np.linspace(0, 1, 11), accuracy) == pytest.approx(multibench)
    assert relative_robustness([0, 0.5, 1], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert relative_robustness([1, 0, 0.5], [0.0, 1.0, 1.0]) == pytest.approx(0.75)  # order does not matter
    assert relative_robustness([0], [0.7]) == pytest.approx(0.7)


def test_effective_robustness_against_a_shifted_baseline():
    # sum_s acc(s) - (base(s) + acc(0) - base(0)) = 0 + (0.8 - 0.7) + (0.6 - 0.4)
    assert effective_robustness([0.9, 0.8, 0.6], [0.8, 0.6, 0.3]) == pytest.approx(0.3)
    assert effective_robustness([0.5, 0.4], [0.9, 0.8]) == pytest.approx(0.0)  # same drop, any clean accuracy
    with pytest.raises(ValueError):
        effective_robustness([0.9, 0.8], [0.9])


def test_effective_robustness_fit_is_the_distance_above_the_line_across_models():
    residual = effective_robustness_fit([0.5, 0.7, 0.9], [0.4, 0.6, 0.6])
    assert residual == pytest.approx([-1 / 30, 2 / 30, -1 / 30])
    on_a_line = effective_robustness_fit([0.5, 0.6, 0.8], [0.3, 0.4, 0.6])
    assert on_a_line == pytest.approx([0, 0, 0], abs=1e-12)
    assert np.isnan(effective_robustness_fit([0.5, 0.7], [0.4, 0.6])).all()
    assert np.isnan(effective_robustness_fit([0.5, 0.5, 0.5], [0.4, 0.3, 0.2])).all()


def test_summarise_on_hand_made_rows():
    rows = pd.DataFrame(
        [(m, "photo", k, s, a, None, 0.0) for m, k, curve in [
            ("a", "blur", [0.9, 0.7, 0.5]), ("a", "drop", [0.9, 0.5, 0.5]),
            ("late", "blur", [0.8, 0.7, 0.6]), ("late", "drop", [0.8, 0.4, 0.4]),
        ] for s, a in zip(SEVERITIES, curve)],
        columns=list(ROW_KEYS),
    )  # fmt: skip
    summary = summarise(rows, baseline="late").set_index("model")
    # model a averages to [0.9, 0.6, 0.5]; late to [0.8, 0.55, 0.5]
    assert summary.loc["a", "relative_robustness"] == pytest.approx((0.9 + 1.2 + 0.5) / 4)
    assert summary.loc["a", "worst_accuracy"] == pytest.approx(0.5)
    assert summary.loc["a", "effective_robustness"] == pytest.approx(0 + (0.6 - 0.65) + (0.5 - 0.6))
    assert summary.loc["late", "effective_robustness"] == 0
    assert summary["iterations_mean"].isna().all()
    per_kind = summarise(rows, ("modality", "corruption"), baseline="late")
    blur = per_kind[(per_kind["model"] == "a") & (per_kind["corruption"] == "blur")].iloc[0]
    assert blur["effective_robustness"] == pytest.approx(0 + (0.7 - 0.8) + (0.5 - 0.7))


# ----------------------------------------------------------------------------- folders and CLI


def _save_tiny(folder, architecture, dataset, modalities, class_names, train_inputs):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture, modalities, class_names, width=16, unroll_steps=4, dataset=dataset))
    model.fit_statistics(train_inputs)
    return save_model(model, folder)


def test_baselines_are_found_beside_the_model(tmp_path):
    modalities, classes, inputs = tiny_modalities(), ("a", "b", "c"), tiny_inputs(8)
    for architecture in ("deq", "early", "late"):
        _save_tiny(tmp_path / f"tiny-{architecture}", architecture, "tiny", modalities, classes, inputs)
    _save_tiny(tmp_path / "tiny-weight_tied", "weight_tied", "other", modalities, classes, inputs)
    _save_tiny(tmp_path / "huge-late", "late", "tiny", modalities, classes, inputs)
    with pytest.warns(UserWarning, match="tiny-weight_tied"):
        found = find_baselines(tmp_path / "tiny-early")
    assert list(found) == ["tiny-deq", "tiny-early", "tiny-late"]
    (tmp_path / "odd-name").mkdir()
    _save_tiny(tmp_path / "odd-name", "deq", "tiny", modalities, classes, inputs)
    assert list(find_baselines(tmp_path / "odd-name")) == ["odd-name"]


def test_cli_prints_json_and_reads_its_cache(tmp_path, capsys):
    train = load_dataset("handwritten", "train")
    folder = _save_tiny(tmp_path / "handwritten-late", "late", "handwritten", train.modalities, train.class_names,
                        train.inputs)  # fmt: skip
    args = ["--model", str(folder), "--severities", "1", "--json", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert robustness.main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n"] == 400 and first["severities"] == [0.0, 1.0] and first["cached"] == {"handwritten-late": False}
    assert {r["modality"] for r in first["rows"]} == {m.name for m in train.modalities}
    assert robustness.main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["cached"] == {"handwritten-late": True} and second["rows"] == first["rows"]
    assert robustness.main(["--model", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


def test_the_package_exports_the_sweep_on_first_use():
    import deq_core

    assert deq_core.robustness_sweep is robustness_sweep
    assert deq_core.RobustnessReport is robustness.RobustnessReport
