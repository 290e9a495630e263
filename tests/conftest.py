"""Shared fixtures: tiny models and cases built once per session."""

from __future__ import annotations

import pytest
import torch

from deq_core import Modality, ModelConfig, build_model
from deq_core.engine.text import build_vocabulary

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


@pytest.fixture(scope="session", autouse=True)
def _no_user_state(tmp_path_factory):
    """No test writes the user's deployment key, audit log or cache (tests that need their own set them)."""
    import os

    root = tmp_path_factory.mktemp("user-state")
    saved = {k: os.environ.get(k) for k in ("DEQ_LENS_KEY_DIR", "DEQ_LENS_CACHE", "DEQ_LENS_AUDIT_DB")}
    os.environ.setdefault("DEQ_LENS_KEY_DIR", str(root / "keys"))
    os.environ.setdefault("DEQ_LENS_CACHE", str(root / "cache"))
    os.environ.setdefault("DEQ_LENS_AUDIT_DB", f"sqlite:///{root / 'audit.sqlite'}")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def inputs():
    return tiny_inputs()


@pytest.fixture
def contractive_deq():
    model = tiny_model("deq")
    make_contractive(model)
    return model.eval()


# --- closed-form toys behind the FusionModel interface (explanation tests) -------------------

from deq_core import EncoderSettings, FusionModel, FusionOutput  # noqa: E402


class _ToyFusion(FusionModel):
    """``run`` computes logits in closed form from the raw inputs (no solve); ``forward_rows``
    records the batch size of every call."""

    def __init__(self, modalities, classes=("a", "b", "c")):
        super().__init__(
            ModelConfig("early", modalities, classes, width=8, groups=4, encoder=EncoderSettings(embedding_dim=4))
        )
        self.forward_rows: list[int] = []

    def run(self, inputs, record=False, solver=None, jacobian_probes=0):
        self.forward_rows.append(int(inputs[0].shape[0]))
        logits = self.logits(inputs)
        return FusionOutput(logits, None, None, logits)


class LinearToy(_ToyFusion):
    """logit_c = sum over float features w_c * x + sum over tokens embedding(token) . v_c.

    Linear in the raw float inputs and in the token embeddings (padding embeds to 0),
    so Integrated Gradients are exactly (x - baseline) * weight, per token
    (embedding(t) - embedding(baseline t)) . v_c.
    """

    def __init__(self, seed: int = 0):
        super().__init__(tiny_modalities())
        g = torch.Generator().manual_seed(seed)
        classes = len(self.config.class_names)
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(classes, *m.shape, generator=g))
            for m in self.config.modalities
            if m.kind != "text"
        )
        self.token_weight = torch.nn.Parameter(torch.randn(classes, 4, generator=g))
        self.fit_statistics(tiny_inputs(32, seed=99))

    def logits(self, inputs):
        weights = iter(self.weights)
        total = 0
        for m, encoder, x in zip(self.config.modalities, self.encoders, inputs):
            if m.kind == "text":
                total = total + encoder.embedding(x.long()).sum(dim=1) @ self.token_weight.T
            else:
                w = next(weights)
                total = total + x.flatten(1) @ w.flatten(1).T
        return total


def _vector_modalities(*names_and_sizes):
    return tuple(Modality(name, "vector", (size,)) for name, size in names_and_sizes)


class SymmetricToy(_ToyFusion):
    """Modalities ``left`` and ``right`` are interchangeable (the function is symmetric in them),
    with a nonlinear interaction; ``extra`` adds a third player."""

    def __init__(self):
        super().__init__(_vector_modalities(("left", 3), ("right", 3), ("extra", 2)), ("no", "yes"))
        g = torch.Generator().manual_seed(1)
        self.direction = torch.randn(3, generator=g)
        self.extra_weight = torch.randn(2, generator=g)
        statistics = torch.randn(32, 3, generator=g)
        self.fit_statistics((statistics, statistics.clone(), torch.randn(32, 2, generator=g)))

    def logits(self, inputs):
        left, right, extra = (x.float() for x in inputs)
        u, v = left @ self.direction, right @ self.direction
        yes = 2 * torch.tanh(u + v) + u * v + extra @ self.extra_weight
        return torch.stack([torch.zeros_like(yes), yes], dim=1)


class AdditiveToy(_ToyFusion):
    """p(yes) = 0.5 + sum_i 0.4/M tanh(w_i . x_i): the coalition value is additive in the modalities,
    so each Shapley value equals the drop when that modality alone is ablated."""

    def __init__(self):
        super().__init__(_vector_modalities(("a", 2), ("b", 3), ("c", 4)), ("no", "yes"))
        g = torch.Generator().manual_seed(2)
        self.directions = [torch.randn(m.shape[0], generator=g) for m in self.config.modalities]
        self.fit_statistics(tuple(torch.randn(32, m.shape[0], generator=g) for m in self.config.modalities))

    def logits(self, inputs):
        share = 0.4 / len(inputs)
        p = 0.5 + sum(share * torch.tanh(x.double() @ w.double()) for x, w in zip(inputs, self.directions))
        return torch.log(torch.stack([1 - p, p], dim=1))


@pytest.fixture
def linear_toy():
    return LinearToy().eval()


@pytest.fixture
def symmetric_toy():
    return SymmetricToy().eval()


@pytest.fixture
def additive_toy():
    return AdditiveToy().eval()


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from threads; on a shared CPU, two threads per test run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
