"""A DEQ fusion model for the inspection data, trained with torchdeq (``get_deq``).

This is "your own model": nothing here imports ``deq_core`` except the adapter factory
``build``, which reads the modalities from the ``ModelConfig`` the lens hands it.
Training solves with torchdeq's own solver and implicit gradient (``forward``); the lens
calls ``encode``, ``f`` and ``head`` (and ``gates`` for its gate view) and solves f itself.

State layout: ``z`` is ``(b, N + 1, d)``; rows 0..N-1 the per-modality states in config
order, row N the fused state the head reads.
"""

from __future__ import annotations

import torch
from torch import nn
from torchdeq import get_deq


class TorchDEQFusion(nn.Module):
    """Per-modality encoders, a purify-then-combine update f, and a linear head on the fused row.

    Args:
        kinds: each modality's kind ("image", "timeseries", "text"), in order.
        shapes: each modality's input shape.
        vocabulary: the text modalities' vocabulary size.
        classes: number of classes.
        width: the state width d.
    """

    def __init__(self, kinds: list[str], shapes: list[tuple[int, ...]], vocabulary: int, classes: int, width: int = 32):
        super().__init__()
        self.kinds, self.shapes, self.width = list(kinds), [tuple(s) for s in shapes], width
        self.encoders = nn.ModuleList(self._encoder(kind, shape, vocabulary, width) for kind, shape in zip(kinds, shapes))
        n = len(kinds)
        for i, shape in enumerate(self.shapes):  # training statistics: the lens's "absent" input and noise scale
            self.register_buffer(f"mean_{i}", torch.zeros(shape))
            self.register_buffer(f"scale_{i}", torch.ones(()))
        self.branch = nn.ModuleList(nn.Linear(width, width) for _ in range(n))
        self.gate = nn.Linear(width, width)
        self.fuse = nn.Linear(width, width)
        with torch.no_grad():  # start contractive, so the first solves converge
            for layer in (*self.branch, self.fuse):
                layer.weight.mul_(0.5)
        self.classifier = nn.Linear(width, classes)
        self.deq = get_deq(f_solver="anderson", f_max_iter=30, f_tol=1e-4, ift=True)

    @staticmethod
    def _encoder(kind: str, shape: tuple[int, ...], vocabulary: int, width: int) -> nn.Module:
        if kind == "image":
            return nn.Sequential(nn.Conv2d(shape[0], 8, 5, stride=4, padding=2), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, width))
        if kind == "timeseries":
            return nn.Sequential(nn.Conv1d(shape[0], 16, 7, stride=4, padding=3), nn.ReLU(),
                                 nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(16, width))
        if kind == "text":
            return nn.Embedding(vocabulary, width, padding_idx=0)
        if kind == "vector":
            return nn.Sequential(nn.Linear(shape[0], width), nn.ReLU(), nn.Linear(width, width))
        raise ValueError(f"no encoder for modality kind {kind!r}")

    # ------------------------------------------------------------------ what the lens calls

    def encode(self, inputs) -> torch.Tensor:
        """``(b, N, d)``: one feature row per modality."""
        return torch.stack([self.encode_modality(i, x) for i, x in enumerate(inputs)], dim=1)

    def encode_modality(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.kinds[i] == "text":  # the mean of the non-padding token vectors
            tokens = x.long()
            keep = (tokens != 0).unsqueeze(-1).float()
            return (self.encoders[i](tokens) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.encoders[i]((x - getattr(self, f"mean_{i}")) / getattr(self, f"scale_{i}"))

    def embedding(self, i: int) -> nn.Module:
        """The text modality's token embedding (attributions over tokens hook its output)."""
        return self.encoders[i]

    def gates(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gates, purified)``, each ``(b, N, d)``, of f at ``z``."""
        n = len(self.kinds)
        modal = self._modal(z, x)
        gates = torch.sigmoid(self.gate(modal + z[:, n : n + 1]))
        return gates, gates * z[:, n : n + 1]

    def _modal(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = len(self.kinds)
        return torch.stack([torch.tanh(self.branch[i](z[:, i]) + x[:, i]) for i in range(n)], dim=1)

    def f(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The fusion update on ``(b, N + 1, d)``: modality rows from their own state and feature, then the fused row."""
        n = len(self.kinds)
        modal = self._modal(z, x)
        gates = torch.sigmoid(self.gate(modal + z[:, n : n + 1]))
        fused = torch.tanh(self.fuse((gates * z[:, n : n + 1]).sum(1)) + x.sum(1))
        return torch.cat([modal, fused[:, None]], dim=1)

    def head(self, fused: torch.Tensor) -> torch.Tensor:
        return self.classifier(fused)

    def input_means(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"mean_{i}") for i in range(len(self.kinds)))

    def input_scales(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"scale_{i}") for i in range(len(self.kinds)))

    # ------------------------------------------------------------------ how it trains (torchdeq)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Logits from torchdeq's fixed point (training and the model's own use)."""
        x = self.encode(inputs)
        z0 = x.new_zeros(x.shape[0], len(self.kinds) + 1, self.width)
        z_out, _ = self.deq(lambda z: self.f(z, x), z0)
        return self.head(z_out[-1][:, len(self.kinds)])


def build(config, options: dict) -> TorchDEQFusion:
    """The adapter factory ``adapter.json`` names: the module for a ``deq_core`` ``ModelConfig``."""
    vocabulary = max([len(m.vocabulary) for m in config.modalities if m.kind == "text"] or [1])
    return TorchDEQFusion([m.kind for m in config.modalities], [tuple(m.shape) for m in config.modalities],
                          vocabulary, len(config.class_names), width=config.width)
