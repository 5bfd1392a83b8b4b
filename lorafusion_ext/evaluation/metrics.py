"""GLUE metrics (scikit-learn / scipy implementations): accuracy, F1, Matthews correlation,
Pearson and Spearman correlation."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def _as_array(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(x)


def accuracy(pred, label) -> float:
    return float(skm.accuracy_score(_as_array(label), _as_array(pred)))


def f1(pred, label) -> float:
    return float(skm.f1_score(_as_array(label), _as_array(pred)))


def mcc(pred, label) -> float:
    return float(skm.matthews_corrcoef(_as_array(label), _as_array(pred)))


def pearson(pred, label) -> float:
    return float(stats.pearsonr(_as_array(pred), _as_array(label))[0])


def spearman(pred, label) -> float:
    return float(stats.spearmanr(_as_array(pred), _as_array(label))[0])


METRICS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Sequence[str], pred, label) -> dict[str, float]:
    """{name: value} for each metric name (see METRICS); predictions are class indices, or
    scores for the regression metrics."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected names from {sorted(METRICS)}")
    if len(pred) != len(label):
        raise ValueError(f"{len(pred)} predictions for {len(label)} labels")
    return {n: METRICS[n](pred, label) for n in names}


def chance_level(metric: str, train_labels, dev_labels) -> tuple[float, str]:
    """(value, predictor): `metric` of the constant predictor on `dev_labels`, the level a task's
    scores must clear before they say that anything was learned.

    Integer labels (classification): the majority class of `train_labels` predicted for every
    dev example (e.g. MRPC's F1 of always "paraphrase"). Float labels (regression): a constant
    score, whose correlation with the labels is taken as 0 (it is undefined)."""
    if metric not in METRICS:
        raise ValueError(f"chance_level: unknown metric {metric!r}; expected one of {sorted(METRICS)}")
    train, dev = _as_array(train_labels), _as_array(dev_labels)
    if train.size == 0 or dev.size == 0:
        raise ValueError(f"chance_level: {train.size} training and {dev.size} dev labels; expected some of each")
    if np.issubdtype(train.dtype, np.floating):
        return 0.0, "constant score"
    majority = int(np.bincount(train.astype(np.int64)).argmax())
    return float(METRICS[metric](np.full(dev.shape, majority), dev)), f"class {majority} (training majority)"
