"""Explanations and their checks: Integrated Gradients, modality Shapley values, the
explanation of one case, corruptions, faithfulness, robustness and solver tuning.

Public namespace: every name below is imported from its module on first use, so
``from deq_core.explain import X`` is the stable way in and the modules behind it are
internal (their layout may change). Generated from the modules' public top-level
names; ``tests/test_layout.py`` checks that each one resolves.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    'DEFAULT_STEPS': 'attribution',
    'ADAPTIVE': 'attribution',
    'DEFAULT_METHOD': 'attribution',
    'ADAPTIVE_NODES': 'attribution',
    'ADAPTIVE_GRID': 'attribution',
    'COMPLETENESS_TOLERANCE': 'attribution',
    'OUTPUTS': 'attribution',
    'Baseline': 'attribution',
    'gaussian_blur': 'attribution',
    'BASELINES': 'attribution',
    'DEFAULT_BASELINE': 'attribution',
    'BaselineChoice': 'attribution',
    'resolve_baselines': 'attribution',
    'baseline_inputs': 'attribution',
    'SolveSummary': 'attribution',
    'summarise_solves': 'attribution',
    'FeatureScore': 'attribution',
    'Attribution': 'attribution',
    'feature_name': 'attribution',
    'top_features': 'attribution',
    'evaluation_mode': 'attribution',
    'text_positions': 'attribution',
    'PathForward': 'attribution',
    'case_batch': 'attribution',
    'target_classes': 'attribution',
    'integrated_gradients': 'attribution',
    'segment_boundaries': 'attribution',
    'BLUR_SIGMA_FRACTION': 'corrupt',
    'SPIKE_RATE': 'corrupt',
    'SPIKE_HEIGHT': 'corrupt',
    'DRIFT_AT_END': 'corrupt',
    'CaseKey': 'corrupt',
    'CorruptionSpec': 'corrupt',
    'CorruptionSet': 'corrupt',
    'InputReference': 'corrupt',
    'CorruptionFunction': 'corrupt',
    'CORRUPTIONS': 'corrupt',
    'available_corruptions': 'corrupt',
    'describe_corruption': 'corrupt',
    'KEYBOARD_NEIGHBOURS': 'corrupt',
    'misspell': 'corrupt',
    'ALL_KINDS': 'corrupt',
    'apply': 'corrupt',
    'JUMP_SHARE': 'explanation',
    'CROSS_CHECK_TOLERANCE': 'explanation',
    'Reliability': 'explanation',
    'Explanation': 'explanation',
    'explain_case': 'explanation',
    'assess': 'explanation',
    'format_explanation': 'explanation',
    'TARGETS': 'faithfulness',
    'STANDARDISATION_BUFFERS': 'faithfulness',
    'NEAR_TIE': 'faithfulness',
    'Faithfulness': 'faithfulness',
    'randomized_copy': 'faithfulness',
    'average_ranks': 'faithfulness',
    'spearman': 'faithfulness',
    'deletion_pair': 'faithfulness',
    'deletion_agrees': 'faithfulness',
    'deletion_near_tie': 'faithfulness',
    'batch_invariance': 'faithfulness',
    'measure': 'faithfulness',
    'meets_target': 'faithfulness',
    'format_table': 'faithfulness',
    'IdealReference': 'ideal',
    'generated_case': 'ideal',
    'describe_note': 'ideal',
    'ideal_shapley': 'ideal',
    'ideal_reference': 'ideal',
    'ranking_sentence': 'ideal',
    'DEFAULT_SEVERITIES': 'robustness',
    'QUICK_SEVERITIES': 'robustness',
    'ROW_KEYS': 'robustness',
    'SUMMARY_KEYS': 'robustness',
    'CACHE_NAMESPACE': 'robustness',
    'DEFAULT_CACHE_DIR': 'robustness',
    'CacheChoice': 'robustness',
    'default_cache_dir': 'robustness',
    'CODE_VERSION': 'robustness',
    'relative_robustness': 'robustness',
    'effective_robustness': 'robustness',
    'effective_robustness_fit': 'robustness',
    'Measurement': 'robustness',
    'RobustnessReport': 'robustness',
    'summarise': 'robustness',
    'is_cached': 'robustness',
    'robustness_sweep': 'robustness',
    'find_baselines': 'robustness',
    'sweep_folder': 'robustness',
    'MAX_MODALITIES': 'shapley',
    'VALUE': 'shapley',
    'absent_input': 'shapley',
    'coalition_masks': 'shapley',
    'coalition_inputs': 'shapley',
    'shapley_weights': 'shapley',
    'interaction_weights': 'shapley',
    'ModalityShapley': 'shapley',
    'modality_shapley': 'shapley',
    'REFERENCE_TOL': 'tuning',
    'REFERENCE_MAX_ITER': 'tuning',
    'DEFAULT_TOLERANCES': 'tuning',
    'LATENCY_CASES': 'tuning',
    'Progress': 'tuning',
    'reference_settings': 'tuning',
    'reference_for': 'tuning',
    'count_flips': 'tuning',
    'case_latency_ms': 'tuning',
    'split_latency_ms': 'tuning',
    'CaseTuning': 'tuning',
    'tune_case': 'tuning',
    'SettingsReport': 'tuning',
    'reference_decisions': 'tuning',
    'assess_settings': 'tuning',
    'recommend_tolerance': 'tuning',
    'ToleranceSweep': 'tuning',
    'tolerance_sweep': 'tuning',
    'ComputeComparison': 'tuning',
    'equal_compute': 'tuning',
    'format_sweep': 'tuning',
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
