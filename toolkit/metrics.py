"""Streaming metrics: ``update`` adds a batch's counts as device arrays (no synchronisation),
``result`` turns them into one Python float.

The metric objects given to ``compile`` are templates: every ``evaluate`` call, every epoch of
``fit`` and every validation pass works on its own copy (``fresh``), so two calls running at
once in two threads never add into each other's totals.

Targets are the model's prepared targets (one-hot rows for categorical losses). Binary
metrics threshold the prediction at 0.5, or at 0 when the model outputs logits.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from .errors import InputError
from .ops.losses import count, halves, is_weighted, positions

Array = Any


class Metric:
    binary_only = False  # True: needs a model with one output per sample (``compile`` checks it)

    name = "metric"

    def __init__(self) -> None:
        self.from_logits = False
        self.reset()

    def reset(self) -> None:
        self._totals: list[Any] = []

    def fresh(self, from_logits: bool) -> Metric:
        """A copy with zero totals, for one call; ``from_logits`` sets the binary threshold (0, not 0.5)."""
        metric = copy.copy(self)
        metric.from_logits = from_logits
        metric.reset()
        return metric

    def _add(self, *values: Any) -> None:
        self._totals = list(values) if not self._totals else [t + v for t, v in zip(self._totals, values, strict=True)]

    def update(self, pred: Array, y: Array, xp: Any) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def _binary_labels(self, pred: Array, y: Array, xp: Any) -> tuple[Array, Array, Array | None]:
        """(predicted, actual, counted): yes/no labels, and which samples count (None: all)."""
        if pred.ndim != 2 or pred.shape[1] != 1:
            raise InputError(f"{self.name} is a binary metric; the model must have one output per sample, not "
                             f"outputs of shape {tuple(pred.shape[1:])}")
        threshold = 0.0 if self.from_logits else 0.5
        y, counted = _unweighted(pred, y)
        return pred >= threshold, y >= 0.5, counted


def _unweighted(pred: Array, y: Array) -> tuple[Array, Array | None]:
    """Targets without the weights that ``fit(sample_weight=…)`` gave MSE and BCE targets ([y, w], twice
    the width), and which samples count: those of weight > 0 (None: every sample counts)."""
    if not is_weighted(pred, y):
        return y, None
    targets, weights = halves(pred, y)
    return targets, weights > 0


class Accuracy(Metric):
    """Fraction of correct predictions: argmax for several outputs, a threshold for one. On a
    sequence output (N, T, classes) every position counts (per-token accuracy)."""

    name = "accuracy"

    def update(self, pred: Array, y: Array, xp: Any) -> None:
        if pred.shape[-1] == 1 and pred.ndim == 2:
            predicted, actual, counted = self._binary_labels(pred, y, xp)
            if counted is not None:
                labelled = xp.astype(counted, pred.dtype)
                self._add(xp.sum(xp.astype(predicted == actual, pred.dtype) * labelled), xp.sum(labelled))
                return
        else:
            predicted, actual = xp.argmax(pred, axis=-1), xp.argmax(y, axis=-1)
            # A target row of zeros names no class: a sample given weight 0 (sample_weight/class_weight),
            # which the loss ignores too. Every other row counts once, whatever its weight.
            labelled = xp.astype(xp.max(y, axis=-1) > 0, pred.dtype)
            self._add(xp.sum(xp.astype(predicted == actual, pred.dtype) * labelled), xp.sum(labelled))
            return
        self._add(xp.sum(xp.astype(predicted == actual, pred.dtype)), positions(pred))

    def result(self) -> float:
        correct, count = self._totals
        count = float(count)
        return float(correct) / count if count else math.nan


class _ConfusionMetric(Metric):
    binary_only = True  # yes/no predictions: a model with one output per sample

    def update(self, pred: Array, y: Array, xp: Any) -> None:
        predicted, actual, counted = self._binary_labels(pred, y, xp)
        if counted is not None:  # samples of weight 0 are neither positives nor negatives
            predicted, actual = predicted & counted, actual & counted
        as_float = lambda mask: xp.sum(xp.astype(mask, pred.dtype))  # noqa: E731
        self._add(as_float(predicted & actual), as_float(predicted & ~actual), as_float(~predicted & actual))

    def _counts(self) -> tuple[float, float, float]:
        tp, fp, fn = (float(t) for t in self._totals)
        return tp, fp, fn


class Precision(_ConfusionMetric):
    """TP / (TP + FP); 0 when nothing is predicted positive."""

    name = "precision"

    def result(self) -> float:
        tp, fp, _ = self._counts()
        return tp / (tp + fp) if tp + fp else 0.0


class Recall(_ConfusionMetric):
    """TP / (TP + FN); 0 when there are no positives."""

    name = "recall"

    def result(self) -> float:
        tp, _, fn = self._counts()
        return tp / (tp + fn) if tp + fn else 0.0


class F1(_ConfusionMetric):
    """Harmonic mean of precision and recall: 2 TP / (2 TP + FP + FN)."""

    name = "f1"

    def result(self) -> float:
        tp, fp, fn = self._counts()
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class MeanSquaredErrorMetric(Metric):
    name = "mse"

    def update(self, pred: Array, y: Array, xp: Any) -> None:
        y, _ = _unweighted(pred, y)  # every sample counts once, as in Keras' unweighted metrics
        diff = pred - y
        self._add(xp.sum(diff * diff), count(diff))

    def result(self) -> float:
        total, count = self._totals
        return float(total) / count


class MeanAbsoluteError(Metric):
    name = "mae"

    def update(self, pred: Array, y: Array, xp: Any) -> None:
        y, _ = _unweighted(pred, y)
        self._add(xp.sum(xp.abs(pred - y)), count(pred))

    def result(self) -> float:
        total, count = self._totals
        return float(total) / count


METRICS: dict[str, type[Metric]] = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "precision": Precision,
    "recall": Recall,
    "f1": F1,
    "mse": MeanSquaredErrorMetric,
    "mae": MeanAbsoluteError,
}


def get_metric(metric: str | Metric) -> Metric:
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    return METRICS[metric]()
