"""One case fully explained: consistency of the parts, reliability, serialisation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_inputs, tiny_model

from deq_core.engine.config import SolverSettings
from deq_core.explain.explanation import explain_case

pytestmark = pytest.mark.usefixtures("single_thread")


def test_explanation_parts_agree_with_the_model(contractive_deq):
    inputs = tuple(x[:1] for x in tiny_inputs(1))
    e = explain_case(contractive_deq, inputs, texts={"note": "surface scratch near edge"}, n_steps=8)
    with torch.no_grad():
        probabilities = torch.softmax(contractive_deq(*inputs), dim=1)[0]
    assert e.prediction == int(probabilities.argmax()) == e.target
    assert e.probabilities == pytest.approx(probabilities.tolist(), abs=1e-5)
    assert e.attribution.target == e.shapley.target == e.target
    assert e.shapley.full_value == pytest.approx(e.probabilities[e.target], abs=1e-5)

    t = e.trajectory
    assert e.gate_share.shape == (t.iterations, 4)
    torch.testing.assert_close(e.gate_share[1:].sum(dim=1), torch.ones(t.iterations - 1))
    assert 0 <= e.lock_in_iteration < t.iterations
    assert int(t.predictions[-1]) == e.prediction

    r = e.reliability
    assert r.converged and r.status == "converged" and r.final_relative_residual <= contractive_deq.config.solver.tol
    assert r.ig_delta == e.attribution.convergence_delta
    assert r.reliable == (not r.warnings)
    assert e.seconds > 0


def test_to_dict_is_json_serialisable(contractive_deq):
    e = explain_case(contractive_deq, tiny_inputs(1), texts={"note": "all fine"}, n_steps=4)
    data = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert data["predicted_class"] in ("a", "b", "c")
    assert len(data["trajectory"]["probabilities"]) == e.trajectory.iterations
    assert len(data["gate_share"]) == e.trajectory.iterations and len(data["gate_share"][0]) == 4
    assert set(data["attribution"]["maps"]) == {"photo", "sensors", "note", "stats"}
    assert set(data["shapley"]["values"]) == {"photo", "sensors", "note", "stats"}
    assert data["texts"] == {"note": "all fine"}
    assert isinstance(data["reliability"]["reliable"], bool)


def test_unsettled_solves_make_the_explanation_unreliable_with_plain_warnings(contractive_deq):
    starved = SolverSettings(max_iter=2, tol=1e-9)
    e = explain_case(contractive_deq, tiny_inputs(1), n_steps=4, solver=starved)
    r = e.reliability
    assert not r.converged and r.status == "max_iter" and not r.solves_converged
    assert not r.reliable and not e.reliable
    assert any("did not settle" in w and "the prediction itself" in w for w in r.warnings)
    assert any("attribution path" in w for w in r.warnings)
    assert any("modalities left out" in w for w in r.warnings)


def test_explaining_another_class_and_unbatched_inputs(contractive_deq):
    inputs = tiny_inputs(1)
    predicted = explain_case(contractive_deq, inputs, n_steps=4).prediction
    other = (predicted + 1) % 3
    e = explain_case(contractive_deq, tuple(x[0] for x in inputs), target=other, n_steps=4)
    assert e.target == other and e.prediction == predicted
    assert e.attribution.target == other and e.shapley.target == other
    with pytest.raises(ValueError, match="one case"):
        explain_case(contractive_deq, tiny_inputs(2))


def test_feed_forward_models_are_explained_without_a_trajectory():
    model = tiny_model("late").eval()
    e = explain_case(model, tiny_inputs(1), n_steps=4)
    assert e.trajectory is None and e.gate_share is None and e.lock_in_iteration is None
    assert e.reliability.status == "feed-forward" and e.reliability.solves_converged
    json.dumps(e.to_dict(), allow_nan=False)
