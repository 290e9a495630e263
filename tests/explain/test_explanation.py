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


def _assert_same_explanation(many, one, tol: float = 1e-6):
    """Every number the pages and reports show, equal within ``tol``."""
    assert (many.target, many.prediction) == (one.target, one.prediction)
    assert many.probabilities == pytest.approx(one.probabilities, abs=tol)
    for a, b in zip(many.attribution.maps, one.attribution.maps):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    assert many.attribution.convergence_delta == pytest.approx(one.attribution.convergence_delta, abs=tol)
    assert many.attribution.path_values == pytest.approx(one.attribution.path_values, abs=tol)
    for name in ("values", "interactions", "coalition_values", "ablation"):
        torch.testing.assert_close(getattr(many.shapley, name), getattr(one.shapley, name), atol=tol, rtol=0)
    assert many.shapley.coalition_solve == one.shapley.coalition_solve
    r, s = many.reliability.to_dict(), one.reliability.to_dict()
    assert r["warnings"] == s["warnings"] and r["reliable"] == s["reliable"]
    assert r["ig_relative_delta"] == pytest.approx(s["ig_relative_delta"], abs=tol)
    if one.stability is not None:
        assert many.stability.local.spectral_radius == pytest.approx(one.stability.local.spectral_radius, abs=tol)
        assert many.stability.uniqueness.n_equilibria == one.stability.uniqueness.n_equilibria


def test_every_class_at_once_equals_each_class_alone(contractive_deq):
    """explain_targets shares the solve, the coalitions and the stability check between the classes;
    each class's explanation must still be the one explain_case gives for it alone."""
    from deq_core.explain.explanation import explain_targets

    inputs = tuple(x[:1] for x in tiny_inputs(1))
    classes = range(len(contractive_deq.config.class_names))
    together = explain_targets(contractive_deq, inputs, list(classes), n_steps=8)
    assert [e.target for e in together] == list(classes)
    for target, many in zip(classes, together):
        _assert_same_explanation(many, explain_case(contractive_deq, inputs, target=target, n_steps=8))
    with pytest.raises(ValueError, match="at least one target"):
        explain_targets(contractive_deq, inputs, [], n_steps=8)


def test_lens_explain_classes_fills_the_explain_cache(contractive_deq):
    """After explain_classes, explain of any class is a look-up (the same object), and equals a fresh computation."""
    from deq_core import Case, Lens

    lens = Lens(contractive_deq)
    case = Case.from_inputs(contractive_deq.config.modalities, tuple(x[:1] for x in tiny_inputs(1)), key="c-1")
    found = lens.explain_classes(case, n_steps=8)
    assert sorted(found) == list(range(len(lens.class_names)))
    for target, explanation in found.items():
        assert lens.explain(case, target, 8) is explanation
        _assert_same_explanation(explanation, explain_case(contractive_deq, case.inputs, target=target, n_steps=8,
                                                           anchors=lens.stability_anchors()))  # fmt: skip
