"""DEQ Fusion Lens: deep-equilibrium multimodal fusion models you can inspect.

The public API. The names a user needs (``Case``, ``Lens``, configs, loading and
saving models, ``solve``, ``trace``, explanations, corruptions, reports and their
result types) are importable from here; the subpackages ``engine``, ``explain``,
``audit`` and ``data`` are public namespaces for the rest; the modules behind them
are internal. Every name is imported on first use, so ``import deq_core`` costs
nothing: the app's first page, ``deq-lens --help`` and the pure figure builders do
not wait for torch, Captum, scikit-learn or pandas until they use them.

    from deq_core import Lens
    lens = Lens.open("assets/models/inspection-deq")
    explanation = lens.explain(lens.case("insp-test-0007"))
"""

from __future__ import annotations

from deq_core._lazy import lazy_exports

__version__ = "0.1.0"  # submodules read it (cache keys, reports)

_ENGINE, _EXPLAIN = "deq_core.engine", "deq_core.explain"
# name -> module, or (module, attribute) where the public name differs
_EXPORTS: dict[str, str | tuple[str, str]] = {
    # one case and the lens on one model
    "Case": "deq_core.case", "Inputs": _ENGINE, "MissingInputs": "deq_core.case",
    "Provenance": "deq_core.case", "UploadError": "deq_core.case", "absent_input": "deq_core.case",
    "batch_of_one": "deq_core.case", "Decision": "deq_core.lens", "Lens": "deq_core.lens",
    # the engine
    "ARCHITECTURES": _ENGINE, "BackwardSettings": _ENGINE, "DEQFusion": _ENGINE, "ENCODERS": _ENGINE,
    "EarlyFusion": _ENGINE, "EncoderSettings": _ENGINE, "EquilibriumModel": _ENGINE, "FusionModel": _ENGINE,
    "FusionOutput": _ENGINE, "KINDS": _ENGINE, "LateFusion": _ENGINE, "METHODS": _ENGINE, "MODELS": _ENGINE,
    "Modality": _ENGINE, "ModelConfig": _ENGINE, "ModelLoadError": _ENGINE, "SolveResult": _ENGINE, "SolveStatus": _ENGINE,
    "SolverSettings": _ENGINE, "Trajectory": _ENGINE, "WeightTiedFusion": _ENGINE,
    "attach_implicit_gradient": _ENGINE, "attach_phantom_gradient": _ENGINE, "build_model": _ENGINE,
    "exact_jacobian": _ENGINE, "jacobian_frobenius_estimate": _ENGINE, "load_config": _ENGINE,
    "load_model": _ENGINE, "model_checksum": _ENGINE, "resolve_device": _ENGINE, "save_model": _ENGINE,
    "solve": _ENGINE, "spectral_radius": _ENGINE, "token_strings": _ENGINE, "trace": _ENGINE,
    # explanations, corruptions, robustness, tuning
    "Attribution": _EXPLAIN, "BASELINES": _EXPLAIN, "CorruptionSet": _EXPLAIN, "CorruptionSpec": _EXPLAIN,
    "DEFAULT_STEPS": _EXPLAIN, "DEFAULT_TOLERANCES": _EXPLAIN, "Explanation": _EXPLAIN,
    "ModalityShapley": _EXPLAIN, "Reliability": _EXPLAIN, "RobustnessReport": _EXPLAIN,
    "apply_corruptions": (_EXPLAIN, "apply"), "available_corruptions": _EXPLAIN, "corrupt": ("deq_core.explain.corrupt", "corrupt"),
    "describe_corruption": _EXPLAIN, "explain_case": _EXPLAIN, "integrated_gradients": _EXPLAIN,
    "modality_shapley": _EXPLAIN, "robustness_sweep": _EXPLAIN, "top_features": _EXPLAIN, "feature_names": _EXPLAIN,
    # evaluation
    "compare_predictions": "deq_core.evaluate",
    # money with its uncertainty, pilot read-outs (deq_core.costs)
    "BreakEven": "deq_core.costs", "CostComparison": "deq_core.costs", "Interval": "deq_core.costs",
    "PilotLog": "deq_core.costs", "PilotLogError": "deq_core.costs", "PilotReadout": "deq_core.costs",
    "Prices": "deq_core.costs", "align_decisions": "deq_core.costs", "best_baseline": "deq_core.costs",
    "break_even_months": "deq_core.costs", "compare_costs": "deq_core.costs", "error_costs": "deq_core.costs",
    "format_money": ("deq_core.costs", "money"), "pilot_readout": "deq_core.costs", "read_pilot_log": "deq_core.costs",
    "saving_sentence": "deq_core.costs",
    # the model card and PDFs for the file
    "CardFieldsError": "deq_core.card", "CardOptions": "deq_core.card", "ModelCard": "deq_core.card",
    "build_card": "deq_core.card", "card_html": "deq_core.card", "card_markdown": "deq_core.card",
    "stability_share": "deq_core.card", "card_pdf": "deq_core.pdf", "report_pdf": "deq_core.audit.pdf",
    # decision reports and the audit log
    "AuditLog": "deq_core.audit", "DecisionReport": "deq_core.audit", "HTML_NAME": "deq_core.audit",
    "JSON_NAME": "deq_core.audit", "ReportRecord": "deq_core.audit", "ReportSettings": "deq_core.audit",
    "ReportVerification": "deq_core.audit", "build_report": "deq_core.audit", "log_report": "deq_core.audit",
    "verify_report": "deq_core.audit", "default_audit_url": ("deq_core.audit", "default_url"),
    "record_sha256": "deq_core.audit", "render_html": "deq_core.audit",
    "issue_report": ("deq_core.audit", "issue"), "verify_issued": ("deq_core.audit.verify", "issue_problems"),
}  # fmt: skip

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
