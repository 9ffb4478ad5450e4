"""``BatchNorm`` and ``LayerNorm``: normalise, then scale and shift with learned ``γ`` and ``β``.

Convention: features on the last axis (a ``Dense`` output (N, C) or a channels-last image batch
(N, H, W, C)); ``γ``, ``β`` have shape (C,).

BatchNorm, over the m = N·H·W values of each channel (every axis but the last):

    μ = Σx / m,   σ² = Σ(x − μ)² / m,   x̂ = (x − μ) / √(σ² + ε),   y = γ x̂ + β
    backward:  dβ = Σ dy,   dγ = Σ dy ∘ x̂,   ∂J/∂x = γ / √(σ² + ε) · (dy − Σdy / m − x̂ ∘ Σ(dy ∘ x̂) / m)

training uses the batch's μ, σ² (biased); inference the running statistics, updated after each
training step as PyTorch does: ``running = (1 − momentum)·running + momentum·batch``, with the
unbiased variance σ²·m/(m − 1) in ``running_var``. In data-parallel training the sums run over
the global batch (one all-reduce each), so N processes compute what one process computes.

LayerNorm is the same normalisation over the last axis of each sample (C values), with no
running statistics: training and inference compute the same function.
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError
from ..validation import check_real
from .base import Array, Layer, Params, Scratch


class _Normalization(Layer):
    """γ and β of shape (C,), C the last axis; a shape-preserving layer."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = check_real("eps", eps, 0.0, low_open=True)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.input_shape[-1],), "beta": (self.input_shape[-1],)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        features = (self.input_shape[-1],)
        return {"gamma": rng.constant(features, 1.0, dtype), "beta": rng.constant(features, 0.0, dtype)}


class BatchNorm(_Normalization):
    """Batch normalisation over every axis but the last (features or channels).

    Args:
        momentum: weight of the batch statistics in the running ones (PyTorch's convention).
        eps: added to the variance before the square root.

    Example:
        >>> from toolkit import BatchNorm, Dense, Sequential
        >>> model = Sequential([Dense(4, input_dim=3), BatchNorm(), Dense(1)])
        >>> [name for name, _ in model.named_parameters()]
        ['0.W', '0.b', '1.gamma', '1.beta', '2.W', '2.b']
    """

    synchronizes_batch = True

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(eps)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0)

    def describe(self) -> str:
        return f"BatchNorm(momentum={self.momentum}, eps={self.eps})"

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.input_shape[-1],), "running_var": (self.input_shape[-1],)}

    def initial_state(self, rng: RandomSource, dtype: Any) -> Params:
        features = (self.input_shape[-1],)
        return {"running_mean": rng.constant(features, 0.0, dtype), "running_var": rng.constant(features, 1.0, dtype)}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        xp = self.backend.xp
        gamma, beta = params["gamma"], params["beta"]
        if not context.training:
            return (x - params["running_mean"]) / xp.sqrt(params["running_var"] + self.eps) * gamma + beta, None
        axes = tuple(range(x.ndim - 1))
        count = context.rows(x.shape[0]) * math.prod(x.shape[1:-1])  # m: values per channel
        if count < 2:
            raise InputError(
                f"{self.describe()} in training needs more than one value per feature to compute a variance; "
                f"got a batch of shape {tuple(x.shape)} ({count} value per feature): use a larger batch, or "
                "call the model in inference mode (predict, or forward(training=False))")
        mean = context.sum_over_processes(xp.sum(x, axis=axes)) / count  # μ
        centered = x - mean
        variance = context.sum_over_processes(xp.sum(centered * centered, axis=axes)) / count  # σ², biased
        inv_std = 1.0 / xp.sqrt(variance + self.eps)
        x_hat = centered * inv_std
        return gamma * x_hat + beta, (x_hat, inv_std, mean, variance, count, context)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp = self.backend.xp
        x_hat, inv_std, _, _, count, context = saved
        axes = tuple(range(grad_output.ndim - 1))
        d_beta = xp.sum(grad_output, axis=axes)  # dβ = Σ dy
        d_gamma = xp.sum(grad_output * x_hat, axis=axes)  # dγ = Σ dy ∘ x̂
        # Σ over the global batch: each process's dy is scaled by its share of the batch (its
        # loss is a mean over its rows), so the sums are taken in units of the global mean loss.
        share = context.share
        sum_dy = context.sum_over_processes(d_beta * share) / share
        sum_dy_x_hat = context.sum_over_processes(d_gamma * share) / share
        dx = params["gamma"] * inv_std * (grad_output - sum_dy / count - x_hat * (sum_dy_x_hat / count))
        return dx, {"gamma": d_gamma, "beta": d_beta}

    def next_state(self, params: Params, saved: Any) -> Params:
        _, _, mean, variance, count, _ = saved
        keep, take = 1.0 - self.momentum, self.momentum
        return {"running_mean": keep * params["running_mean"] + take * mean,
                "running_var": keep * params["running_var"] + take * variance * (count / (count - 1))}

    def get_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "eps": self.eps}


class LayerNorm(_Normalization):
    """Layer normalisation over the last axis of each sample.

    Example:
        >>> from toolkit import Dense, LayerNorm, Sequential
        >>> model = Sequential([Dense(4, input_dim=3), LayerNorm(), Dense(1)])
        >>> model.predict([[0.0, 1.0, 2.0]]).shape
        (1, 1)
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__(eps)

    def describe(self) -> str:
        return f"LayerNorm(eps={self.eps})"

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        # x̂ = (x − μ) / √(σ² + ε) with μ, σ² over each sample's features; y = γ x̂ + β
        y, x_hat, inv_std = self.backend.layer_norm(x, params["gamma"], params["beta"], self.eps)
        return y, ((x_hat, inv_std) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        x_hat, inv_std = saved
        # ∂J/∂x = (∂J/∂x̂ − mean(∂J/∂x̂) − x̂ ∘ mean(∂J/∂x̂ ∘ x̂)) / √(σ² + ε), ∂J/∂x̂ = dy ∘ γ, means over the features
        dx, d_gamma, d_beta = self.backend.layer_norm_backward(grad_output, x_hat, inv_std, params["gamma"])
        return dx, {"gamma": d_gamma, "beta": d_beta}

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps}
