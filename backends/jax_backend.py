"""JAX backend: immutable arrays, and whole training steps compiled by ``jax.jit``.

JAX arrays cannot be written in place, so this backend sets ``mutable = False``: the model replaces
its flat buffers after each step instead of writing into them (``Backend.assign`` returns the new
array), and every op returns new arrays (the references of ``toolkit.ops``). For speed, the
toolkit's own pass — the engine's forward loop, the δ terms, the layers' explicit backward, and the
optimizer's update rule, not ``jax.grad`` — is traced once per model and batch shape and compiled
into one XLA program (``compile_step``); ``compile_pass`` compiles the gradient pass alone, for
``compute_gradients``, data-parallel and hand-written loops.

``jax`` (CPU, the default) or ``jax:gpu`` / ``jax:gpu:1`` / ``jax:cuda``. Loading it turns on
``jax_enable_x64`` for the process, so float64 models are float64 (JAX's default is 32-bit only).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.backend import Backend
from toolkit.context import INFERENCE, PassContext
from toolkit.engine import Plan, forward_pass, gradient_pass
from toolkit.errors import BackendError
from toolkit.ops.optim import RULES

from .host import HostRandom, host_array

# Compiled functions by the structure they trace (layer configs and shapes, pair, loss, dtype, device):
# two models of one architecture share them, so each compiles once per batch shape (hyper-parameter
# searches and test suites build many). Bounded: the oldest are dropped.
_COMPILED: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_COMPILED_ENTRIES = 64


def _settings(layer: Any) -> tuple[Any, ...]:
    """Everything a layer's trace can depend on: its plain attributes (a layer holds no arrays),
    and those of the layers nested in it."""
    found = []
    for name, value in sorted(vars(layer).items()):
        if isinstance(value, (int, float, str, bool, tuple, type(None))):
            found.append((name, value))
        elif hasattr(value, "code") and hasattr(value, "name"):  # an ActivationFunction
            found.append((name, value.name))
    if hasattr(layer, "sublayers"):
        found.append(("sublayers", _structure(layer.sublayers(), None)))
    return tuple(found)


def _structure(layers: Any, device: Any, *extra: Any) -> tuple[Any, ...]:
    return (tuple((type(layer).__module__, type(layer).__qualname__, _settings(layer)) for layer in layers),
            str(device), *extra)


def _cached(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    found = _COMPILED.get(key)
    if found is None:
        found = _COMPILED[key] = make()
        while len(_COMPILED) > _COMPILED_ENTRIES:
            _COMPILED.popitem(last=False)
    return found


class JaxBackend(Backend):
    name = "jax"
    mutable = False

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        jax.config.update("jax_enable_x64", True)
        platform, _, index = (device or "cpu").partition(":")
        platform = {"cuda": "gpu"}.get(platform, platform)
        try:
            devices = jax.devices(platform)
        except RuntimeError as error:
            raise BackendError(
                f"backend 'jax' cannot reach a {platform!r} device ({error}); use 'jax' for the CPU, or "
                "install a CUDA build of jax (pip install 'jax[cuda12]') on a machine with an NVIDIA GPU"
            ) from error
        number = int(index) if index else 0
        if not 0 <= number < len(devices):
            raise BackendError(f"backend 'jax' has {len(devices)} {platform} device(s); device {number} does not exist")
        super().__init__(jnp, devices[number], fused)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, jax.Array) and self.device in x.devices()

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if not isinstance(x, jax.Array):
            x = jnp.asarray(host_array(x, self.name))
        x = jax.device_put(x, self.device)
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Any:
        return jnp.zeros(shape, dtype=dtype, device=self.device)

    def assign(self, target: Any, value: Any) -> Any:
        return value  # immutable: the new array is the new state

    def synchronize(self) -> None:
        jax.block_until_ready(jnp.zeros((), device=self.device))

    # -- compiled passes -------------------------------------------------------------------
    def _gradient_function(self, plan: Plan) -> Callable[..., Any]:
        """The engine's pass as a pure function of (flat params, flat state, x, y, dropout key),
        ready to trace; it returns (loss, ŷ, flat gradients, new flat state)."""
        none = [None] * len(plan.layers)
        no_slots: list[dict[str, Any]] = [{} for _ in plan.layers]
        has_state = bool(plan.state_table.size)

        def gradients(flat: Any, state: Any, x: Any, y: Any, key: Any) -> tuple[Any, Any, Any, Any]:
            context = PassContext(training=True, random_key=key)
            loss, output, grads, new_state = gradient_pass(plan, self, plan.table.views_with(plan.state_table, flat, state, jnp),
                                                           x, y, context, none, no_slots, state if has_state else None)
            return loss, output, plan.table.gather(grads, flat, jnp), state if new_state is None else new_state

        return gradients

    def compile_forward(self, layers: Any, table: Any, state_table: Any) -> Callable[..., Any] | None:
        none = [None] * len(layers)

        def forward(flat: Any, state: Any, x: Any) -> Any:
            return forward_pass(layers, table.views_with(state_table, flat, state, jnp), x, INFERENCE, none)[0]

        return _cached(_structure(layers, self.device, "forward"), lambda: jax.jit(forward))

    def _plan_key(self, plan: Plan, kind: str) -> tuple[Any, ...]:
        loss = (type(plan.loss).__module__, type(plan.loss).__qualname__, _settings(plan.loss))
        return _structure(plan.layers, self.device, kind, plan.pair, loss, str(plan.dtype))

    def compile_pass(self, plan: Plan) -> Callable[..., Any] | None:
        compiled = _cached(self._plan_key(plan, "pass"), lambda: jax.jit(self._gradient_function(plan)))
        return lambda params, grads, state, x, y, context: compiled(params, state, x, y, np.int64(context.random_key))

    def compile_step(self, plan: Plan) -> Callable[..., Any] | None:
        gradients = self._gradient_function(plan)
        compiled: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = _cached(self._plan_key(plan, "step"), dict)

        def step(params: Any, state: tuple[Any, ...], layer_state: Any, x: Any, y: Any, key: int, rule: str,
                 scalars: tuple[Any, ...]):
            # Booleans (Nesterov) choose code paths: they are part of what is compiled. Floats
            # (learning rate, bias corrections) are traced, so a schedule never recompiles.
            flags = tuple(s if isinstance(s, bool) else None for s in scalars)
            function = compiled.get((rule, flags))
            if function is None:
                def whole_step(params, state, layer_state, x, y, key, floats):
                    values = iter(floats)
                    merged = tuple(next(values) if flag is None else flag for flag in flags)
                    loss, output, flat_grads, new_layer_state = gradients(params, layer_state, x, y, key)
                    new_params, *new_state = RULES[rule].reference(params, flat_grads, *state, *merged, jnp)
                    return loss, output, flat_grads, new_params, tuple(new_state), new_layer_state

                function = compiled[rule, flags] = jax.jit(whole_step)
            floats = tuple(float(s) for s in scalars if not isinstance(s, bool))
            # The dropout key is traced (an int64 scalar), so a new step never recompiles.
            return function(params, state, layer_state, x, y, np.int64(key), floats)

        return step
