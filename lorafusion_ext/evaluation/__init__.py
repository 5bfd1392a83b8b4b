"""Evaluation of analog models: drift sweeps (mean and std over trials per time after
programming) with Markdown, JSON and PNG reports."""

from lorafusion_ext.evaluation.drift_sweep import DEFAULT_TIMES, DriftSweepResult, drift_sweep, format_time

__all__ = ["DEFAULT_TIMES", "DriftSweepResult", "drift_sweep", "format_time"]
