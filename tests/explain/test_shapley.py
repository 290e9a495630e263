"""Exact modality Shapley values: efficiency, symmetry, closed forms, the ablation cross-check."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import tiny_inputs

from deq_core.explain.shapley import (
    ModalityShapley,
    absent_input,
    coalition_inputs,
    coalition_masks,
    interaction_weights,
    modality_shapley,
    shapley_weights,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_values_add_up_to_full_minus_empty_on_a_deq(contractive_deq):
    inputs = tiny_inputs(3)
    results = modality_shapley(contractive_deq, inputs)
    with torch.no_grad():
        probabilities = torch.softmax(contractive_deq(*inputs), dim=1)
    for case, s in enumerate(results):
        assert s.values.shape == (4,) and s.coalition_values.shape == (16,)
        assert float(s.values.sum()) == pytest.approx(s.full_value - s.empty_value, abs=1e-6)
        assert abs(s.efficiency_gap) < 1e-6
        assert s.target == int(probabilities[case].argmax())
        assert s.full_value == pytest.approx(float(probabilities[case, s.target]), abs=1e-5)
        assert s.coalition_solve.solves == 16 and s.coalition_solve.converged


def test_interchangeable_modalities_get_equal_values(symmetric_toy):
    g = torch.Generator().manual_seed(5)
    same = torch.randn(2, 3, generator=g)
    inputs = (same, same.clone(), torch.randn(2, 2, generator=g))
    for s in modality_shapley(symmetric_toy, inputs, target=1):
        assert float(s.values[0]) == pytest.approx(float(s.values[1]), abs=1e-7)
        assert float(s.values[0]) != pytest.approx(float(s.values[2]), abs=1e-4)
        assert torch.allclose(s.interactions, s.interactions.T)
        assert torch.all(s.interactions.diagonal() == 0)
        assert float(s.interactions[0, 1]) != 0  # the toy's u * v term: left and right interact


def test_two_player_closed_form():
    v = torch.tensor([[0.1, 0.4, 0.3, 0.9]], dtype=torch.float64)  # v(), v(0), v(1), v(01)
    phi = v @ shapley_weights(2)
    first = 0.5 * (0.4 - 0.1) + 0.5 * (0.9 - 0.3)
    second = 0.5 * (0.3 - 0.1) + 0.5 * (0.9 - 0.4)
    assert phi[0].tolist() == pytest.approx([first, second])
    interaction = torch.einsum("bs,sij->bij", v, interaction_weights(2))[0]
    assert float(interaction[0, 1]) == pytest.approx(0.9 - 0.4 - 0.3 + 0.1)


def test_any_value_function_can_be_explained_from_its_coalition_values():
    # An AND of modalities 0 and 1 (modality 2 is a dummy): they split the credit and interact.
    v = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    s = ModalityShapley.from_coalition_values(v + 0.2, ("a", "b", "c"), ("no", "yes"), target=1)
    assert s.values.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert float(s.interactions[0, 1]) == pytest.approx(1.0) and float(s.interactions[0, 2]) == pytest.approx(0.0)
    assert (s.full_value, s.empty_value, s.without(2), s.without(0)) == pytest.approx((1.2, 0.2, 1.2, 0.2))
    assert s.ablation is None and s.coalition_solve is None and s.class_names[s.target] == "yes"
    with pytest.raises(ValueError, match="3 modalities need 8 coalition values"):
        ModalityShapley.from_coalition_values(v[:4], ("a", "b", "c"), ("no", "yes"), target=1)


def test_shapley_weights_match_the_permutation_definition():
    torch.manual_seed(0)
    m = 4
    v = torch.rand(2**m, dtype=torch.float64)
    by_permutation = torch.zeros(m, dtype=torch.float64)
    for order in itertools.permutations(range(m)):
        coalition = 0
        for i in order:
            by_permutation[i] += v[coalition | 1 << i] - v[coalition]
            coalition |= 1 << i
    by_permutation /= len(list(itertools.permutations(range(m))))
    torch.testing.assert_close(v @ shapley_weights(m), by_permutation)


def test_feature_ablation_agrees_with_the_coalitions_and_with_shapley_on_an_additive_game(additive_toy):
    g = torch.Generator().manual_seed(3)
    inputs = tuple(torch.randn(3, m.shape[0], generator=g) for m in additive_toy.config.modalities)
    for s in modality_shapley(additive_toy, inputs, target=1):
        assert s.ablation_max_abs_diff < 1e-9
        torch.testing.assert_close(s.values, s.ablation, atol=1e-6, rtol=0)  # additive: phi_i = v(N) - v(N \\ i)
        assert s.interactions.abs().max() < 1e-6


def test_feature_ablation_cross_check_on_a_deq_with_text(contractive_deq):
    (s,) = modality_shapley(contractive_deq, tiny_inputs(1))
    assert s.ablation is not None and s.ablation_max_abs_diff < 1e-5
    for i in range(4):
        assert float(s.ablation[i]) == pytest.approx(s.full_value - s.without(i), abs=1e-5)


def test_all_coalitions_of_all_cases_run_as_one_forward(symmetric_toy):
    symmetric_toy.forward_rows.clear()
    modality_shapley(symmetric_toy, tuple(torch.randn(5, m.shape[0]) for m in symmetric_toy.config.modalities),
                     cross_check=False)  # fmt: skip
    assert symmetric_toy.forward_rows == [5 * 2**3]


def test_coalition_inputs_keep_present_modalities_and_fill_absent_ones_with_the_training_mean(contractive_deq):
    inputs = tiny_inputs(2)
    rows = coalition_inputs(contractive_deq, inputs)
    masks = coalition_masks(4)
    means = contractive_deq.input_means()
    for case in range(2):
        for s in range(16):
            for i in range(4):
                got = rows[i][case * 16 + s]
                want = inputs[i][case] if masks[s, i] else means[i].to(inputs[i].dtype)
                assert torch.equal(got, want)
    assert torch.all(absent_input(contractive_deq, 2, inputs[2]) == 0)  # text: all padding
    assert absent_input(contractive_deq, 2, inputs[2]).dtype == torch.int64


def test_batched_cases_equal_cases_alone(contractive_deq):
    inputs = tiny_inputs(3)
    together = modality_shapley(contractive_deq, inputs, cross_check=False)
    alone = modality_shapley(contractive_deq, tuple(x[2:] for x in inputs), cross_check=False)
    torch.testing.assert_close(together[2].values, alone[0].values, atol=1e-6, rtol=0)


def test_to_dict_round_trips_through_json(contractive_deq):
    import json

    (s,) = modality_shapley(contractive_deq, tiny_inputs(1))
    data = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert set(data["values"]) == {"photo", "sensors", "note", "stats"}
    assert len(data["coalition_values"]) == 16 and len(data["interactions"]) == 4


@pytest.mark.parametrize("architecture", ["deq", "weight_tied", "early", "late"])
def test_coalitions_built_from_the_encoded_features_equal_those_from_the_inputs(architecture):
    """The batch audit encodes each case once and builds the coalitions and the cross-check from its
    features: the same values as encoding every coalition's inputs (within float rounding)."""
    from conftest import make_contractive, tiny_model

    model = tiny_model(architecture, seed=3).eval()
    if architecture in ("deq", "weight_tied"):
        make_contractive(model)
    inputs = tiny_inputs(4, seed=2)
    with torch.no_grad():
        features = model.encode(inputs)
    plain = modality_shapley(model, inputs)
    shared = modality_shapley(model, inputs, features=features)
    for a, b in zip(plain, shared):
        assert a.target == b.target
        assert torch.allclose(a.coalition_values, b.coalition_values, atol=1e-6, rtol=0)
        assert torch.allclose(a.ablation, b.ablation, atol=1e-6, rtol=0)
        assert b.ablation_max_abs_diff < 1e-6  # the cross-check still agrees with the coalitions
    # and the features are what the coalitions use: others give other values
    other = modality_shapley(model, inputs, features=features + 0.5)
    assert any(not torch.allclose(a.coalition_values, c.coalition_values, atol=1e-4) for a, c in zip(plain, other))
