"""Optimizers over a model's flat parameter buffer: one update call per step for the whole model.

Update rules follow PyTorch's documentation (see ``toolkit.ops.optim``); the backend may run
them as one fused kernel.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from . import schedules
from .backend import Backend
from .errors import InputError
from .ops import optim
from .validation import check_real

Array = Any


_STATE_NAMES = {name: rule.state for name, rule in optim.RULES.items()}


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    return check_real(name, value, low=0.0, low_open=not allow_zero)


def _learning_rate(lr: Any, learning_rate: Any, default: float) -> Any:
    """``lr`` or Keras' spelling ``learning_rate`` (one of them), else the default; a schedule's
    checkpoint record (``toolkit.schedules.to_config``) becomes the schedule again."""
    if lr is not None and learning_rate is not None:
        raise InputError(f"give lr or learning_rate, not both (got lr={lr!r}, learning_rate={learning_rate!r})")
    chosen = lr if lr is not None else learning_rate
    if isinstance(chosen, dict):
        return schedules.from_config(chosen)
    return default if chosen is None else chosen


def _check_fraction(name: str, value: float) -> float:
    """A decay factor in [0, 1) (β₁, β₂, α)."""
    number = check_real(name, value)
    if not 0.0 <= number < 1.0:
        raise InputError(f"{name} must lie in [0, 1); got {value!r}")
    return number


class Optimizer:
    """Base class. ``step(params, grads)`` returns the updated flat ``params``.

    On mutable backends the update is written into ``params`` (and the returned array is
    ``params`` itself); on immutable ones (JAX) a new array is returned, and the state arrays
    are replaced. Callers always keep the returned array. An optimizer belongs to one model:
    its moments and step count describe that model's parameters.

    ``lr`` may be changed between steps (learning-rate schedules do so); ``base_lr`` keeps
    the value it was created with. ``lr`` may also be a schedule of the step, a callable ``step -> lr``
    (``toolkit.schedules.WarmupCosine``, or any function): it sets ``lr`` before every update, as Keras'
    ``LearningRateSchedule`` does (``callbacks.LearningRateScheduler`` sets it per epoch instead).

    Gradient clipping, Keras' keyword arguments of every optimizer (one of them at most):
    ``clipvalue`` (each element into [−v, v]), ``global_clipnorm`` (the gradient of all parameters
    scaled to norm ≤ c) or ``clipnorm`` (each parameter tensor's gradient to norm ≤ c); PyTorch's
    ``clip_grad_value_``/``clip_grad_norm_`` before the step (``toolkit.ops.optim.clip_gradients``).
    The model's ``flat_grads`` keep the unclipped gradients.
    """

    name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float | Callable[[int], float], clipnorm: float | None = None,
                 global_clipnorm: float | None = None, clipvalue: float | None = None) -> None:
        # A callable lr is a schedule of the step (0, 1, …): evaluated on the host before every update.
        if callable(lr):
            self.schedule: Callable[[int], float] | None = lr
            self.lr = self.base_lr = self._scheduled(0)
        else:
            self.schedule = None
            self.lr = self.base_lr = _check_positive("learning rate", lr)
        given = {name: value for name, value in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm),
                                                  ("clipvalue", clipvalue)) if value is not None}
        if len(given) > 1:
            raise InputError(f"give one of clipnorm, global_clipnorm and clipvalue, not {' and '.join(given)}")
        # (kind, limit) or None; the limit must be > 0 (a zero limit would erase every gradient)
        self.clipping: tuple[str, float] | None = next(
            ((name, _check_positive(name, value)) for name, value in given.items()), None)
        self.segments: tuple[tuple[int, int], ...] = ()  # (offset, size) of each parameter tensor, from bind
        self.frozen: Array | None = None  # a boolean mask of the frozen parameters, set by the model, or None
        self.iterations = 0
        # name → flat array like the parameters; after a compiled step (JAX) made when first read (``toolkit.deferred``)
        self.state: dict[str, Array] = {}
        self.backend: Backend | None = None
        self._owner: Any = None

    def __repr__(self) -> str:
        config = {**self.get_config(), **({"lr": self.schedule} if self.schedule is not None else {})}
        arguments = ", ".join(f"{key}={value!r}" for key, value in config.items())
        return f"{type(self).__name__}({arguments})"

    def bind(self, params: Array, backend: Backend, owner: object | None = None) -> None:
        """Allocate state like ``params`` (zeros), once, before the first step.

        ``owner`` is the model this optimizer trains; binding it to a second live model is an
        ``InputError``, since the two would share moments and a step count."""
        if owner is not None:
            current = self._owner() if self._owner is not None else None
            if current is not None and current is not owner:
                raise InputError(
                    f"this {type(self).__name__} already trains another model, and would mix the two "
                    f"models' moments and step counts; give each model its own optimizer "
                    f"(e.g. compile(optimizer={type(self).__name__}(lr={self.base_lr})))"
                )
            self._owner = weakref.ref(owner)
        self.backend = backend
        table = getattr(owner, "table", None)
        self.segments = (tuple((slot.offset, slot.size) for slot in table.slots) if table is not None
                         else ((0, int(params.shape[0])),))
        for name in self.state_names:
            if name not in self.state or tuple(self.state[name].shape) != tuple(params.shape):
                self.state[name] = backend.zeros(tuple(params.shape), params.dtype)

    def _scheduled(self, step: int) -> float:
        assert self.schedule is not None
        value = self.schedule(step)
        try:
            return check_real("learning rate", value, low=0.0)  # a cosine may end at 0
        except InputError:
            raise InputError(f"{type(self).__name__}: the learning-rate schedule gave {value!r} at step {step}; it must "
                             "return a finite learning rate ≥ 0") from None

    @property
    def compiled_clipping(self) -> tuple[Any, ...] | None:
        """The clipping a compiled step applies: (kind, limit, segments), or None."""
        return None if self.clipping is None else (*self.clipping, self.segments)

    def prepare(self, step: int, grad_scale: Any = 1.0) -> tuple[str, tuple[Any, ...]]:
        """The rule and scalars of update number ``step`` (from 1), after setting ``lr`` from the
        schedule, if there is one (called with the step count before the update: 0, 1, …)."""
        if self.schedule is not None:
            self.lr = self._scheduled(step - 1)
        return self.rule(step, grad_scale)

    def step(self, params: Array, grads: Array) -> Array:
        """One update; returns the new parameters (``params`` itself on mutable backends)."""
        if self.backend is None:
            raise RuntimeError(f"{self.name}: bind(params, backend) must be called before step()")
        self.iterations += 1
        if self.frozen is not None or self.clipping is not None or self.schedule is not None:
            return self._controlled_step(params, grads)
        rule, scalars = self.rule(self.iterations)  # no controls: nothing else on the hot path
        return self._update(rule, scalars, params, grads)

    def _update(self, rule: str, scalars: tuple[Any, ...], params: Array, grads: Array) -> Array:
        names = _STATE_NAMES[rule]
        current = tuple([self.state[name] for name in names])
        params, state = self.backend.update(rule, params, grads, current, scalars)  # type: ignore[union-attr]
        if state is not current:  # immutable arrays: the new state replaces the old (kernels write in place)
            self.state.update(zip(names, state, strict=True))
        return params

    def _controlled_step(self, params: Array, grads: Array) -> Array:
        """The step with frozen parameters, clipping or a schedule."""
        assert self.backend is not None
        xp, frozen = self.backend.xp, self.frozen
        if frozen is not None:  # frozen parameters: no gradient (also out of a global norm), kept as they are
            grads = optim.unfrozen(grads, frozen, xp)
            kept = xp.where(frozen, params, xp.zeros_like(params))
        grad_scale: Any = 1.0
        if self.clipping is not None:  # a global norm's factor is applied by the update itself
            grads, grad_scale = self.backend.clip_gradients(grads, self.clipping, self.segments)
        rule, scalars = self.prepare(self.iterations, grad_scale)
        params = self._update(rule, scalars, params, grads)
        if frozen is not None:  # bitwise as before (weight decay would shrink them), and no moments
            params = self.backend.assign(params, xp.where(frozen, kept, params))
            for name in _STATE_NAMES[rule]:
                self.state[name] = self.backend.assign(self.state[name], optim.unfrozen(self.state[name], frozen, xp))
        return params

    def rule(self, step: int, grad_scale: Any = 1.0) -> tuple[str, tuple[Any, ...]]:
        """The update rule (a key of ``toolkit.ops.optim.RULES``) and its scalars for ``step``, the
        gradients to be multiplied by ``grad_scale`` (a global clipping norm's factor)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"lr": self._lr_config(), **self._clipping_config()}

    def _lr_config(self) -> Any:
        return self.base_lr if self.schedule is None else schedules.to_config(self.schedule)

    def _clipping_config(self) -> dict[str, float]:
        return {} if self.clipping is None else {self.clipping[0]: self.clipping[1]}

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.get_config(), "lr": self.lr,
                "iterations": self.iterations, "state": dict(self.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["name"] != self.name:
            raise InputError(f"optimizer state is for {state['name']!r}, not {self.name!r}")
        self.lr, self.iterations = float(state["lr"]), int(state["iterations"])
        self.state = dict(state["state"])


class SGD(Optimizer):
    """Stochastic gradient descent θ ← θ − η ∇θ, with optional momentum, Nesterov and L2 decay.

    Example:
        >>> from toolkit import SGD
        >>> SGD(learning_rate=0.1, momentum=0.9)
        SGD(lr=0.1, momentum=0.9, nesterov=False, dampening=0.0, weight_decay=0.0)
    """

    name = "sgd"

    def __init__(self, lr: float | Callable[[int], float] | None = None, momentum: float = 0.0, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0, *, learning_rate: float | None = None,
                 **clipping: float | None) -> None:
        super().__init__(_learning_rate(lr, learning_rate, 0.01), **clipping)
        self.momentum = _check_positive("momentum", momentum, allow_zero=True)
        self.dampening = _check_positive("dampening", dampening, allow_zero=True)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise InputError("Nesterov momentum needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)
        # Weight decay without momentum runs the momentum rule with μ = 0: v = g + λθ.
        self.state_names = ("velocity",) if self.momentum or self.weight_decay else ()

    def rule(self, step: int, grad_scale: Any = 1.0) -> tuple[str, tuple[Any, ...]]:
        if not self.state_names:
            return "sgd", (grad_scale, self.lr)
        carry, gain = (0.0, 1.0) if step == 1 else (self.momentum, 1.0 - self.dampening)
        return "sgd_momentum", (grad_scale, self.lr, self.momentum, carry, gain, self.nesterov, self.weight_decay)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self._lr_config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "dampening": self.dampening, "weight_decay": self.weight_decay, **self._clipping_config()}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is L2 added to the gradient.

    Example:
        >>> from toolkit import Adam, Dense, Sequential
        >>> model = Sequential([Dense(1, input_dim=2)])
        >>> model.compile(loss="mse", optimizer=Adam(lr=1e-3))
        >>> model.optimizer
        Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0)
    """

    name = "adam"
    state_names = ("m", "v")
    decoupled = False

    def __init__(self, lr: float | Callable[[int], float] | None = None, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, *, learning_rate: float | None = None,
                 **clipping: float | None) -> None:
        super().__init__(_learning_rate(lr, learning_rate, 1e-3), **clipping)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def rule(self, step: int, grad_scale: Any = 1.0) -> tuple[str, tuple[Any, ...]]:
        step_size, sqrt_correction2 = optim.adam_step_constants(self.lr, self.beta1, self.beta2, step)
        shrink = 1.0 - self.lr * self.weight_decay if self.decoupled else 1.0
        l2 = 0.0 if self.decoupled else self.weight_decay
        return "adam", (grad_scale, step_size, self.beta1, self.beta2, self.eps, shrink, l2, sqrt_correction2)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self._lr_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, **self._clipping_config()}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): θ ← θ (1 − ηλ) before the Adam step.

    Example:
        >>> from toolkit import AdamW
        >>> AdamW(lr=1e-3, weight_decay=0.01).weight_decay
        0.01
    """

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float | Callable[[int], float] | None = None, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, learning_rate: float | None = None,
                 **clipping: float | None) -> None:
        super().__init__(_learning_rate(lr, learning_rate, 1e-3), beta1, beta2, eps, weight_decay, **clipping)


class RMSProp(Optimizer):
    """RMSProp: s ← α s + (1 − α) g²; θ ← θ − η g / (√s + ε).

    Example:
        >>> from toolkit import RMSProp
        >>> RMSProp(lr=0.01).name
        'rmsprop'
    """

    name = "rmsprop"
    state_names = ("square_avg",)

    def __init__(self, lr: float | Callable[[int], float] | None = None, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, *, learning_rate: float | None = None,
                 **clipping: float | None) -> None:
        super().__init__(_learning_rate(lr, learning_rate, 1e-2), **clipping)
        self.alpha = _check_fraction("alpha", alpha)
        self.eps = _check_positive("eps", eps)
        self.weight_decay = _check_positive("weight_decay", weight_decay, allow_zero=True)

    def rule(self, step: int, grad_scale: Any = 1.0) -> tuple[str, tuple[Any, ...]]:
        return "rmsprop", (grad_scale, self.lr, self.alpha, self.eps, self.weight_decay)

    def get_config(self) -> dict[str, Any]:
        return {"lr": self._lr_config(), "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay,
                **self._clipping_config()}


# Each concrete optimizer has a default for every argument (the base class has none for lr).
OPTIMIZERS: dict[str, type[SGD] | type[Adam] | type[RMSProp]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW,
                                                                  "rmsprop": RMSProp}


def get_optimizer(optimizer: str | Optimizer) -> Optimizer:
    """An optimizer from its name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``, defaults) or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[optimizer]()
