"""Optimizers over a model's flat parameter buffer: one update call per step for the whole model.

Update rules follow PyTorch's documentation (see ``toolkit.ops.optim``); the backend may run
them as one fused kernel.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import Backend
from .errors import InputError

Array = Any


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be {'≥' if allow_zero else '>'} 0; got {value!r}")
    return float(value)


class Optimizer:
    """Base class. ``step(params, grads)`` updates the flat ``params`` in place.

    ``lr`` may be changed between steps (learning-rate schedules do so); ``base_lr`` keeps
    the value it was created with.
    """

    name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = self.base_lr = _check_positive("learning rate", lr)
        self.iterations = 0
        self.state: dict[str, Array] = {}
        self.backend: Backend | None = None

    def bind(self, params: Array, backend: Backend) -> None:
        """Allocate state like ``params`` (zeros), once, before the first step."""
        self.backend = backend
        for name in self.state_names:
            if name not in self.state or self.state[name].shape != params.shape:
                self.state[name] = backend.xp.zeros_like(params)

    def step(self, params: Array, grads: Array) -> None:
        if self.backend is None:
            raise RuntimeError(f"{self.name}: bind(params, backend) must be called before step()")
        self.iterations += 1
        self._update(params, grads)

    def _update(self, params: Array, grads: Array) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.base_lr}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.get_config(), "lr": self.lr,
                "iterations": self.iterations, "state": dict(self.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["name"] != self.name:
            raise InputError(f"optimizer state is for {state['name']!r}, not {self.name!r}")
        self.lr, self.iterations = float(state["lr"]), int(state["iterations"])
        self.state = dict(state["state"])


class SGD(Optimizer):
    """Stochastic gradient descent θ ← θ − η ∇θ, with optional momentum, Nesterov and L2 decay."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        self.dampening = _check_positive("dampening", dampening, allow_zero=True)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise InputError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.nesterov = nesterov
        self.state_names = ("velocity",) if self.momentum else ()

    def _update(self, params: Array, grads: Array) -> None:
        if not self.momentum and not self.weight_decay:
            self.backend.sgd_update(params, grads, self.lr)
            return
        velocity = self.state.get("velocity")
        if velocity is None:  # weight decay without momentum: a velocity-free step
            grads = grads + self.weight_decay * params
            self.backend.sgd_update(params, grads, self.lr)
            return
        self.backend.sgd_momentum_update(params, grads, velocity, self.lr, self.momentum,
                                         self.dampening, self.nesterov, self.weight_decay, self.iterations)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.base_lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "dampening": self.dampening, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is L2 added to the gradient."""

    name = "adam"
    state_names = ("m", "v")
    decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise InputError(f"{label} must lie in [0, 1); got {beta!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def _update(self, params: Array, grads: Array) -> None:
        self.backend.adam_update(params, grads, self.state["m"], self.state["v"], self.lr, self.beta1,
                                 self.beta2, self.eps, self.weight_decay, self.decoupled, self.iterations)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.base_lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ (1 − ηλ) before the Adam step."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
        super().__init__(lr, beta1, beta2, eps, weight_decay)


class RMSProp(Optimizer):
    """RMSProp: s ← α s + (1 − α) g²; θ ← θ − η g / (√s + ε)."""

    name = "rmsprop"
    state_names = ("square_avg",)

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        if not 0.0 <= alpha < 1.0:
            raise InputError(f"alpha must lie in [0, 1); got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def _update(self, params: Array, grads: Array) -> None:
        self.backend.rmsprop_update(params, grads, self.state["square_avg"], self.lr, self.alpha,
                                    self.eps, self.weight_decay, self.iterations)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self.base_lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp}


def get_optimizer(optimizer: str | Optimizer) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[optimizer]()
