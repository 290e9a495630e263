"""Gradients through a fixed point: implicit differentiation, phantom gradients,
Jacobian regularisation and exact-Jacobian diagnostics.

All functions take ``f`` with its injection already bound, ``f(z) -> z`` on
``(batch, *state)``, and a fixed point ``z_star`` found without gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from deq_core.engine.solvers import solve

Function = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BackwardSettings:
    """How the adjoint fixed point y = J^T y + g is solved in the backward pass."""

    method: str = "anderson"
    tol: float = 1e-6
    max_iter: int = 56
    stop_mode: str = "rel"


def attach_implicit_gradient(
    f: Function, z_star: torch.Tensor, settings: BackwardSettings = BackwardSettings()
) -> torch.Tensor:
    """Return f(z*) with a gradient path to f's parameters and inputs.

    Forward: one f evaluation at the (detached) fixed point. Backward: the
    incoming gradient g is replaced by the solution y of y = J_f(z*)^T y + g, so
    the gradient equals the one through the infinitely unrolled solve
    (implicit function theorem), at the memory cost of a single f evaluation.
    Works in train and eval mode alike, whenever autograd is enabled.
    """
    fixed_point = z_star.detach()
    z_out = f(fixed_point.detach().requires_grad_())
    if not z_out.requires_grad:
        return z_out

    # The hook must not refer to z_out or its graph: it is stored on that graph, and the
    # cycle would run through autograd's C++ nodes, which Python's garbage collector
    # cannot see, so every step's graph with all its saved tensors would stay in memory
    # (a 4-fold inspection run of benchmarks/cv.py grew by hundreds of MB per fold).
    # The products J^T y come from a second evaluation of f at z*, made inside the backward.
    def adjoint(grad: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z_in = fixed_point.detach().requires_grad_()
            image = f(z_in)

            def vjp_plus_grad(y: torch.Tensor) -> torch.Tensor:
                (jty,) = torch.autograd.grad(image, z_in, y, retain_graph=True)
                return jty + grad

            result = solve(
                vjp_plus_grad,
                torch.zeros_like(grad),
                method=settings.method,
                tol=settings.tol,
                max_iter=settings.max_iter,
                stop_mode=settings.stop_mode,
            )
        return result.z.detach()

    z_out.register_hook(adjoint)
    return z_out


def attach_phantom_gradient(f: Function, z_star: torch.Tensor, steps: int = 5, damping: float = 1.0) -> torch.Tensor:
    """k-step phantom gradient: unroll ``steps`` damped f steps from the detached z*.

    The gradient is the truncated Neumann series sum_{j<k} J^j of the implicit
    one; it approaches the implicit gradient as k grows for a contractive f.
    """
    z = z_star.detach()
    for _ in range(steps):
        z = (1 - damping) * z + damping * f(z)
    return z


def jacobian_frobenius_estimate(
    z_out: torch.Tensor, z_in: torch.Tensor, probes: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hutchinson estimate of ||J_f(z*)||_F^2 / dim, differentiable (for the loss).

    ``z_out = f(z_in)`` must have been computed with ``z_in`` requiring grad.
    E_v ||v^T J||^2 = ||J||_F^2 for v ~ N(0, I); the mean over the batch is returned.
    """
    batch = z_in.shape[0]
    dim = z_in[0].numel()
    total = z_out.new_zeros(())
    for _ in range(probes):
        v = torch.randn(z_out.shape, generator=generator, dtype=z_out.dtype, device=z_out.device)
        (vjp,) = torch.autograd.grad(z_out, z_in, v, retain_graph=True, create_graph=True)
        total = total + vjp.pow(2).sum() / batch
    return total / (probes * dim)


def exact_jacobian(f: Function, z_star: torch.Tensor) -> torch.Tensor:
    """``(dim, dim)`` Jacobian of f at one sample's fixed point ``z_star: (1, *state)``."""
    if z_star.shape[0] != 1:
        raise ValueError("exact_jacobian takes one sample, z_star of shape (1, *state)")
    shape = z_star.shape

    def flat_f(z: torch.Tensor) -> torch.Tensor:
        return f(z.reshape(shape)).reshape(-1)

    return torch.autograd.functional.jacobian(flat_f, z_star.detach().reshape(-1))


def spectral_radius(jacobian: torch.Tensor) -> float:
    """Largest eigenvalue modulus; below 1 means f is locally contractive at z*."""
    return float(torch.linalg.eigvals(jacobian.double()).abs().max())
