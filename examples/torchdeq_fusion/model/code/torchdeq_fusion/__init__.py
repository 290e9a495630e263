"""A small DEQ fusion model written with torchdeq's API, and its adapter factory ``build``."""

from torchdeq_fusion.model import TorchDEQFusion, build

__all__ = ["TorchDEQFusion", "build"]
