"""PyTorch backend: torch tensors through ``array_api_compat.torch``, with no autograd recording
(the toolkit does its own backward pass; no tensor it makes requires grad).

``torch`` (CPU), ``torch:cuda``, ``torch:cuda:1``. The hot ops are PyTorch's own kernels, written
into the model's buffers (``out=`` and in-place methods): the element-wise backward passes are the
ATen kernels PyTorch's autograd itself calls (``tanh_backward``, ``threshold_backward``, …), so the
benchmark's "toolkit on torch" row shows what the toolkit's own layer code costs on the same kernels
as PyTorch eager. Steady-state steps write into the model's scratch and flat buffers.

Tensors already on the model's device and of its dtype are used as they are, without a copy.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp_torch
import numpy as np
import torch
import torch.nn.functional as F

from toolkit.backend import Backend
from toolkit.errors import BackendError, InputError
from toolkit.ops.activations import LEAKY_RELU_SLOPE, ActivationFunction
from toolkit.ops.losses import is_weighted

from .host import HostRandom, UpdateScratch, host_array

aten = torch.ops.aten


class TorchBackend(Backend):
    name = "torch"
    reuses_buffers = True

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        try:
            target = torch.device(device or "cpu")
        except RuntimeError as error:
            raise BackendError(f"backend 'torch' has no device {device!r} ({error}); use 'torch' or 'torch:cuda[:N]'") from error
        if target.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(
                "backend 'torch:cuda' cannot reach a CUDA GPU (torch.cuda.is_available() is False; the installed "
                f"torch {torch.__version__} may be a CPU build); use 'torch' for the CPU"
            )
        if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
            raise BackendError(f"backend 'torch' has {torch.cuda.device_count()} CUDA device(s); {target} does not exist")
        if target.type not in ("cpu", "cuda"):
            raise BackendError(f"backend 'torch' runs on 'cpu' or 'cuda[:N]'; got {device!r}")
        self._update_scratch = UpdateScratch(torch.empty_like)
        self.reads_are_cheap = target.type == "cpu"  # on CUDA a read waits for the GPU
        super().__init__(xp_torch, target, fused)

    # -- arrays and transfers -------------------------------------------------------------
    low_precision = ("bfloat16", "float16")

    def low_precision_dtype(self, name: str) -> Any:
        return getattr(torch, name)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.device == self.device

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if isinstance(x, torch.Tensor):
            if x.requires_grad:
                host_array(x, self.name)  # raises the InputError that says to detach
            return x.to(device=self.device, dtype=dtype or x.dtype)  # no copy when both already match
        host = host_array(x, self.name)
        if host.dtype.kind not in "fiub":
            raise InputError(f"array of dtype {host.dtype} is not supported by backend {self.name!r}")
        return torch.as_tensor(host, device=self.device, dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Any:
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def empty(self, shape: tuple[int, ...] | int, dtype: Any) -> Any:
        return torch.empty(shape, dtype=dtype, device=self.device)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- hot ops: PyTorch's kernels into the model's buffers ---------------------------------
    def matmul(self, a, b, out=None):
        return torch.matmul(a, b, out=out)

    def scatter_add_rows(self, ids, values, n_rows):
        out = torch.zeros((n_rows, values.shape[1]), dtype=values.dtype, device=values.device)
        return out.index_add_(0, ids, values)

    def sum_rows(self, x, out=None):
        return torch.sum(x, dim=0, out=out)

    def bias_activation(self, z, b, activation: ActivationFunction, out=None):
        z.add_(b)  # Z = aW + b, in the product's own buffer
        name = activation.name
        if name == "identity":
            return z, z
        a = torch.empty_like(z) if out is None else out
        if name == "relu":
            torch.clamp_min(z, 0.0, out=a)  # NaN propagates, as in the reference
        elif name == "sigmoid":
            torch.sigmoid(z, out=a)
        elif name == "tanh":
            torch.tanh(z, out=a)
        elif name == "leaky_relu":
            a.copy_(F.leaky_relu(z, LEAKY_RELU_SLOPE))
        elif name == "gelu":
            aten.gelu.out(z, approximate="tanh", out=a)
        elif name == "silu":
            aten.silu.out(z, out=a)
        elif name == "elu":
            aten.elu.out(z, out=a)
        elif name == "softmax":  # the whole row at once
            aten._softmax.out(z, -1, False, out=a)
        else:  # softplus: PyTorch's switches to z past a threshold; the reference is exact everywhere
            a.copy_(activation.forward(z, self.xp))
        return z, a

    def activation_backward(self, da, z, a, activation: ActivationFunction, out=None, db_out=None):
        dz = torch.empty_like(z) if out is None else out
        name = activation.name
        if name == "relu":
            aten.threshold_backward.grad_input(da, z, 0.0, grad_input=dz)
        elif name == "sigmoid":
            aten.sigmoid_backward.grad_input(da, a, grad_input=dz)
        elif name == "tanh":
            aten.tanh_backward.grad_input(da, a, grad_input=dz)
        elif name == "leaky_relu":
            aten.leaky_relu_backward.grad_input(da, z, LEAKY_RELU_SLOPE, False, grad_input=dz)
        elif name == "identity":
            dz.copy_(da)
        elif name == "gelu":
            aten.gelu_backward.grad_input(da, z, approximate="tanh", grad_input=dz)
        elif name == "silu":
            aten.silu_backward.grad_input(da, z, grad_input=dz)
        elif name == "elu":
            aten.elu_backward.grad_input(da, 1.0, 1.0, 1.0, False, z, grad_input=dz)
        else:
            dz.copy_(activation.backward(da, z, a, self.xp))
        return dz, torch.sum(dz, dim=0, out=db_out)

    def output_delta(self, pair: str, z, a, y, out=None):
        if is_weighted(z, y):  # targets carrying sample weights: the reference's formulas
            return super().output_delta(pair, z, a, y)
        delta = torch.empty_like(z) if out is None else out
        if pair == "sigmoid_bce":
            loss = F.binary_cross_entropy_with_logits(z, y)  # mean over every element, from the logits
            torch.sub(a, y, out=delta).div_(z.numel())
        elif pair == "softmax_ce":
            loss = F.cross_entropy(z, y)  # y as class probabilities: −Σ y log softmax(z) / N, any row sums
            torch.mul(a, y.sum(dim=-1, keepdim=True), out=delta).sub_(y).div_(z.shape[0])
        elif pair == "identity_mse":
            loss = F.mse_loss(a, y)
            torch.sub(a, y, out=delta).mul_(2.0 / z.numel())
        else:
            return super().output_delta(pair, z, a, y)
        return loss, delta

    # -- optimizer rules in place -----------------------------------------------------------
    def register_kernels(self) -> None:
        self.update_kernels = {"sgd": self._sgd, "sgd_momentum": self._sgd_momentum, "adam": self._adam,
                               "rmsprop": self._rmsprop}

    # ``grad_scale``: 1.0, or a global clipping norm's factor (a 0-d tensor: read on the host, it
    # would wait for the device every step); the product only when it is not exactly 1.
    @staticmethod
    def _scaled(grad: Any, grad_scale: Any) -> Any:
        return grad if isinstance(grad_scale, float) and grad_scale == 1.0 else grad * grad_scale

    def _sgd(self, param, grad, grad_scale, lr) -> None:
        param.sub_(torch.mul(self._scaled(grad, grad_scale), lr, out=self._update_scratch.like(param)))

    def _sgd_momentum(self, param, grad, velocity, grad_scale, lr, momentum, carry, gain, nesterov, weight_decay) -> None:
        grad = self._scaled(grad, grad_scale)
        g = torch.add(grad, param, alpha=weight_decay, out=self._update_scratch.like(param)) if weight_decay else grad
        velocity.mul_(carry).add_(g, alpha=gain)  # v ← c v + k g
        if nesterov:
            param.sub_(g.add_(velocity, alpha=momentum) if weight_decay else torch.add(g, velocity, alpha=momentum), alpha=lr)
        else:
            param.sub_(velocity, alpha=lr)

    def _adam(self, param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2) -> None:
        if shrink != 1.0:
            param.mul_(shrink)
        grad = self._scaled(grad, grad_scale)
        g = grad.add(param, alpha=l2) if l2 else grad
        m.mul_(beta1).add_(g, alpha=1.0 - beta1)  # m ← β₁m + (1−β₁)g
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)  # v ← β₂v + (1−β₂)g²
        denominator = torch.sqrt(v, out=self._update_scratch.like(param)).div_(sqrt_correction2).add_(eps)
        param.addcdiv_(m, denominator, value=-step_size)  # θ ← θ − (η / c₁) · m / (√v / √c₂ + ε)

    def _rmsprop(self, param, grad, square_avg, grad_scale, lr, alpha, eps, weight_decay) -> None:
        grad = self._scaled(grad, grad_scale)
        g = grad.add(param, alpha=weight_decay) if weight_decay else grad
        square_avg.mul_(alpha).addcmul_(g, g, value=1.0 - alpha)
        denominator = torch.sqrt(square_avg, out=self._update_scratch.like(param)).add_(eps)
        param.addcdiv_(g, denominator, value=-lr)
