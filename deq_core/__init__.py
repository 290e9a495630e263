"""DEQ Fusion Lens: deep-equilibrium multimodal fusion models you can inspect.

Public API; the modules behind it are internal.
"""

from .checkpoint import ModelLoadError, load_config, load_model, model_checksum, resolve_device, save_model
from .config import ARCHITECTURES, ModelConfig, SolverSettings
from .encoders import ENCODERS, EncoderSettings
from .implicit import (
    BackwardSettings,
    attach_implicit_gradient,
    attach_phantom_gradient,
    exact_jacobian,
    jacobian_frobenius_estimate,
    spectral_radius,
)
from .modality import KINDS, Modality
from .model import MODELS, DEQFusion, EarlyFusion, FusionModel, FusionOutput, LateFusion, WeightTiedFusion, build_model
from .solvers import METHODS, SolveResult, solve
from .trajectory import Trajectory, trace

__all__ = [
    "ARCHITECTURES", "BackwardSettings", "DEQFusion", "ENCODERS", "EarlyFusion", "EncoderSettings",
    "FusionModel", "FusionOutput", "KINDS", "LateFusion", "METHODS", "MODELS", "Modality", "ModelConfig",
    "ModelLoadError", "SolveResult", "SolverSettings", "Trajectory", "WeightTiedFusion",
    "attach_implicit_gradient", "attach_phantom_gradient", "build_model", "exact_jacobian",
    "jacobian_frobenius_estimate", "load_config", "load_model", "model_checksum", "resolve_device",
    "save_model", "solve", "spectral_radius", "trace",
]
__version__ = "0.1.0"
