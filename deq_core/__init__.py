"""DEQ Fusion Lens: deep-equilibrium multimodal fusion models you can inspect.

Public API; the modules behind it are internal.
"""

__version__ = "0.1.0"  # first: submodules import it (cache keys, reports)

from deq_core.explain.attribution import BASELINES, DEFAULT_STEPS, Attribution, integrated_gradients, top_features
from deq_core.engine.checkpoint import ModelLoadError, load_config, load_model, model_checksum, resolve_device, save_model
from deq_core.engine.config import ARCHITECTURES, ModelConfig, SolverSettings
from deq_core.explain.corrupt import (
    CorruptionSet,
    CorruptionSpec,
    apply as apply_corruptions,
    available_corruptions,
    corrupt,
    describe_corruption,
)
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
from deq_core.engine.text import token_strings
from deq_core.engine.model import MODELS, DEQFusion, EarlyFusion, FusionModel, FusionOutput, LateFusion, WeightTiedFusion, build_model
from deq_core.explain.shapley import ModalityShapley, modality_shapley
from deq_core.engine.solvers import METHODS, SolveResult, solve
from deq_core.engine.trajectory import Trajectory, trace
from deq_core.case import Case, Inputs, MissingInputs, Provenance, UploadError, absent_input, batch_of_one
from deq_core.lens import Decision, Lens

_LAZY_NAMES = ("RobustnessReport", "robustness_sweep", "DEFAULT_TOLERANCES", "compare_predictions",
               "DecisionReport", "ReportSettings", "build_report", "log_report", "verify_report", "HTML_NAME",
               "JSON_NAME", "AuditLog", "default_audit_url", "ranking_sentence",
               "record_sha256", "render_html")  # fmt: skip

__all__ = [
    "DEFAULT_STEPS", "describe_corruption", "token_strings", *_LAZY_NAMES,
    "Case", "Decision", "Inputs", "Lens", "MissingInputs", "Provenance", "UploadError", "absent_input", "batch_of_one",
    "Attribution", "BASELINES", "CorruptionSet", "CorruptionSpec", "Explanation", "ModalityShapley",
    "apply_corruptions", "available_corruptions", "corrupt", "explain_case",
    "integrated_gradients", "modality_shapley", "top_features",
    "ARCHITECTURES", "BackwardSettings", "DEQFusion", "ENCODERS", "EarlyFusion", "EncoderSettings",
    "FusionModel", "FusionOutput", "KINDS", "LateFusion", "METHODS", "MODELS", "Modality", "ModelConfig",
    "ModelLoadError", "SolveResult", "SolverSettings", "Trajectory", "WeightTiedFusion",
    "attach_implicit_gradient", "attach_phantom_gradient", "build_model", "exact_jacobian",
    "jacobian_frobenius_estimate", "load_config", "load_model", "model_checksum", "resolve_device",
    "save_model", "solve", "spectral_radius", "trace",
]


# Imported on first use: these pull in scikit-learn, pandas or the report machinery,
# which the app's first page must not wait for, and `python -m deq_core.robustness`
# must not find its module already imported by the package (runpy warns about that).
_LAZY = {
    "RobustnessReport": "deq_core.explain.robustness",
    "robustness_sweep": "deq_core.explain.robustness",
    "DEFAULT_TOLERANCES": "deq_core.explain.tuning",
    "compare_predictions": "deq_core.evaluate",
    "DecisionReport": "deq_core.audit.report",
    "ReportSettings": "deq_core.audit.report",
    "build_report": "deq_core.audit.report",
    "log_report": "deq_core.audit.report",
    "verify_report": "deq_core.audit.report",
    "HTML_NAME": "deq_core.audit.report",
    "JSON_NAME": "deq_core.audit.report",
    "AuditLog": "deq_core.audit.log",
    "default_audit_url": ("deq_core.audit.log", "default_url"),
    "ranking_sentence": "deq_core.explain.ideal",
    "record_sha256": "deq_core.audit.report",
    "render_html": "deq_core.audit.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        target = _LAZY[name]
        module, attribute = target if isinstance(target, tuple) else (target, name)
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'deq_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
