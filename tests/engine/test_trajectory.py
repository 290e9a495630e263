import pytest
import torch

from deq_core import Trajectory, trace

from conftest import tiny_model


def test_trace_records_every_iteration_of_every_case(contractive_deq, inputs):
    output, trajectories = trace(contractive_deq, inputs)
    assert len(trajectories) == 6
    for i, t in enumerate(trajectories):
        steps = int(output.solve.iterations[i])
        assert t.states.shape == (steps, 5, 32)
        assert t.gates.shape == t.purified.shape == (steps, 4, 32)
        assert t.probabilities.shape == (steps, 3)
        assert torch.allclose(t.probabilities.sum(dim=1), torch.ones(steps))
        assert len(t.relative_residuals) == steps
        assert torch.allclose(t.purified, t.gates * t.states[:, 4:5])
        # The decision read at the returned iterate is the model's decision.
        assert torch.allclose(t.probabilities[t.best_iteration], torch.softmax(output.logits[i], dim=0), atol=1e-5)
        # The fused state starts at zero, so at iteration 0 no modality supports anything.
        assert torch.allclose(t.gate_share().sum(dim=1)[1:], torch.ones(steps - 1))
        assert t.gate_share()[0].sum() == 0
        assert t.state_change().shape == (steps - 1, 5)


def test_trace_of_the_weight_tied_model_follows_its_unroll(inputs):
    model = tiny_model("weight_tied", unroll_steps=5).eval()
    _, trajectories = trace(model, inputs)
    assert all(t.iterations == 5 for t in trajectories)


def test_models_without_an_equilibrium_cannot_be_traced(inputs):
    with pytest.raises(TypeError, match="no equilibrium"):
        trace(tiny_model("late").eval(), inputs)


def synthetic(predicted_sequence):
    steps = len(predicted_sequence)
    probabilities = torch.full((steps, 3), 0.1)
    for k, c in enumerate(predicted_sequence):
        probabilities[k, c] = 0.8
    zeros = torch.zeros(steps, 2, 4)
    return Trajectory(("a",), ("x", "y", "z"), torch.zeros(steps, 2, 4), zeros[:, :1], zeros[:, :1],
                      probabilities, torch.ones(steps), torch.ones(steps), "converged", steps - 1)  # fmt: skip


@pytest.mark.parametrize(
    "sequence, lock_in",
    [([2, 2, 2], 0), ([0, 1, 2, 2], 2), ([2, 0, 2, 2], 2), ([1, 1, 0], 2)],
)
def test_lock_in_is_the_first_iteration_after_which_the_decision_never_changes(sequence, lock_in):
    assert synthetic(sequence).lock_in_iteration == lock_in
