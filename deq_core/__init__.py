"""DEQ Fusion Lens: deep-equilibrium multimodal fusion models you can inspect.

Public API; the modules behind it are internal.
"""

__version__ = "0.1.0"  # first: submodules import it (cache keys, reports)

from deq_core.explain.attribution import BASELINES, Attribution, integrated_gradients, top_features
from deq_core.engine.checkpoint import ModelLoadError, load_config, load_model, model_checksum, resolve_device, save_model
from deq_core.engine.config import ARCHITECTURES, ModelConfig, SolverSettings
from deq_core.explain.corrupt import CorruptionSet, CorruptionSpec, apply as apply_corruptions, available_corruptions, corrupt
from deq_core.engine.encoders import ENCODERS, EncoderSettings
from deq_core.engine.implicit import (
    BackwardSettings,
    attach_implicit_gradient,
    attach_phantom_gradient,
    exact_jacobian,
    jacobian_frobenius_estimate,
    spectral_radius,
)
from deq_core.explain.explanation import Explanation, explain_case
from deq_core.engine.modality import KINDS, Modality
from deq_core.engine.model import MODELS, DEQFusion, EarlyFusion, FusionModel, FusionOutput, LateFusion, WeightTiedFusion, build_model
from deq_core.explain.shapley import ModalityShapley, modality_shapley
from deq_core.engine.solvers import METHODS, SolveResult, SolveStatus, solve
from deq_core.engine.trajectory import Trajectory, trace

__all__ = [
    "Attribution", "BASELINES", "CorruptionSet", "CorruptionSpec", "Explanation", "ModalityShapley",
    "RobustnessReport", "apply_corruptions", "available_corruptions", "corrupt", "explain_case",
    "integrated_gradients", "modality_shapley", "robustness_sweep", "top_features",
    "ARCHITECTURES", "BackwardSettings", "DEQFusion", "ENCODERS", "EarlyFusion", "EncoderSettings",
    "FusionModel", "FusionOutput", "KINDS", "LateFusion", "METHODS", "MODELS", "Modality", "ModelConfig",
    "ModelLoadError", "SolveResult", "SolveStatus", "SolverSettings", "Trajectory", "WeightTiedFusion",
    "attach_implicit_gradient", "attach_phantom_gradient", "build_model", "exact_jacobian",
    "jacobian_frobenius_estimate", "load_config", "load_model", "model_checksum", "resolve_device",
    "save_model", "solve", "spectral_radius", "trace",
]


def __getattr__(name: str):
    # Imported on first use, so `python -m deq_core.robustness` does not find its own
    # module already imported by the package (runpy warns about that).
    if name in ("RobustnessReport", "robustness_sweep"):
        from deq_core.explain.explanation import robustness

        return getattr(robustness, name)
    raise AttributeError(f"module 'deq_core' has no attribute {name!r}")
