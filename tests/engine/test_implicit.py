import pytest
import torch

from deq_core import (
    BackwardSettings,
    attach_implicit_gradient,
    attach_phantom_gradient,
    exact_jacobian,
    jacobian_frobenius_estimate,
    solve,
    spectral_radius,
)

from conftest import tiny_inputs


class ToyEquilibrium(torch.nn.Module):
    """z = tanh(W z + U x + c): contractive for ||W|| < 1, known gradients by unrolling."""

    def __init__(self, n=6, m=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.W = torch.nn.Parameter(0.7 * W / torch.linalg.matrix_norm(W, ord=2))
        self.U = torch.nn.Parameter(torch.randn(n, m, generator=g, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64) * 0.1)

    def f(self, x):
        return lambda z: torch.tanh(z @ self.W.T + x @ self.U.T + self.c)


def loss_of(z, weights):
    return (z * weights).sum() + 0.5 * (z**2).sum()


def problem(batch=3):
    g = torch.Generator().manual_seed(5)
    toy = ToyEquilibrium()
    x = torch.randn(batch, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(batch, 6, generator=g, dtype=torch.float64)
    return toy, x, weights


def implicit_gradients(toy, x, weights):
    f = toy.f(x)
    with torch.no_grad():
        z_star = solve(f, torch.zeros(x.shape[0], 6, dtype=torch.float64), tol=1e-13, max_iter=200).z
    z = attach_implicit_gradient(f, z_star, BackwardSettings(tol=1e-13, max_iter=200))
    return torch.autograd.grad(loss_of(z, weights), [x, toy.W, toy.U, toy.c])


def unrolled_gradients(toy, x, weights, steps=200):
    f = toy.f(x)
    z = torch.zeros(x.shape[0], 6, dtype=torch.float64)
    for _ in range(steps):
        z = f(z)
    return torch.autograd.grad(loss_of(z, weights), [x, toy.W, toy.U, toy.c])


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


def test_implicit_gradient_matches_long_unroll():
    toy, x, weights = problem()
    for ours, reference in zip(implicit_gradients(toy, x, weights), unrolled_gradients(toy, x, weights)):
        assert relative_error(ours, reference) <= 1e-4


def test_implicit_gradient_matches_finite_differences():
    toy, x, weights = problem(batch=1)
    (grad_x, *_) = implicit_gradients(toy, x, weights)

    def value(x_value):
        with torch.no_grad():
            z = solve(toy.f(x_value), torch.zeros(1, 6, dtype=torch.float64), tol=1e-14, max_iter=300).z
            return float(loss_of(toy.f(x_value)(z), weights))

    eps = 1e-6
    numeric = torch.zeros_like(x)
    for j in range(x.shape[1]):
        step = torch.zeros_like(x)
        step[0, j] = eps
        numeric[0, j] = (value(x.detach() + step) - value(x.detach() - step)) / (2 * eps)
    assert relative_error(grad_x, numeric) <= 1e-4


def test_phantom_gradient_approaches_the_implicit_one():
    toy, x, weights = problem()
    reference = implicit_gradients(toy, x, weights)[0]
    f = toy.f(x)
    with torch.no_grad():
        z_star = solve(f, torch.zeros(3, 6, dtype=torch.float64), tol=1e-13, max_iter=200).z
    errors = []
    for steps in (1, 3, 10, 40):
        z = attach_phantom_gradient(f, z_star, steps=steps)
        (grad_x,) = torch.autograd.grad(loss_of(z, weights), [x])
        errors.append(relative_error(grad_x, reference))
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 1e-2 and errors[-1] < 1e-5


def test_gradients_reach_every_modality_in_eval_mode(contractive_deq):
    inputs = [x.clone() for x in tiny_inputs(3)]
    for x in inputs:
        if x.is_floating_point():
            x.requires_grad_()
    logits = contractive_deq(*inputs)
    logits[:, 1].sum().backward()
    assert not contractive_deq.training
    for x in inputs:
        if x.is_floating_point():
            assert x.grad is not None and x.grad.abs().sum() > 0
    embedding = contractive_deq.encoders[2].embedding.weight
    assert embedding.grad is not None and embedding.grad.abs().sum() > 0


def test_model_gradient_matches_finite_differences_through_the_equilibrium(contractive_deq):
    model = contractive_deq.double()
    inputs = [x.double() if x.is_floating_point() else x for x in tiny_inputs(2)]
    vector = inputs[3].clone().requires_grad_()
    settings = model.config.solver.__class__(tol=1e-12, max_iter=200, backward=BackwardSettings(tol=1e-12, max_iter=200))
    out = model.run([*inputs[:3], vector], solver=settings).logits[:, 0].sum()
    (grad,) = torch.autograd.grad(out, vector)
    eps = 1e-6
    numeric = torch.zeros_like(vector)
    with torch.no_grad():
        for i in range(vector.shape[0]):
            for j in range(vector.shape[1]):
                step = torch.zeros_like(vector)
                step[i, j] = eps
                plus = model.run([*inputs[:3], vector + step], solver=settings).logits[:, 0].sum()
                minus = model.run([*inputs[:3], vector - step], solver=settings).logits[:, 0].sum()
                numeric[i, j] = (plus - minus) / (2 * eps)
    assert relative_error(grad, numeric) <= 1e-4


def test_jacobian_penalty_estimates_the_frobenius_norm():
    toy, x, _ = problem(batch=1)
    f = toy.f(x.detach())
    with torch.no_grad():
        z_star = solve(f, torch.zeros(1, 6, dtype=torch.float64), tol=1e-12).z
    exact = exact_jacobian(f, z_star)
    target = float(exact.pow(2).sum() / 6)
    z_in = z_star.clone().requires_grad_()
    generator = torch.Generator().manual_seed(0)
    estimate = jacobian_frobenius_estimate(f(z_in), z_in, probes=4000, generator=generator)
    assert abs(float(estimate.detach()) - target) <= 0.05 * target
    assert estimate.requires_grad  # usable as a loss term


def test_exact_jacobian_and_spectral_radius_of_a_linear_map():
    A = torch.tensor([[0.5, 0.2], [0.0, -0.3]], dtype=torch.float64)
    f = lambda z: z @ A.T  # noqa: E731
    J = exact_jacobian(f, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.allclose(J, A)
    assert spectral_radius(J) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one sample"):
        exact_jacobian(f, torch.zeros(2, 2))


def test_implicit_gradient_leaves_no_graph_behind_after_the_backward():
    """The adjoint hook lives on the output's graph; referring back to it would keep every step's graph alive."""
    import gc
    import weakref

    toy, x, weights = problem()
    f = toy.f(x)
    with torch.no_grad():
        z_star = solve(f, torch.zeros(x.shape[0], 6, dtype=torch.float64), tol=1e-12, max_iter=200).z
    z = attach_implicit_gradient(f, z_star)
    alive = weakref.ref(z)
    loss_of(z, weights).backward()
    assert x.grad is not None
    del z
    gc.collect()
    assert alive() is None
