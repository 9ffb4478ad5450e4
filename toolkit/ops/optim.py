"""Optimizer update rules on flat parameter buffers, written as PyTorch documents them
(torch.optim.SGD, Adam, AdamW, RMSprop), so the same hyper-parameters give the same trajectory.

Each rule is a pure function ``rule(param, grad, *state, *scalars, xp) -> (param, *state)`` that
returns new arrays; it never writes into its arguments, so it runs unchanged on immutable arrays
(JAX) and inside ``jax.jit``. ``RULES`` is the one table of rules: its order of state and scalar
names is the signature every backend kernel must have (the consistency test checks it). Per-step
quantities (bias corrections, the first momentum step) arrive as scalars computed on the host by
``toolkit.optimizers``, so a rule has no branch on the step count.

Every rule's first scalar is ``grad_scale`` s: the rule reads g = s·∇ (s = 1 but under global-norm
clipping), so clipping costs no pass of its own over the gradients: its scale rides into the update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Array = Any


CLIP_EPSILON = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient = max_norm / (norm + 1e-6), at most 1


def clip_gradients(grads: Array, clipping: tuple[str, float], segments: tuple[tuple[int, int], ...],
                   xp: Any) -> tuple[Array, Any]:
    """The flat gradients clipped before the update, as Keras names the three kinds, and the scale the
    update still has to apply (``grad_scale``): ``(g, s)`` stands for the gradients s·g.

        clipvalue v:        g ← clip(g, −v, v), element by element              (clip_grad_value_)
        global_clipnorm c:  g ← g · min(1, c / (‖g‖ + 1e-6)), ‖·‖ over all parameters (clip_grad_norm_)
                            returned as (g, that factor): the update multiplies, no pass here
        clipnorm c:         each parameter tensor p (a ``segments`` (offset, size) of the flat buffer)
                            on its own: g_p ← g_p · min(1, c / (‖g_p‖ + 1e-6))
    """
    kind, limit = clipping
    if kind == "clipvalue":
        return xp.clip(grads, -limit, limit), 1.0
    if kind == "global_clipnorm":  # ‖g‖² as one vecdot: a single pass, no temporary
        return grads, norm_scale(xp.vecdot(grads, grads), limit, xp)
    pieces = []
    for offset, size in segments:
        piece = grads[offset : offset + size]
        pieces.append(piece * norm_scale(xp.vecdot(piece, piece), limit, xp))
    return xp.concat(pieces), 1.0


def norm_scale(squared_norm: Array, limit: float, xp: Any) -> Array:
    """min(1, c / (‖g‖ + 1e-6)) from ‖g‖², as ``torch.nn.utils.clip_grad_norm_`` computes it."""
    return xp.clip(limit / (xp.sqrt(squared_norm) + CLIP_EPSILON), max=1.0)


def unfrozen(values: Array, frozen: Array, xp: Any) -> Array:
    """``values`` with the frozen entries set to 0 (an optimizer's moments of frozen parameters)."""
    return xp.where(frozen, xp.zeros_like(values), values)


def sgd(param: Array, grad: Array, grad_scale: float, lr: float, xp: Any) -> tuple[Array]:
    """θ ← θ − η g,  g = s ∇θ."""
    return (param - lr * (grad_scale * grad),)


def sgd_momentum(
    param: Array, grad: Array, velocity: Array, grad_scale: float, lr: float, momentum: float, carry: float, gain: float,
    nesterov: bool, weight_decay: float, xp: Any,
) -> tuple[Array, Array]:
    """g ← s∇θ + λθ;  v ← c v + k g;  θ ← θ − η (g + μ v if Nesterov else v).

    ``carry`` c and ``gain`` k are (0, 1) on the first step, so v ← g as PyTorch starts, and
    (μ, 1 − τ) after it (τ the dampening)."""
    g = grad_scale * grad + weight_decay * param
    v = carry * velocity + gain * g
    direction = g + momentum * v if nesterov else v
    return param - lr * direction, v


def adam(
    param: Array, grad: Array, m: Array, v: Array, grad_scale: float, step_size: float, beta1: float, beta2: float,
    eps: float, shrink: float, l2: float, sqrt_correction2: float, xp: Any,
) -> tuple[Array, Array, Array]:
    """Adam on g = s∇θ (L2 decay ``l2`` added to g) or AdamW (decoupled: θ ← θ·shrink, shrink = 1 − ηλ):
    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − η m̂ / (√v̂ + ε).

    Evaluated as PyTorch does, θ ← θ − (η / c₁) · m / (√v / √c₂ + ε) with cₖ = 1 − βₖᵗ
    (``step_size`` = η / c₁): the same number, with one division per element fewer."""
    p = param * shrink
    g = grad_scale * grad + l2 * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * (g * g)
    return p - step_size * (m / (xp.sqrt(v) / sqrt_correction2 + eps)), m, v


def rmsprop(
    param: Array, grad: Array, square_avg: Array, grad_scale: float, lr: float, alpha: float, eps: float, weight_decay: float,
    xp: Any,
) -> tuple[Array, Array]:
    """g = s∇θ + λθ;  a ← α a + (1 − α) g²;  θ ← θ − η g / (√a + ε)."""
    g = grad_scale * grad + weight_decay * param
    s = alpha * square_avg + (1.0 - alpha) * (g * g)
    return param - lr * g / (xp.sqrt(s) + eps), s


def adam_step_constants(lr: float, beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """(η / (1 − β₁ᵗ), √(1 − β₂ᵗ)): the bias corrections folded into two scalars."""
    return lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step)


# The scalars set by an optimizer's configuration, not by the step: a compiled step (JAX) builds them
# into its program as constants (a new program if one is changed), the others arrive traced.
SETTINGS = frozenset({"momentum", "nesterov", "weight_decay", "beta1", "beta2", "eps", "l2", "alpha"})


class Zero:
    """A setting that is exactly 0, as a compiled step passes it to a rule: ``a · 0`` is 0 and
    ``b + 0`` is b, so the term is not computed at all. XLA keeps ``0 · p`` (it is NaN where p is
    infinite), and Adam's ``g + λp`` with λ = 0 then read every parameter twice more per step (its m
    and v loops each read p for it): 1.6 MB of config a's 19 MB.

        >>> ZERO * 3.0, 2.0 + ZERO, 1.0 - ZERO, ZERO - 2.0
        (ZERO, 2.0, 1.0, -2.0)
    """

    def __repr__(self) -> str:
        return "ZERO"

    def __mul__(self, other: Any) -> Zero:
        return self

    __rmul__ = __mul__

    def __add__(self, other: Any) -> Any:
        return other

    __radd__ = __add__

    def __rsub__(self, other: Any) -> Any:
        return other

    def __sub__(self, other: Any) -> Any:
        return -other

    def __neg__(self) -> Zero:
        return self

    def __float__(self) -> float:
        return 0.0


ZERO = Zero()


@dataclass(frozen=True)
class UpdateRule:
    """One optimizer update: its state arrays and scalars, in signature order, and its reference."""

    name: str
    state: tuple[str, ...]
    scalars: tuple[str, ...]
    reference: Callable[..., tuple[Array, ...]]


RULES: dict[str, UpdateRule] = {
    rule.name: rule for rule in (
        UpdateRule("sgd", (), ("grad_scale", "lr"), sgd),
        UpdateRule("sgd_momentum", ("velocity",),
                   ("grad_scale", "lr", "momentum", "carry", "gain", "nesterov", "weight_decay"), sgd_momentum),
        UpdateRule("adam", ("m", "v"),
                   ("grad_scale", "step_size", "beta1", "beta2", "eps", "shrink", "l2", "sqrt_correction2"), adam),
        UpdateRule("rmsprop", ("square_avg",), ("grad_scale", "lr", "alpha", "eps", "weight_decay"), rmsprop),
    )
}
