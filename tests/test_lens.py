"""Lens: one model, what a person asks of it, one cache, one lock, one tight reference."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from conftest import make_contractive, tiny_inputs, tiny_model, tiny_modalities

from deq_core import AuditLog, Case, CorruptionSpec, Lens, ReportSettings, apply_corruptions, explain_case, issue_report, save_model, trace
from deq_core.data.base import MultimodalDataset
from deq_core.explain import tuning
from deq_core.explain.corrupt import InputReference


def _data(n: int = 6) -> MultimodalDataset:
    return MultimodalDataset(
        name="tiny", split="test", modalities=tiny_modalities(), class_names=("a", "b", "c"), inputs=tiny_inputs(n),
        labels=torch.arange(n) % 3, ids=tuple(f"t{i}" for i in range(n)), texts={"note": tuple(f"n{i}" for i in range(n))},
    )  # fmt: skip


@pytest.fixture
def lens(tmp_path, single_thread):
    model = tiny_model("deq")
    make_contractive(model)
    save_model(model.eval(), tmp_path / "tiny-deq")
    return Lens.open(tmp_path / "tiny-deq", device="cpu")


def test_decide_is_the_recorded_solve_and_is_cached_by_key_and_inputs(lens):
    data = _data()
    case = lens.case("t2", data=data)
    decision = lens.decide(case)
    output, (trajectory,) = trace(lens.model, list(case.inputs))
    assert np.allclose(decision.probabilities, torch.softmax(output.logits, 1)[0].numpy(), atol=0, rtol=0)
    assert decision.trajectory.iterations == trajectory.iterations
    assert decision.prediction == int(decision.probabilities.argmax())
    assert lens.decide(case) is decision  # cached
    # The same key with other inputs is another case: the cache keys the inputs' fingerprint too.
    other = Case(case.key, tuple(x.clone() for x in lens.case("t3", data=data).inputs), case.label)
    assert not np.array_equal(lens.decide(other).probabilities, decision.probabilities)


def test_explain_equals_explain_case(lens):
    case = lens.case("t1", data=_data())
    explanation = lens.explain(case, n_steps=8)
    direct = explain_case(lens.model, case.inputs, texts=case.texts, n_steps=8)
    assert explanation.prediction == direct.prediction
    assert np.allclose(np.asarray(explanation.shapley.values), np.asarray(direct.shapley.values), atol=1e-7)
    for a, b in zip(explanation.attribution.maps, direct.attribution.maps):
        assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), atol=1e-7)
    assert lens.explain(case, n_steps=8) is explanation
    assert lens.explain(case, n_steps=16) is not explanation


def test_variant_is_the_corruption_keyed_by_the_case(lens):
    case = lens.case("t0", data=_data())
    specs = [CorruptionSpec("sensors", "gaussian_noise", 0.5), CorruptionSpec("photo", "drop", 1.0)]
    variant = lens.variant(case, specs)
    expected = apply_corruptions(case.inputs, lens.modalities, specs, InputReference.of_model(lens.model), case_keys=["t0"])
    assert all(torch.equal(a, b) for a, b in zip(variant.inputs, expected))
    assert variant.provenance.parent == "t0" and variant.key != case.key
    assert lens.variant(case, []) is case
    assert lens.decide(variant).probabilities.shape == (3,)


def test_assess_and_sweep_share_one_reference_solve(lens, monkeypatch):
    data = _data()
    calls = []
    real = tuning.reference_decisions
    monkeypatch.setattr(tuning, "reference_decisions", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    settings = dataclasses.replace(lens.config.solver, tol=1e-2)
    report = lens.assess(settings, data, latency_cases=1)
    sweep = lens.sweep(settings, data, latency_cases=1)
    assert len(calls) == 1 and calls[0] == tuning.reference_for(settings)
    # Same figures as the functions called on their own, each with its own reference solve.
    alone = tuning.assess_settings(lens.model, data, settings, real(lens.model, data, tuning.reference_settings(settings)), 1)
    assert (report.accuracy, report.flips) == (alone.accuracy, alone.flips)
    direct = tuning.tolerance_sweep(lens.model, data, settings, latency_cases=1)
    assert [r.flips for r in sweep.reports] == [r.flips for r in direct.reports]
    assert sweep.recommended_tol == direct.recommended_tol and sweep.reference == direct.reference


def test_concurrent_calls_compute_once_and_agree(lens):
    case = lens.case("t4", data=_data())
    results, errors = [], []

    def ask():
        try:
            results.append(lens.decide(case))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    assert all(r is results[0] for r in results)


def test_background_lens_shares_the_cache_not_the_model(lens):
    other = lens.background(device="cpu")
    assert other.model is not lens.model and other.cache is lens.cache and other.checksum == lens.checksum
    case = lens.case("t0", data=_data())
    assert other.decide(case) is lens.decide(case)


def test_report_and_verify_round_trip(lens, tmp_path, monkeypatch):
    monkeypatch.setenv("DEQ_LENS_AUDIT_DB", f"sqlite:///{tmp_path / 'audit.sqlite'}")
    monkeypatch.setenv("DEQ_LENS_KEY_DIR", str(tmp_path / "keys"))
    case = lens.case("t5", data=_data())
    case = dataclasses.replace(case, texts={})  # _data's notes are not the text of its random tokens, which verify checks
    report = lens.report(case, ReportSettings(n_steps=8))
    assert not Lens.verify(json.loads(report.json_text())).ok  # never issued: not in the log, not signed
    issue_report(report, AuditLog(), tmp_path / "report")
    json_path = tmp_path / "report" / "report.json"
    assert Lens.verify(json_path).ok
    record = json.loads(json_path.read_text())
    record["case_id"] = "t4"  # any edit breaks the record's hash
    assert not Lens.verify(record).ok
    with pytest.raises(ValueError, match="original case"):
        lens.report(lens.variant(case, [CorruptionSpec("photo", "drop", 1.0)]))


def test_a_model_in_memory_has_a_lens_but_no_reports():
    model = tiny_model("early").eval()
    lens = Lens(model)
    assert len(lens.checksum) == 64 and not lens.equilibrium
    case = Case.from_inputs(lens.modalities, [x[0] for x in tiny_inputs(1)], key="k")
    assert lens.decide(case).trajectory is None
    with pytest.raises(ValueError, match="model folder"):
        lens.report(case)
    assert Lens(tiny_model("early").eval()).checksum == lens.checksum  # same weights, same identity


def test_a_lens_refuses_a_model_without_the_protocol_and_names_what_is_missing():
    from deq_core.engine.protocol import EquilibriumLensModel, LensModel

    deq = tiny_model("deq").eval()
    assert isinstance(deq, LensModel) and isinstance(deq, EquilibriumLensModel)
    assert not isinstance(tiny_model("late").eval(), EquilibriumLensModel)

    class NotAModel:
        config = deq.config
        n_modalities = 4

    with pytest.raises(TypeError, match="device, input_means, encode, run, eval"):
        Lens(NotAModel(), checksum="x")


def test_issue_logs_signs_and_writes_a_report_that_verifies(lens, tmp_path, monkeypatch):
    monkeypatch.setenv("DEQ_LENS_KEY_DIR", str(tmp_path / "keys"))
    url = f"sqlite:///{tmp_path / 'issued.sqlite'}"
    data = _data()
    data.texts.clear()  # random tokens: no note text to show beside them
    case = lens.case("t2", data=data)
    lens.issue(case, tmp_path / "out", ReportSettings(n_steps=8), log=url)
    assert Lens.verify(tmp_path / "out" / "report.json", log=url).ok
    built_only = lens.report(case, ReportSettings(n_steps=8))
    assert not Lens.verify(built_only.record, log=url).ok  # never issued: in no log
