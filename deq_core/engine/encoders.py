"""Encoders that map one modality's raw input to a feature vector of the shared width d.

Chosen by the modality's kind from ``ENCODERS``. Each encoder standardises its raw
input with statistics of the training data kept as buffers, so a saved model
takes raw inputs and carries the training mean (used by "drop" corruptions and
attribution baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deq_core.engine.modality import Modality


IMAGE_POOLINGS = ("grid", "global")


@dataclass(frozen=True)
class EncoderSettings:
    """Sizes shared by all encoders of a model."""

    channels: int = 32
    embedding_dim: int = 64
    dropout: float = 0.1
    vector_hidden: int = 0  # 0: a vector modality is mapped to d linearly (less overfitting on small data)
    # "grid": three conv layers averaged over a 4x4 grid of patches (the original encoder;
    # every model shipped before it existed). "global": a fourth conv layer and pooling
    # over the whole picture by max and mean, so a feature can respond to the shape of a
    # line across the photo, not only to a 16-pixel patch (see ImageEncoder).
    image_pooling: str = "grid"

    def __post_init__(self) -> None:
        if self.image_pooling not in IMAGE_POOLINGS:
            raise ValueError(f"image_pooling must be one of {', '.join(IMAGE_POOLINGS)}, got {self.image_pooling!r}")


class Encoder(nn.Module):
    """Base: standardisation buffers and the ``fit_statistics`` hook.

    ``checkpoint_activations`` (set by training on the ``checkpointable`` encoders, see
    ``FusionModel.checkpoint_encoders``) makes a convolutional encoder keep only its
    input for the backward and recompute its activations there: the same gradients,
    bit for bit, for one more encoder forward per step, and the image encoder's 50 MB
    of saved activations per batch of 64 photos are gone.
    """

    checkpointable: bool = False  # the convolutional encoders, whose forward goes through per_case
    checkpoint_activations: bool = False

    def __init__(self, modality: Modality):
        super().__init__()
        self.modality = modality
        self.register_buffer("input_mean", torch.zeros(modality.shape))
        self.register_buffer("center", torch.zeros(self._stat_shape()))
        self.register_buffer("scale", torch.ones(self._stat_shape()))

    def _stat_shape(self) -> tuple[int, ...]:
        # Per feature for vectors, per channel for images and series, none for text.
        shape = self.modality.shape
        return {"vector": shape, "image": (shape[0], 1, 1), "timeseries": (shape[0], 1), "text": (1,)}[
            self.modality.kind
        ]

    @torch.no_grad()
    def fit_statistics(self, x: torch.Tensor) -> None:
        """Set standardisation from training inputs ``x: (n, *modality.shape)``."""
        if self.modality.kind == "text":
            return
        x = x.float()
        self.input_mean.copy_(x.mean(dim=0))
        reduce = {"vector": (0,), "image": (0, 2, 3), "timeseries": (0, 2)}[self.modality.kind]
        self.center.copy_(x.mean(dim=reduce, keepdim=True)[0])
        self.scale.copy_(x.std(dim=reduce, keepdim=True)[0].clamp_min(1e-6))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def per_case(self, x: torch.Tensor) -> torch.Tensor:
        """``self.net`` on each case alone in eval mode, on the whole batch in training.

        oneDNN picks its convolution algorithm by batch shape, so a case convolved
        among 64 others rounds differently in the last bits than the case alone;
        where a ReLU or a max-pool sits on a near-tie, those bits decide which pixel
        receives the gradient, and an attribution would depend on Captum's
        internal batch size (measured on inspection-deq: 2.8e-5 instead of 2e-9).
        One case at a time makes every case's numbers the same in any batch.
        """
        if self.training and self.checkpoint_activations and torch.is_grad_enabled():
            # Dropout draws the same mask in the recomputation: checkpoint restores the RNG state.
            return checkpoint(self.net, x, use_reentrant=False)
        if self.training or len(x) <= 1:
            return self.net(x)
        return torch.cat([self.net(case) for case in x.split(1)])


class VectorEncoder(Encoder):
    def __init__(self, modality: Modality, width: int, settings: EncoderSettings):
        super().__init__(modality)
        features, hidden = modality.shape[0], settings.vector_hidden
        if hidden:
            self.net = nn.Sequential(
                nn.Dropout(settings.dropout), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, width)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(settings.dropout), nn.Linear(features, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, features) -> (b, d)
        return self.net(self.standardise(x))


class ImageEncoder(Encoder):
    checkpointable = True

    def __init__(self, modality: Modality, width: int, settings: EncoderSettings):
        super().__init__(modality)
        c = settings.channels
        in_channels, height, width_px = modality.shape
        pool = 2 if min(height, width_px) >= 32 else 1  # small pictures keep their resolution
        layers = [
            nn.Conv2d(in_channels, c // 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
            nn.Conv2d(c // 2, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
        ]  # fmt: skip
        if settings.image_pooling == "grid":
            layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(settings.dropout), nn.Linear(16 * c, width)]
        else:
            # Three 3x3 layers see about 18 pixels of a 64-pixel photo: a straight scratch
            # and a jagged crack look alike in every such patch, and averaging the patches
            # over a 4x4 grid keeps it that way: on the inspection validation split the
            # grid late fusion's photo head gave dark straight lines P(crack) 0.95 on
            # average, where the generator makes 5 in 8 of them scratches. A fourth layer
            # after one more pooling sees about 38 pixels, and pooling it by max (is the
            # shape anywhere?) and by mean (how much of it?) over the whole picture keeps
            # what it sees. That photo head then gives 0.84: less wrong, not right; every
            # architecture has fewer cross-validated errors with it (docs/experiments.md).
            layers += [
                nn.MaxPool2d(2), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                GlobalMaxMeanPool(), nn.Dropout(settings.dropout), nn.Linear(2 * c, width),
            ]  # fmt: skip
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, c, h, w) -> (b, d)
        return self.per_case(self.standardise(x))


class GlobalMaxMeanPool(nn.Module):
    """``(b, c, h, w) -> (b, 2c)``: each channel's maximum and mean over the picture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


class TimeseriesEncoder(Encoder):
    checkpointable = True

    def __init__(self, modality: Modality, width: int, settings: EncoderSettings):
        super().__init__(modality)
        c = settings.channels
        channels, _ = modality.shape
        self.net = nn.Sequential(
            nn.Conv1d(channels, c, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(c, 2 * c, 5, padding=2), nn.ReLU(),
            nn.AdaptiveAvgPool1d(8), nn.Flatten(),
            nn.Dropout(settings.dropout), nn.Linear(16 * c, width),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, channels, steps) -> (b, d)
        return self.per_case(self.standardise(x))


class TextEncoder(Encoder):
    """Token embedding, masked mean and max pooling, linear map to d.

    ``embedding`` is a named layer so LayerIntegratedGradients can attribute to tokens.
    """

    def __init__(self, modality: Modality, width: int, settings: EncoderSettings):
        super().__init__(modality)
        self.embedding = nn.Embedding(len(modality.vocabulary), settings.embedding_dim, padding_idx=0)
        self.project = nn.Sequential(nn.Dropout(settings.dropout), nn.Linear(2 * settings.embedding_dim, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (b, max_tokens) int64 -> (b, d)
        return self.pool(self.embedding(tokens.long()), tokens)

    def pool(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1).to(embedded.dtype)
        count = mask.sum(dim=1).clamp_min(1.0)
        mean = (embedded * mask).sum(dim=1) / count
        peak = (embedded * mask - 1e4 * (1 - mask)).amax(dim=1)
        peak = peak * mask.amax(dim=1)  # an empty note pools to zeros, not to -1e4
        return self.project(torch.cat([mean, peak], dim=-1))


ENCODERS: dict[str, type[Encoder]] = {
    "vector": VectorEncoder,
    "image": ImageEncoder,
    "timeseries": TimeseriesEncoder,
    "text": TextEncoder,
}


def build_encoder(modality: Modality, width: int, settings: EncoderSettings) -> Encoder:
    return ENCODERS[modality.kind](modality, width, settings)
