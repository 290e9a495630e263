"""Conformance check for a model behind the lens: ``check_adapter(model)``.

Run it on your adapter (``Lens.open(folder, trust_code=True).model``) before you trust
what the lens shows about it: each check is something the lens's views rely on, and a
failing one is named with what was measured.

    from deq_core.testing import check_adapter
    report = check_adapter(lens.model)
    assert report.ok, report.problems
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deq_core.engine.protocol import is_equilibrium, missing_members


@dataclass(frozen=True)
class AdapterCheck:
    """What ``check_adapter`` found: ``ok`` when ``problems`` is empty; ``checked`` names each check made."""

    problems: tuple[str, ...]
    checked: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def sample_inputs(model, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs in each modality's shape (token ids below the vocabulary for text)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for m in model.config.modalities:
        if m.kind == "text":
            inputs.append(torch.randint(2, max(len(m.vocabulary), 3), (batch, *m.shape), generator=generator))
        else:
            inputs.append(torch.randn((batch, *m.shape), generator=generator))
    return tuple(x.to(model.device) for x in inputs)


def check_adapter(model, inputs: tuple[torch.Tensor, ...] | None = None, atol: float = 1e-4) -> AdapterCheck:
    """Check that ``model`` behaves as the lens assumes.

    Shapes (features ``(b, N, d)``, f keeps ``(b, N+1, d)``, logits ``(b, C)``),
    determinism (two runs agree), batch invariance (a case decided alone as in a batch),
    gradients reach every input in eval mode (IG needs them), and the state layout matches
    f (the fused row N is what the head reads: the logits equal ``head(f(z*)[:, N])``).
    """
    problems: list[str] = []
    checked: list[str] = []
    notes: list[str] = []
    missing = missing_members(model)
    if missing:
        return AdapterCheck((f"lacks {', '.join(missing)} (deq_core.engine.protocol.LensModel)",), ("members",))
    checked.append("members")
    model.eval()
    inputs = sample_inputs(model) if inputs is None else inputs
    n, classes = model.n_modalities, len(model.config.class_names)
    batch = inputs[0].shape[0]
    with torch.no_grad():
        features = model.encode(inputs)
        first, second = model.run(inputs), model.run(inputs)
        alone = model.run(tuple(x[:1] for x in inputs))
    if features.ndim != 3 or features.shape[:2] != (batch, n):
        problems.append(f"encode gives {tuple(features.shape)}, expected (batch={batch}, N={n}, d)")
    if tuple(first.logits.shape) != (batch, classes):
        problems.append(f"logits {tuple(first.logits.shape)}, expected ({batch}, {classes})")
    checked.append("shapes")
    if not torch.allclose(first.logits, second.logits, atol=atol):
        problems.append(f"two runs differ by {float((first.logits - second.logits).abs().max()):.3g} (not deterministic)")
    checked.append("determinism")
    if not torch.allclose(alone.logits, first.logits[:1], atol=atol):
        problems.append(f"a case alone and in a batch differ by {float((alone.logits - first.logits[:1]).abs().max()):.3g}")
    checked.append("batch invariance")
    problems += _gradient_problems(model, inputs)
    checked.append("gradients reach every input in eval mode")
    if is_equilibrium(model) and model.config.architecture == "deq":
        problems += _layout_problems(model, inputs, first, atol)
        checked.append("state layout matches f")
        if not getattr(model, "has_gates", True):
            notes.append("no gates: the gate view says 'not provided by this adapter'")
    else:
        notes.append("no fixed point (not a 'deq'): the state layout is not checked against f")
    return AdapterCheck(tuple(problems), tuple(checked), tuple(notes))


def _gradient_problems(model, inputs) -> list[str]:
    """Every non-text input gets a non-zero, finite gradient; text modalities through their embedding."""
    problems = []
    float_inputs = [x.detach().float().requires_grad_() if m.kind != "text" else x
                    for m, x in zip(model.config.modalities, inputs)]  # fmt: skip
    with torch.enable_grad():
        logits = model.run(tuple(float_inputs)).logits
        logits.sum().backward()
    for m, x in zip(model.config.modalities, float_inputs):
        if m.kind == "text":
            continue
        if x.grad is None or not torch.isfinite(x.grad).all() or float(x.grad.abs().sum()) == 0.0:
            problems.append(f"no gradient reaches modality {m.name!r} in eval mode")
    return problems


def _layout_problems(model, inputs, output, atol: float) -> list[str]:
    """f keeps the state's shape, the solve's z* is (near) a fixed point, and the head reads row N of f(z*)."""
    problems = []
    n = model.n_modalities
    with torch.no_grad():
        f, z0 = model.bind(inputs)
        z_star = output.solve.z
        image = f(z_star)
        if tuple(z0.shape[:2]) != (inputs[0].shape[0], n + 1):
            problems.append(f"the start state is {tuple(z0.shape)}, expected (batch, N+1={n + 1}, d)")
        if image.shape != z_star.shape:
            problems.append(f"f maps {tuple(z_star.shape)} to {tuple(image.shape)}: it must keep the state's shape")
            return problems
        logits = model.head(image[:, n])
    if not torch.allclose(logits, output.logits, atol=atol):
        problems.append(f"the logits are not head(f(z*)[:, N]) (they differ by {float((logits - output.logits).abs().max()):.3g}): "
                        "row N is not the fused state")  # fmt: skip
    problems += _slice_problems(model, inputs, z_star)
    residual = float((image - z_star).norm() / z_star.norm().clamp_min(1e-12))
    if residual > 1e-2:
        problems.append(f"the solve's z* is no fixed point of f (relative residual {residual:.3g})")
    return problems


@torch.no_grad()
def _slice_problems(model, inputs, z: torch.Tensor) -> list[str]:
    """Row i of f answers modality i's features most: changing feature row i at fixed z moves state row i
    more than any other modality's row (the per-modality slices are where the views say they are)."""
    problems = []
    n = model.n_modalities
    features = model.encode(inputs)
    f, _ = model.bind(inputs, features)
    base = f(z)
    generator = torch.Generator().manual_seed(1)
    for i in range(n):
        moved = features.clone()
        moved[:, i] += torch.randn(moved[:, i].shape, generator=generator).to(moved) * (features[:, i].std() + 1.0)
        g, _ = model.bind(inputs, moved)
        change = (g(z) - base)[:, :n].norm(dim=2).sum(0)  # (N,) per modality row
        if int(change.argmax()) != i or float(change[i]) == 0.0:
            name = model.config.modalities[i].name
            problems.append(f"changing {name!r}'s features moves state rows {[round(float(c), 4) for c in change]}: "
                            f"row {i} should move most (rows 0..N-1 are the modalities in config order)")  # fmt: skip
    return problems
