"""The equilibrium engine: modalities, configs, encoders, the fusion models and their
baselines, fixed-point solvers, implicit differentiation, recorded trajectories, model folders.

Public namespace: every name below is imported from its module on first use, so
``from deq_core.engine import X`` is the stable way in and the modules behind it are
internal (their layout may change). Generated from the modules' public top-level
names; ``tests/test_layout.py`` checks that each one resolves.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    'WEIGHTS': 'checkpoint',
    'CONFIG': 'checkpoint',
    'CHECKSUMS': 'checkpoint',
    'ModelLoadError': 'checkpoint',
    'sha256_file': 'checkpoint',
    'resolve_device': 'checkpoint',
    'save_model': 'checkpoint',
    'model_checksum': 'checkpoint',
    'load_config': 'checkpoint',
    'load_model': 'checkpoint',
    'verify_folder': 'checkpoint',
    'ARCHITECTURES': 'config',
    'GRADIENTS': 'config',
    'SolverSettings': 'config',
    'ModelConfig': 'config',
    'check_config_limits': 'config',
    'IMAGE_POOLINGS': 'encoders',
    'EncoderSettings': 'encoders',
    'Encoder': 'encoders',
    'VectorEncoder': 'encoders',
    'ImageEncoder': 'encoders',
    'GlobalMaxMeanPool': 'encoders',
    'TimeseriesEncoder': 'encoders',
    'TextEncoder': 'encoders',
    'ENCODERS': 'encoders',
    'build_encoder': 'encoders',
    'BackwardSettings': 'implicit',
    'attach_implicit_gradient': 'implicit',
    'attach_phantom_gradient': 'implicit',
    'jacobian_frobenius_estimate': 'implicit',
    'exact_jacobian': 'implicit',
    'spectral_radius': 'implicit',
    'Inputs': 'modality',
    'KINDS': 'modality',
    'PAD_TOKEN': 'modality',
    'UNKNOWN_TOKEN': 'modality',
    'Modality': 'modality',
    'FusionOutput': 'model',
    'FusionUpdate': 'model',
    'BoundUpdate': 'model',
    'FusionModel': 'model',
    'EquilibriumModel': 'model',
    'DEQFusion': 'model',
    'WeightTiedFusion': 'model',
    'EarlyFusion': 'model',
    'LateFusion': 'model',
    'MODELS': 'model',
    'build_model': 'model',
    'METHODS': 'solvers',
    'STOP_MODES': 'solvers',
    'SolveStatus': 'solvers',
    'STATUSES': 'solvers',
    'BLOWUP_FACTOR': 'solvers',
    'COMPACT_RATIO': 'solvers',
    'SolveResult': 'solvers',
    'SOLVER_OPTIONS': 'solvers',
    'check_options': 'solvers',
    'solve': 'solvers',
    'unrolled_result': 'solvers',
    'words': 'text',
    'build_vocabulary': 'text',
    'tokenize': 'text',
    'token_strings': 'text',
    'Trajectory': 'trajectory',
    'trace': 'trajectory',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
