"""Integrated Gradients over all modalities: closed forms, completeness, gradients, batching."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from captum.attr import IntegratedGradients
from conftest import tiny_inputs, tiny_modalities

from deq_core.explain.attribution import (
    BASELINES,
    _Call,
    baseline_inputs,
    captum_alphas,
    check_path_rows,
    convergence_delta,
    gaussian_blur,
    integrated_gradients,
    resolve_baselines,
    top_features,
)
from deq_core.engine.config import SolverSettings

pytestmark = pytest.mark.usefixtures("single_thread")


def _expected_linear(model, inputs, baselines, case, target):
    """(x - b) * w per float modality; (e(t) - e(b_t)) . v per token."""
    weights = iter(model.weights)
    expected = []
    for i, m in enumerate(model.config.modalities):
        if m.kind == "text":
            embedding = model.encoders[i].embedding
            difference = embedding(inputs[i][case]) - embedding(baselines[i][case].long())
            expected.append((difference @ model.token_weight[target]).detach())
        else:
            expected.append(((inputs[i][case] - baselines[i][case]) * next(weights)[target]).detach())
    return expected


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
def test_ig_of_a_linear_model_is_input_minus_baseline_times_weight(linear_toy, baseline):
    inputs = tiny_inputs(3)
    attributions = integrated_gradients(linear_toy, inputs, target=[0, 2, 1], baseline=baseline, n_steps=8)
    baselines = baseline_inputs(linear_toy, inputs, baseline)
    for case, attribution in enumerate(attributions):
        expected = _expected_linear(linear_toy, inputs, baselines, case, attribution.target)
        for got, want, m in zip(attribution.maps, expected, linear_toy.config.modalities):
            assert got.shape == m.shape
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert abs(attribution.convergence_delta) < 1e-4
        assert attribution.complete
        assert sum(attribution.totals) == pytest.approx(attribution.output_change, abs=1e-4)


def test_text_modality_is_attributed_per_token_and_padding_gets_nothing(linear_toy):
    inputs = list(tiny_inputs(1))
    inputs[2] = torch.tensor([[3, 5, 2, 0, 0, 0]])
    (attribution,) = integrated_gradients(linear_toy, inputs, target=1)
    scores = attribution.map_of("note")
    assert scores.shape == (6,)
    assert torch.all(scores[3:] == 0) and torch.all(scores[:3] != 0)
    vocabulary = tiny_modalities()[2].vocabulary
    assert attribution.tokens[2] == tuple(vocabulary[t] for t in [3, 5, 2, 0, 0, 0])
    names = [f.name for f in top_features(attribution, "note", k=10)]
    assert len(names) == 3 and all("<pad>" not in n for n in names)


def test_gradients_reach_every_modality_of_a_deq_in_eval_mode(contractive_deq):
    assert not contractive_deq.training
    (attribution,) = integrated_gradients(contractive_deq, tiny_inputs(1), n_steps=8)
    for m, scores in zip(contractive_deq.config.modalities, attribution.maps):
        assert torch.isfinite(scores).all()
        assert scores.abs().sum() > 0, f"no attribution reached {m.name}"
    assert attribution.map_of("note").shape == (6,)


def test_path_ends_are_the_models_own_outputs_for_every_modality(contractive_deq):
    """Text is integrated in embedding space: its path must still start at F(raw baseline) and
    end at F(raw input), or completeness could not hold for all modalities jointly."""
    inputs = tiny_inputs(3)
    for method in ("adaptive", "gausslegendre"):
        attributions = integrated_gradients(contractive_deq, inputs, n_steps=8, method=method)
        targets = torch.tensor([a.target for a in attributions])
        with torch.no_grad():
            at_input = contractive_deq(*inputs).gather(1, targets[:, None])[:, 0]
            at_baseline = contractive_deq(*baseline_inputs(contractive_deq, inputs)).gather(1, targets[:, None])[:, 0]
        for case, a in enumerate(attributions):
            assert a.value_at_input == pytest.approx(float(at_input[case]), abs=1e-5)
            assert a.value_at_baseline == pytest.approx(float(at_baseline[case]), abs=1e-5)
            assert a.convergence_delta == pytest.approx(sum(a.totals) - a.output_change, abs=1e-5)
            assert a.path_values[0] == pytest.approx(a.value_at_baseline) and a.path_alphas[0] == 0
            assert a.path_values[-1] == pytest.approx(a.value_at_input) and a.path_alphas[-1] == 1


def test_completeness_gap_shrinks_with_more_steps_on_a_deq(contractive_deq):
    inputs = tiny_inputs(4)
    gap = {}
    for n_steps in (4, 64):
        attributions = integrated_gradients(contractive_deq, inputs, n_steps=n_steps)
        gap[n_steps] = sum(abs(a.convergence_delta) for a in attributions)
        changes = sum(abs(a.output_change) for a in attributions)
    assert gap[64] < gap[4] / 3
    assert gap[64] < 0.03 * changes


@pytest.mark.parametrize("method", ["adaptive", "gausslegendre"])
def test_attributions_do_not_depend_on_internal_batch_size_or_batch_mates(contractive_deq, method):
    inputs = tiny_inputs(2)
    one = integrated_gradients(contractive_deq, inputs, n_steps=8, method=method, internal_batch_size=1)
    many = integrated_gradients(contractive_deq, inputs, n_steps=8, method=method, internal_batch_size=64)
    alone = integrated_gradients(contractive_deq, tuple(x[1:] for x in inputs), n_steps=8, method=method)
    for a, b in zip(one, many):
        assert (a.flat() - b.flat()).abs().max() <= 1e-5
        assert a.path_solve.solves == b.path_solve.solves
    assert (alone[0].flat() - many[1].flat()).abs().max() <= 1e-5


def test_solve_summaries_cover_input_baseline_and_path(contractive_deq):
    (a,) = integrated_gradients(contractive_deq, tiny_inputs(1), n_steps=8, method="gausslegendre")
    assert a.input_solve.solves == 1 and a.baseline_solve.solves == 1 and a.path_solve.solves == 8
    assert a.solves_converged and a.path_solve.relative_residual <= contractive_deq.config.solver.tol
    (adaptive,) = integrated_gradients(contractive_deq, tiny_inputs(1), n_steps=8)
    assert adaptive.path_solve.solves == 8 + 3  # gradient points and the grid's inner points

    starved = SolverSettings(max_iter=2, tol=1e-8)
    (b,) = integrated_gradients(contractive_deq, tiny_inputs(1), n_steps=8, solver=starved)
    assert not b.solves_converged
    assert b.path_solve.unconverged == b.path_solve.solves == 11 and b.path_solve.status == "max_iter"


def test_feed_forward_models_have_no_solves():
    from conftest import tiny_model

    model = tiny_model("early").eval()
    (a,) = integrated_gradients(model, tiny_inputs(1), n_steps=8)
    assert a.input_solve is None and a.path_solve is None and a.solves_converged


def test_train_mode_is_restored_and_dropout_does_not_leak_in():
    from conftest import tiny_model

    model = tiny_model("early", encoder=__import__("deq_core").EncoderSettings(dropout=0.5))
    assert model.training
    first = integrated_gradients(model, tiny_inputs(1), n_steps=8)[0].flat()
    second = integrated_gradients(model, tiny_inputs(1), n_steps=8)[0].flat()
    assert model.training
    assert torch.equal(first, second)


def test_probability_output_attributes_the_softmax(linear_toy):
    inputs = tiny_inputs(1)
    (a,) = integrated_gradients(linear_toy, inputs, target=2, output="probability", n_steps=64)
    with torch.no_grad():
        probability = float(torch.softmax(linear_toy(*inputs), 1)[0, 2])
    assert a.value_at_input == pytest.approx(probability, abs=1e-6)
    assert a.relative_delta < 0.01


def test_baselines_resolve_by_kind_and_reject_misfits():
    modalities = tiny_modalities()
    assert resolve_baselines(modalities) == ("zero", "zero", "padding", "zero")
    assert resolve_baselines(modalities, "mean") == ("mean", "mean", "mean", "mean")
    assert resolve_baselines(modalities, "blur") == ("blur", "blur", "padding", "zero")
    assert resolve_baselines(modalities, {"photo": "mean"}) == ("mean", "zero", "padding", "zero")
    with pytest.raises(ValueError, match="does not apply"):
        resolve_baselines(modalities, {"note": "blur"})
    with pytest.raises(ValueError, match="unknown modalities"):
        resolve_baselines(modalities, {"nope": "zero"})
    with pytest.raises(ValueError, match="unknown baseline"):
        resolve_baselines(modalities, "sunset")
    assert set(BASELINES) >= {"zero", "mean", "blur", "padding"}


def test_baseline_inputs(linear_toy):
    inputs = tiny_inputs(2)
    mean = baseline_inputs(linear_toy, inputs, "mean")
    for b, m in zip(mean, linear_toy.input_means()):
        assert torch.equal(b, m.to(b.dtype).expand_as(b))
    assert mean[2].dtype == torch.int64 and torch.all(mean[2] == 0)  # text: all padding
    blurred = baseline_inputs(linear_toy, inputs, "blur")[0]
    assert blurred.shape == inputs[0].shape
    assert blurred.std() < inputs[0].std()  # detail removed
    assert blurred.mean() == pytest.approx(float(inputs[0].mean()), abs=0.05)
    constant = torch.full((1, 2, 9, 9), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)


def test_top_features_are_sorted_by_magnitude_and_named(linear_toy):
    (a,) = integrated_gradients(linear_toy, tiny_inputs(1), target=0, baseline="zero", n_steps=4)
    top = top_features(a, "sensors", k=5)
    magnitudes = [abs(f.score) for f in top]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert magnitudes[0] == pytest.approx(float(a.map_of("sensors").abs().max()))
    assert top[0].name.startswith("channel ") and "@ step" in top[0].name
    assert top_features(a, "photo", k=1)[0].name.startswith("pixel (row")
    with pytest.raises(KeyError):
        top_features(a, "nope")


def test_attribution_to_dict_has_maps_in_each_modality_shape(contractive_deq):
    import json

    (a,) = integrated_gradients(contractive_deq, tiny_inputs(1), n_steps=4)
    data = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert len(data["maps"]["photo"]) == 1 and len(data["maps"]["photo"][0]) == 12
    assert len(data["maps"]["note"]) == 6 and len(data["tokens"]["note"]) == 6
    assert data["path_solve"]["solves"] == 4 + 1


# --- the Captum internal captum_alphas reads, and the layout check_path_rows verifies ------------

GAUSS_LEGENDRE_4 = ((-0.8611363115940526, 0.3478548451374538), (-0.3399810435848563, 0.6521451548625461),
                    (0.3399810435848563, 0.6521451548625461), (0.8611363115940526, 0.3478548451374538))  # fmt: skip
KNOWN_RULES = {  # method: (alphas, step sizes) for 4 steps, as captum 0.9.0 defines them
    "riemann_left": ((0, 0.25, 0.5, 0.75), (0.25,) * 4),
    "riemann_right": ((0.25, 0.5, 0.75, 1), (0.25,) * 4),
    "riemann_middle": ((0.125, 0.375, 0.625, 0.875), (0.25,) * 4),
    # Captum's trapezoid: nodes linspace(0, 1, n), weights 1/n with both ends halved (they sum to 1 - 1/n)
    "riemann_trapezoid": ((0, 1 / 3, 2 / 3, 1), (0.125, 0.25, 0.25, 0.125)),
    "gausslegendre": (tuple((1 + x) / 2 for x, _ in GAUSS_LEGENDRE_4), tuple(w / 2 for _, w in GAUSS_LEGENDRE_4)),
}


def test_captums_internal_rule_table_is_the_one_captum_alphas_was_written_for():
    """An upgrade that moves, renames or changes Captum's rule table must fail here, not shift path values."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    assert list(inspect.signature(approximation_parameters).parameters) == ["method"]
    for method, (alphas, step_sizes) in KNOWN_RULES.items():
        step_sizes_of, alphas_of = approximation_parameters(method)
        # 1e-6: some rules are computed in float32; a changed rule moves points by far more.
        assert [float(a) for a in alphas_of(4)] == pytest.approx(alphas, abs=1e-6), method
        assert [float(w) for w in step_sizes_of(4)] == pytest.approx(step_sizes, abs=1e-6), method
        assert captum_alphas(method, 4) == tuple(float(a) for a in alphas_of(4))
        assert all(type(a) is float for a in captum_alphas(method, 4))


class _Recorder:
    """A forward function that keeps its calls the way PathForward does."""

    def __init__(self, weight: torch.Tensor):
        self.weight, self.calls = weight, []

    def __call__(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(x.flatten(1) @ self.weight) + v @ self.weight[: v.shape[1]]
        self.calls.append(_Call(torch.is_grad_enabled(), (x.detach(), v.detach()), None, out.detach()))
        return out


@pytest.mark.parametrize("method", sorted(KNOWN_RULES))
@pytest.mark.parametrize("internal_batch_size", [None, 3, 7])
def test_captum_evaluates_the_points_captum_alphas_names_node_after_node(method, internal_batch_size):
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(3, 2, 4, generator=g), torch.randn(3, 5, generator=g))
    baselines = (torch.randn(3, 2, 4, generator=g), torch.zeros(3, 5))
    forward = _Recorder(torch.randn(8, 4, generator=g))
    IntegratedGradients(forward).attribute(
        inputs, baselines=baselines, target=[0, 1, 3], n_steps=5, method=method, internal_batch_size=internal_batch_size
    )
    alphas = captum_alphas(method, 5)
    check_path_rows(forward.calls, inputs, baselines, alphas)  # passes: Captum's layout is the expected one
    with pytest.raises(RuntimeError, match="incompatible Captum"):
        check_path_rows(forward.calls, inputs, baselines, alphas[::-1])
    case_major = [_Call(True, tuple(t.reshape(5, 3, *t.shape[1:]).transpose(0, 1).reshape(t.shape) for t in
                                    (torch.cat([c.path_inputs[i] for c in forward.calls]) for i in range(2))), None,
                        torch.zeros(0))]  # fmt: skip
    with pytest.raises(RuntimeError, match="incompatible Captum"):
        check_path_rows(case_major, inputs, baselines, alphas)
    with pytest.raises(RuntimeError, match="with gradients"):
        no_gradients = [_Call(False, c.path_inputs, None, c.outputs) for c in forward.calls]
        check_path_rows(no_gradients, inputs, baselines, alphas)


def test_convergence_delta_is_captums_own_to_the_bit():
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(4, 2, 4, generator=g), torch.randn(4, 5, generator=g))
    baselines = (torch.randn(4, 2, 4, generator=g), torch.zeros(4, 5))
    forward = _Recorder(torch.randn(8, 4, generator=g))
    targets = torch.tensor([0, 1, 3, 2])
    ig = IntegratedGradients(forward)
    attributions, delta = ig.attribute(
        inputs, baselines=baselines, target=targets.tolist(), n_steps=6, return_convergence_delta=True
    )
    with torch.no_grad():
        at_input, at_baseline = forward(*inputs), forward(*baselines)
    ours = convergence_delta(attributions, at_input, at_baseline, targets)
    assert ours.dtype == torch.float64 and torch.equal(ours, delta.double())
    assert not math.isclose(float(ours.abs().max()), 0.0)  # a real gap, so equality says something
