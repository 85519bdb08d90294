"""Evaluation: filtered link-prediction ranking, code statistics and plots."""
