"""Shared fixtures: tiny models and cases built once per session."""

from __future__ import annotations

import pytest
import torch

from deq_core import Modality, ModelConfig, build_model
from deq_core.text import build_vocabulary

NOTES = ["bearing noise heard", "surface scratch near edge", "all fine", "hot motor smell", "crack at the rim"]


def tiny_modalities() -> tuple[Modality, ...]:
    return (
        Modality("photo", "image", (1, 12, 12)),
        Modality("sensors", "timeseries", (2, 16)),
        Modality("note", "text", (6,), vocabulary=build_vocabulary(NOTES)),
        Modality("stats", "vector", (5,)),
    )


def tiny_inputs(batch: int = 6, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    vocab = len(tiny_modalities()[2].vocabulary)
    return (
        torch.rand(batch, 1, 12, 12, generator=g),
        torch.randn(batch, 2, 16, generator=g),
        torch.randint(1, vocab, (batch, 6), generator=g),
        torch.randn(batch, 5, generator=g),
    )


def tiny_model(architecture: str = "deq", seed: int = 0, **config):
    torch.manual_seed(seed)
    settings = {"width": 32, "groups": 4, "unroll_steps": 6, **config}
    model = build_model(ModelConfig(architecture, tiny_modalities(), ("a", "b", "c"), **settings))
    model.fit_statistics(tiny_inputs(32, seed=99))
    return model


def make_contractive(model) -> None:
    """Let the injected inputs dominate every GroupNorm so f contracts strongly (a known-convergent toy).

    GroupNorm is scale-invariant, so shrinking z's own path only helps where a
    term it is added to (x_i, x_fuse, u_i) keeps its size.
    """
    with torch.no_grad():
        model.update.branch_out.mul_(0.1)
        model.update.fuse.weight.mul_(0.1)
        model.update.gate.weight.mul_(0.1)
        model.update.norm3_weight.fill_(0.2)
        model.update.fuse_norm_weight.fill_(0.2)


@pytest.fixture
def inputs():
    return tiny_inputs()


@pytest.fixture
def contractive_deq():
    model = tiny_model("deq")
    make_contractive(model)
    return model.eval()
