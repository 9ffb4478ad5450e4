"""Learning-rate schedules: callables ``t -> lr``. Given to ``callbacks.LearningRateScheduler`` they are
called with the epoch (from 0); given as an optimizer's ``lr`` (``Adam(lr=WarmupCosine(...))``), with
the step (from 0), before every update. Each follows the PyTorch scheduler of the same name."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

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


@dataclass(frozen=True)
class WarmupCosine:
    """The transformer recipe, per step: η·(t + 1)/warmup for t < warmup, then a cosine from η down to
    η_min at ``total_steps``, then η_min (PyTorch's LinearLR warm-up followed by CosineAnnealingLR).

    Example:
        >>> from toolkit import Adam
        >>> from toolkit.schedules import WarmupCosine
        >>> schedule = WarmupCosine(lr=1e-3, warmup_steps=100, total_steps=1000)
        >>> [round(schedule(t), 6) for t in (0, 99, 550, 1000)]
        [1e-05, 0.001, 0.0005, 0.0]
        >>> optimizer = Adam(lr=schedule)
    """

    lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("warmup_steps", self.warmup_steps)
        if not self.total_steps > self.warmup_steps:
            raise InputError(f"total_steps must be > warmup_steps; got {self.total_steps!r} ≤ {self.warmup_steps!r}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(step - self.warmup_steps, self.total_steps - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


SCHEDULES: dict[str, type] = {cls.__name__: cls for cls in (StepDecay, ExponentialDecay, CosineDecay, Warmup, WarmupCosine)}


def to_config(schedule: Callable[[int], float]) -> dict[str, Any]:
    """A JSON-ready record of one of this module's schedules (nested ones too), for checkpoints; a
    plain function cannot be recorded, so it is an ``InputError`` naming the two ways out."""
    name = type(schedule).__name__
    if SCHEDULES.get(name) is not type(schedule):
        raise InputError(f"the learning-rate schedule {schedule!r} is a plain callable, which a checkpoint cannot "
                         "record; use a toolkit.schedules object, or save(..., include_optimizer=False)")
    values = {field.name: getattr(schedule, field.name) for field in fields(schedule)}  # type: ignore[arg-type]
    return {"schedule": name, **{key: to_config(value) if callable(value) else value for key, value in values.items()}}


def from_config(config: dict[str, Any]) -> Callable[[int], float]:
    """The schedule a ``to_config`` record describes."""
    settings = {key: from_config(value) if isinstance(value, dict) else value
                for key, value in config.items() if key != "schedule"}
    return SCHEDULES[config["schedule"]](**settings)
