"""Evaluation of analog models: drift sweeps (mean and std over trials per time after
programming) with Markdown, JSON and PNG reports, and the GLUE metrics."""

from lorafusion_ext.evaluation.drift_sweep import DEFAULT_TIMES, DriftSweepResult, drift_sweep, format_time
from lorafusion_ext.evaluation.metrics import METRICS, compute_metrics

__all__ = ["DEFAULT_TIMES", "METRICS", "DriftSweepResult", "compute_metrics", "drift_sweep", "format_time"]
