"""Loss functions J(ŷ, y) and their gradients dJ/dŷ, averaged over the batch, on any Array API namespace.

Every ``*_value`` returns a 0-d array (never a Python float) so that a training step
does not have to synchronise a GPU. Every ``*_grad`` returns the gradient with the
same shape as the prediction. ``*_logits_*`` forms take the pre-activation ``z``
and are the numerically stable ones.
"""

from __future__ import annotations

import math
from typing import Any

from .activations import sigmoid, softmax

Array = Any

PROBABILITY_CLIP = 1e-7


def count(x: Array) -> int:
    """Number of elements: ``math.prod(x.shape)`` (``x.size`` is a method on torch tensors)."""
    return math.prod(x.shape)


def _clip_probabilities(p: Array, xp: Any) -> Array:
    return xp.clip(p, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)


def _inside_clip(p: Array, xp: Any) -> Array:
    """1 where the clip leaves p alone, 0 where it is active: the clipped loss is flat there, so
    its gradient is 0 (the gradient always belongs to the loss that is reported)."""
    return xp.astype((p >= PROBABILITY_CLIP) & (p <= 1.0 - PROBABILITY_CLIP), p.dtype)


def positions(x: Array) -> int:
    """Number of predictions: rows of a (N, C) batch, N·T of a sequence batch (N, T, C)."""
    return math.prod(x.shape[:-1])


def one_hot(labels: Array, n_classes: int, dtype: Any, xp: Any) -> Array:
    """Integer class labels of shape (N, …) to one-hot rows of shape (N, …, n_classes)."""
    classes = xp.arange(n_classes, dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[..., None] == classes, dtype)


# Mean squared error: J = mean((ŷ − y)²), mean over every element as PyTorch's MSELoss does.
def mse_value(pred: Array, y: Array, xp: Any) -> Array:
    diff = pred - y
    return xp.mean(diff * diff)


def mse_grad(pred: Array, y: Array, xp: Any) -> Array:
    return (2.0 / count(pred)) * (pred - y)


# Binary cross-entropy on probabilities: J = −mean(y log p + (1 − y) log(1 − p)), p clipped.
def bce_value(p: Array, y: Array, xp: Any) -> Array:
    p = _clip_probabilities(p, xp)
    return -xp.mean(y * xp.log(p) + (1.0 - y) * xp.log(1.0 - p))


def bce_grad(p: Array, y: Array, xp: Any) -> Array:
    clipped = _clip_probabilities(p, xp)
    return (clipped - y) / (clipped * (1.0 - clipped)) / count(p) * _inside_clip(p, xp)


# Binary cross-entropy from logits: J = mean(max(z, 0) − z y + log(1 + e^(−|z|))), never overflows.
def bce_logits_value(z: Array, y: Array, xp: Any) -> Array:
    return xp.mean(xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z))))


def bce_logits_grad(z: Array, y: Array, xp: Any) -> Array:
    return (sigmoid(z, xp) - y) / count(z)


def log_softmax(z: Array, xp: Any) -> Array:
    """log softmax(z) by the log-sum-exp trick: z − max − log Σ e^(z − max)."""
    shifted = z - xp.max(z, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


# Softmax cross-entropy from logits with one-hot targets: J = −(1/P) Σ_i Σ_k y_ik log softmax(z)_ik,
# i over the P predictions (the N rows, or the N·T positions of a sequence batch), k over the classes.
def softmax_ce_logits_value(z: Array, y_one_hot: Array, xp: Any) -> Array:
    return -xp.sum(y_one_hot * log_softmax(z, xp)) / positions(z)


def softmax_ce_logits_grad(z: Array, y_one_hot: Array, xp: Any) -> Array:
    # ŷ·Σₖyₖ − y, exact for target rows that do not sum to 1 (ŷ − y when they do).
    return (softmax(z, xp) * xp.sum(y_one_hot, axis=-1, keepdims=True) - y_one_hot) / positions(z)


# Categorical cross-entropy on probabilities (after a softmax layer), p clipped.
def categorical_ce_value(p: Array, y_one_hot: Array, xp: Any) -> Array:
    return -xp.sum(y_one_hot * xp.log(_clip_probabilities(p, xp))) / positions(p)


def categorical_ce_grad(p: Array, y_one_hot: Array, xp: Any) -> Array:
    return -y_one_hot / _clip_probabilities(p, xp) / positions(p) * _inside_clip(p, xp)


# Weighted targets (``fit(sample_weight=…, class_weight=…)``) for the losses that are not linear in their
# targets (MSE, BCE): [y, w] along the last axis, twice the predictions' width.
def with_weights(y: Array, weights: Array, xp: Any) -> Array:
    """Targets ``y`` (…, k) and one weight per sample or position ``weights`` (…) as [y, w] (…, 2k)."""
    return xp.concat([y, xp.broadcast_to(weights[..., None], y.shape)], axis=-1)


def is_weighted(pred: Array, y: Array) -> bool:
    return y.shape[-1] == 2 * pred.shape[-1]


def halves(pred: Array, y: Array) -> tuple[Array, Array]:
    width = pred.shape[-1]
    return y[..., :width], y[..., width:]


# MSE, targets [y, w]: J = mean(w (ŷ − y)²), ∂J/∂ŷ = 2 w (ŷ − y) / count.
def weighted_mse_value(pred: Array, y: Array, xp: Any) -> Array:
    target, weight = halves(pred, y)
    diff = pred - target
    return xp.mean(weight * diff * diff)


def weighted_mse_grad(pred: Array, y: Array, xp: Any) -> Array:
    target, weight = halves(pred, y)
    return (2.0 / count(pred)) * weight * (pred - target)


# BCE, targets [y, w]: with p = w y and q = w (1 − y), J = −mean(p log ŷ + q log(1 − ŷ)) = mean(w·BCE(y));
# from the logits J = mean((p + q) softplus(z) − p z), and ∂J/∂z = (σ(z)(p + q) − p) / count = w (σ(z) − y) / count.
def _positive_negative(pred: Array, y: Array) -> tuple[Array, Array]:
    target, weight = halves(pred, y)
    return weight * target, weight * (1.0 - target)


def weighted_bce_logits_value(z: Array, y: Array, xp: Any) -> Array:
    p, q = _positive_negative(z, y)
    softplus = xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
    return xp.mean((p + q) * softplus - p * z)


def weighted_bce_logits_grad(z: Array, y: Array, xp: Any) -> Array:
    p, q = _positive_negative(z, y)
    return (sigmoid(z, xp) * (p + q) - p) / count(z)


def weighted_bce_value(prob: Array, y: Array, xp: Any) -> Array:
    p, q = _positive_negative(prob, y)
    clipped = _clip_probabilities(prob, xp)
    return -xp.mean(p * xp.log(clipped) + q * xp.log(1.0 - clipped))


def weighted_bce_grad(prob: Array, y: Array, xp: Any) -> Array:
    p, q = _positive_negative(prob, y)
    clipped = _clip_probabilities(prob, xp)
    return (clipped * (p + q) - p) / (clipped * (1.0 - clipped)) / count(prob) * _inside_clip(prob, xp)
