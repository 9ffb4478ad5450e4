"""Learning-rate schedules: callables ``epoch -> lr`` (epochs count from 0), to pass to
``callbacks.LearningRateScheduler``. Each follows the PyTorch scheduler of the same name."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InputError


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{name} must be > 0; got {value!r}")


@dataclass(frozen=True)
class StepDecay:
    """η · γ^⌊epoch / step_size⌋ (PyTorch StepLR)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("step_size", self.step_size)

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class ExponentialDecay:
    """η · γ^epoch (PyTorch ExponentialLR)."""

    lr: float
    gamma: float

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("gamma", self.gamma)

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma**epoch


@dataclass(frozen=True)
class CosineDecay:
    """η_min + (η − η_min)(1 + cos(π · epoch / T)) / 2, then η_min (PyTorch CosineAnnealingLR)."""

    lr: float
    total_epochs: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("total_epochs", self.total_epochs)

    def __call__(self, epoch: int) -> float:
        progress = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class Warmup:
    """Linear warm-up from η/warmup_epochs to η over ``warmup_epochs``, then ``after(epoch − warmup)``."""

    after: Callable[[int], float]
    warmup_epochs: int

    def __post_init__(self) -> None:
        _positive("warmup_epochs", self.warmup_epochs)

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.after(0) * (epoch + 1) / self.warmup_epochs
        return self.after(epoch - self.warmup_epochs)
