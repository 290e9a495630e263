"""Explanations and their checks: attributions, modality Shapley values, corruptions,
faithfulness, robustness and solver tuning."""
