"""Loss objects: target checking and conversion around the loss ops, and the output layers
they pair with for the fused gradient δ_out = ŷ − y."""

from __future__ import annotations

import math
from typing import Any

from .backend import Backend
from .errors import InputError, ShapeError
from .ops import losses as ops

Array = Any


class Loss:
    """Base class. ``value``/``gradient`` work on prepared targets (see ``prepare``)."""

    name = "loss"
    # The pair of ``toolkit.ops.reference.OUTPUT_PAIRS`` this loss forms with its output
    # activation (backward then starts from the fused δ_out = ŷ − y), or None.
    output_pair: str | None = None

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def prepare(self, pred_shape: tuple[int, ...], y: Any, backend: Backend, dtype: Any) -> Array:
        """Targets as a backend array of the predictions' shape and dtype; raises ShapeError.

        A 1-D target of length N is accepted for predictions of shape (N, 1) and reshaped
        explicitly; nothing is ever broadcast.
        """
        y = backend.asarray(y)
        xp = backend.xp
        if y.ndim == 1 and len(pred_shape) == 2 and pred_shape[1] == 1:
            y = xp.reshape(y, (y.shape[0], 1))
        if tuple(y.shape) != tuple(pred_shape):
            raise ShapeError(
                f"{self.name}: targets have shape {tuple(y.shape)} but predictions have shape "
                f"{tuple(pred_shape)}; give one target per prediction (no broadcasting is done)"
            )
        return xp.astype(y, dtype) if y.dtype != dtype else y

    def validate(self, y: Array, backend: Backend) -> None:
        """Check target values (needs a device sync; done once per ``fit``, not per step)."""
        xp = backend.xp
        if not bool(xp.all(xp.isfinite(y))):
            raise InputError(f"{self.name}: targets contain NaN or inf")

    def weight_targets(self, y: Array, weights: Array, xp: Any) -> Array:
        """Prepared targets that carry per-sample weights ``weights`` (shape ``y.shape[:-1]``), so that
        the loss becomes ``(1/N) Σᵢ wᵢ lᵢ`` (Keras' ``sample_weight``/``class_weight``): scaled rows for
        the cross-entropies, which are linear in their targets; ``[y, w]`` along the last axis for MSE
        and BCE, whose ``value`` and ``gradient`` read both halves."""
        raise InputError(
            f"the loss {self.name} cannot take sample_weight or class_weight: a loss of your own takes them by "
            "defining weight_targets (see toolkit.losses.Loss.weight_targets)")

    def value(self, pred: Array, y: Array, xp: Any) -> Array:
        raise NotImplementedError

    def gradient(self, pred: Array, y: Array, xp: Any) -> Array:
        raise NotImplementedError

    def __call__(self, pred: Array, y: Any, backend: Backend | None = None) -> Array:
        """Loss of predictions against raw targets (checked), as a 0-d array."""
        from .config import get_backend

        backend = backend or get_backend()
        pred = backend.asarray(pred)
        y = self.prepare(tuple(pred.shape), y, backend, pred.dtype)
        self.validate(y, backend)
        return self.value(pred, y, backend.xp)

    def get_config(self) -> dict[str, Any]:
        return {}


class MeanSquaredError(Loss):
    """J = mean((ŷ − y)²) over every element.

    Example:
        >>> from toolkit import MeanSquaredError
        >>> float(MeanSquaredError()([[1.0], [3.0]], [[0.0], [1.0]]))
        2.5
    """

    name = "mse"
    output_pair = "identity_mse"

    def weight_targets(self, y: Array, weights: Array, xp: Any) -> Array:
        return ops.with_weights(y, weights, xp)  # J = mean(w (ŷ − y)²) (``toolkit.ops.losses.weighted_mse_value``)

    def value(self, pred: Array, y: Array, xp: Any) -> Array:
        if ops.is_weighted(pred, y):
            return ops.weighted_mse_value(pred, y, xp)
        return ops.mse_value(pred, y, xp)

    def gradient(self, pred: Array, y: Array, xp: Any) -> Array:
        if ops.is_weighted(pred, y):
            return ops.weighted_mse_grad(pred, y, xp)
        return ops.mse_grad(pred, y, xp)


class BinaryCrossEntropy(Loss):
    """J = −mean(y log ŷ + (1 − y) log(1 − ŷ)); targets in [0, 1].

    With ``from_logits=True`` the predictions are z (no sigmoid applied) and the stable
    form is used. After a sigmoid output layer the model uses the fused δ = ŷ − y, computed from
    the logits. Otherwise ŷ is clipped to [1e-7, 1 − 1e-7], and the gradient is the gradient of
    that clipped loss (the one reported): 0 where the clip acts.

    Example:
        >>> from toolkit import BinaryCrossEntropy
        >>> round(float(BinaryCrossEntropy()([[0.5]], [[1.0]])), 6)  # −log ½
        0.693147
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)
        self.output_pair = None if from_logits else "sigmoid_bce"

    def validate(self, y: Array, backend: Backend) -> None:
        super().validate(y, backend)
        xp = backend.xp
        if bool(xp.any(y < 0.0)) or bool(xp.any(y > 1.0)):
            raise InputError(
                f"{self.name}: targets must lie in [0, 1]; got values in "
                f"[{float(xp.min(y))}, {float(xp.max(y))}]"
            )

    def weight_targets(self, y: Array, weights: Array, xp: Any) -> Array:
        return ops.with_weights(y, weights, xp)  # J = mean(w·BCE(y)) (``toolkit.ops.losses.weighted_bce_value``)

    def value(self, pred: Array, y: Array, xp: Any) -> Array:
        if ops.is_weighted(pred, y):
            return ops.weighted_bce_logits_value(pred, y, xp) if self.from_logits else ops.weighted_bce_value(pred, y, xp)
        return ops.bce_logits_value(pred, y, xp) if self.from_logits else ops.bce_value(pred, y, xp)

    def gradient(self, pred: Array, y: Array, xp: Any) -> Array:
        if ops.is_weighted(pred, y):
            return ops.weighted_bce_logits_grad(pred, y, xp) if self.from_logits else ops.weighted_bce_grad(pred, y, xp)
        return ops.bce_logits_grad(pred, y, xp) if self.from_logits else ops.bce_grad(pred, y, xp)

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


class CategoricalCrossEntropy(Loss):
    """J = −(1/N) Σ y log softmax; targets are integer class labels (N,) or rows (N, C).

    Target rows may be one-hot, soft (label smoothing) or any non-negative weights (multi-hot,
    unnormalised): the gradient is the general ``ŷ·Σₖyₖ − y`` per row, which is ``ŷ − y`` when
    the row sums to 1. With ``from_logits=True`` the predictions are logits (log-sum-exp form).
    After a softmax output layer the model uses the fused δ. On probabilities (no logits) the
    loss clips ŷ to [1e-7, 1 − 1e-7] and its gradient is the clipped loss's: 0 where the clip acts.

    On sequence outputs (N, T, C) the targets are labels (N, T) or rows (N, T, C), and the mean
    runs over all N·T positions.

    Example:
        >>> from toolkit import CategoricalCrossEntropy
        >>> round(float(CategoricalCrossEntropy()([[0.25, 0.75]], [1])), 6)  # −log ¾
        0.287682
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)
        self.output_pair = None if from_logits else "softmax_ce"

    def prepare(self, pred_shape: tuple[int, ...], y: Any, backend: Backend, dtype: Any) -> Array:
        y = backend.asarray(y)
        if len(pred_shape) < 2:
            raise ShapeError(f"{self.name}: predictions must be (N, n_classes) or (N, T, n_classes); "
                             f"got {tuple(pred_shape)}")
        if y.ndim < len(pred_shape):  # labels, one per prediction
            return self._labels_to_rows(pred_shape, y, backend, dtype)
        return super().prepare(pred_shape, y, backend, dtype)

    def _labels_to_rows(self, pred_shape: tuple[int, ...], y: Array, backend: Backend, dtype: Any) -> Array:
        xp = backend.xp
        if not xp.isdtype(y.dtype, "integral"):
            raise InputError(
                f"{self.name}: targets of shape {tuple(y.shape)} must be integer class labels; got dtype {y.dtype} "
                "(cast with .astype(int) if they are whole numbers, or pass one-hot rows)"
            )
        if tuple(y.shape) != tuple(pred_shape[:-1]):
            raise ShapeError(f"{self.name}: {math.prod(y.shape)} labels for {math.prod(pred_shape[:-1])} predictions "
                             f"(labels of shape {tuple(y.shape)}, predictions of shape {tuple(pred_shape)}); give one "
                             f"label per prediction, shape {tuple(pred_shape[:-1])}"
                             + ("; for one label per sample, the model's output must be (N, n_classes): add Flatten "
                                "or GlobalAveragePooling2D before the last Dense layer" if y.ndim == 1 else ""))
        self._check_label_range(y, pred_shape[-1], xp)
        return ops.one_hot(y, pred_shape[-1], dtype, xp)

    def _check_label_range(self, labels: Array, n_classes: int, xp: Any) -> None:
        low, high = int(xp.min(labels)), int(xp.max(labels))
        if low < 0 or high >= n_classes:
            raise InputError(
                f"{self.name}: class labels must lie in [0, {n_classes}); "
                f"got labels from {low} to {high}"
            )

    def weight_targets(self, y: Array, weights: Array, xp: Any) -> Array:
        # −Σₖ wyₖ log ŷₖ = w·lᵢ, and the gradient ŷ·Σₖ wyₖ − wy = w(ŷ − y): the weights ride in the
        # targets exactly, through every backend's fused δ and compiled step, at no cost per step.
        return y * weights[..., None]

    def value(self, pred: Array, y: Array, xp: Any) -> Array:
        if self.from_logits:
            return ops.softmax_ce_logits_value(pred, y, xp)
        return ops.categorical_ce_value(pred, y, xp)

    def gradient(self, pred: Array, y: Array, xp: Any) -> Array:
        if self.from_logits:
            return ops.softmax_ce_logits_grad(pred, y, xp)
        return ops.categorical_ce_grad(pred, y, xp)

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossEntropy(CategoricalCrossEntropy):
    """Categorical cross-entropy with integer class labels as targets (Keras' name): labels (N,)
    for outputs (N, C), labels (N, T) for a sequence's (N, T, C), the mean over every position.
    The same loss and the same fused δ = ŷ − y as ``categorical_crossentropy``; only the targets'
    form is fixed, so one-hot rows are refused rather than read as labels.

    Example:
        >>> from toolkit import SparseCategoricalCrossEntropy
        >>> round(float(SparseCategoricalCrossEntropy()([[[0.25, 0.75], [0.5, 0.5]]], [[1, 0]])), 6)  # −(log ¾ + log ½)/2
        0.490415
    """

    name = "sparse_categorical_crossentropy"

    def prepare(self, pred_shape: tuple[int, ...], y: Any, backend: Backend, dtype: Any) -> Array:
        y = backend.asarray(y)
        if len(pred_shape) < 2:
            raise ShapeError(f"{self.name}: predictions must be (N, n_classes) or (N, T, n_classes); "
                             f"got {tuple(pred_shape)}")
        if y.ndim != len(pred_shape) - 1:
            raise ShapeError(
                f"{self.name}: targets are integer labels of shape {tuple(pred_shape[:-1])} (one per prediction); "
                f"got shape {tuple(y.shape)}"
                + ("; for one-hot rows use loss='categorical_crossentropy'" if y.ndim == len(pred_shape) else ""))
        return self._labels_to_rows(pred_shape, y, backend, dtype)


LOSSES: dict[str, type[Loss]] = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "categorical_crossentropy": CategoricalCrossEntropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossEntropy,
}
_NAMED_WITH_ARGS = {
    "bce_from_logits": (BinaryCrossEntropy, {"from_logits": True}),
    "softmax_cross_entropy": (CategoricalCrossEntropy, {"from_logits": True}),
}


def get_loss(loss: str | Loss) -> Loss:
    """A loss from its name (``"mse"``, ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
    ``"sparse_categorical_crossentropy"``, ``"bce_from_logits"``, ``"softmax_cross_entropy"``) or a ``Loss`` instance."""
    if isinstance(loss, Loss):
        return loss
    if loss in _NAMED_WITH_ARGS:
        cls, kwargs = _NAMED_WITH_ARGS[loss]
        return cls(**kwargs)
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; choose one of {sorted([*LOSSES, *_NAMED_WITH_ARGS])}")
    return LOSSES[loss]()
