"""The engine: one description of a gradient pass (``Plan``) and the one loop that runs it.

    forward:   for each layer l:          x, saved[l] = layer.forward(params[l], x, context)  (a tape)
    δ_out:     fused pair (ŷ − y)          or ∂J/∂ŷ chained through the output layer
    backward:  for each layer, last first: g, grads[l] = layer.backward(params[l], saved[l], g)
    state:     for each layer with state:  state[l] = layer.next_state(params[l], saved[l])

The tape lives only as long as the pass, so nothing a pass needs is kept on a layer or on a
process-global object. A backend may compile a faster runner from the same ``Plan``
(``Backend.compile_pass``); the plan fixes the layers, the output pair and the parameter layout,
and the tests compare any runner with this loop. ``Engine`` binds a plan to one model and owns
that model's scratch buffers, which die with the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .backend import Backend
from .context import INFERENCE, PassContext
from .layers import Dense, Layer, Scratch
from .layers.base import scratch_buffer
from .losses import Loss
from .ops.reference import OUTPUT_PAIRS, pair_loss
from .parameters import ParameterTable

Array = Any
Params = dict[str, Array]


@dataclass(frozen=True)
class Plan:
    """What one gradient pass of a model is: its layers, the output/loss pair that starts the
    backward pass (None: chain ∂J/∂ŷ through the output layer), the loss, the layouts of the
    parameters and of the state (running statistics)."""

    layers: tuple[Layer, ...]
    table: ParameterTable
    state_table: ParameterTable
    loss: Loss
    pair: str | None
    dtype: Any


def make_plan(layers: Sequence[Layer], table: ParameterTable, state_table: ParameterTable, loss: Loss,
              dtype: Any) -> Plan:
    """The plan of a built, compiled model: the output pair is used when the loss names one and
    the last layer is a Dense layer with the pair's activation."""
    last = layers[-1]
    pair = loss.output_pair
    if pair is not None and not (isinstance(last, Dense) and last.activation.name == OUTPUT_PAIRS[pair].activation):
        pair = None
    return Plan(tuple(layers), table, state_table, loss, pair, dtype)


def forward_pass(layers: Sequence[Layer], params: Sequence[Params], x: Array, context: PassContext,
                 scratch: Sequence[Scratch | None]) -> tuple[Array, list[Any]]:
    """ŷ, and the tape of what each layer's backward needs (None entries when not training).

    ``params[l]`` holds layer l's parameters and its state."""
    tape = []
    for layer, layer_params, layer_scratch in zip(layers, params, scratch, strict=True):
        x, saved = layer.forward(layer_params, x, context, layer_scratch)
        tape.append(saved)
    return x, tape


def next_state(layers: Sequence[Layer], state_table: ParameterTable, params: Sequence[Params], tape: Sequence[Any],
               like: Array, xp: Any) -> Array | None:
    """The flat state after a training pass (a new array), or None when the layers have no state."""
    if not state_table.size:
        return None
    states = [layer.next_state(layer_params, saved) for layer, layer_params, saved in zip(layers, params, tape, strict=True)]
    return state_table.gather(states, like, xp)


def backward_pass(plan: Plan, backend: Backend, params: Sequence[Params], tape: Sequence[Any], output: Array,
                  y: Array, scratch: Sequence[Scratch | None], grad_out: Sequence[Params],
                  loss_scale: float = 1.0) -> tuple[Array, list[Params]]:
    """The loss (0-d array) and every layer's parameter gradients, last layer first computed; with a
    ``loss_scale`` s the gradients are those of s·J (float16 training, so small ones do not underflow)."""
    layers = plan.layers
    last = len(layers) - 1
    grads: list[Params] = [{} for _ in layers]
    if plan.pair is not None:
        saved = tape[last]
        output_layer = layers[last]
        assert isinstance(output_layer, Dense)  # make_plan pairs only a Dense output layer
        z, a = saved[1], saved[2]  # (positions, width): a sequence's positions are rows, and so are its targets
        if y.ndim != 2:
            y = backend.xp.reshape(y, (z.shape[0], y.shape[-1]))  # weighted targets are twice as wide
        delta_buffer = scratch_buffer(scratch[last], "delta", tuple(z.shape), z.dtype)
        loss, delta = backend.output_delta(plan.pair, z, a, y, out=delta_buffer)  # δ_out = ŷ − y
        if loss_scale != 1.0:
            delta = delta * loss_scale
        grad, grads[last] = output_layer.backward_from_delta(params[last], saved, delta, scratch[last], grad_out[last])
    else:
        xp = backend.xp
        loss = plan.loss.value(output, y, xp)
        start = plan.loss.gradient(output, y, xp)
        grad, grads[last] = layers[last].backward(params[last], tape[last], start if loss_scale == 1.0 else start * loss_scale,
                                                  scratch[last], grad_out[last])
    for index in range(last - 1, -1, -1):  # δ[l] = (δ[l+1] W[l+1]ᵀ) ∘ σ'(Z[l])
        grad, grads[index] = layers[index].backward(params[index], tape[index], grad, scratch[index], grad_out[index])
    return loss, grads


def gradient_pass(plan: Plan, backend: Backend, params: Sequence[Params], x: Array, y: Array, context: PassContext,
                  scratch: Sequence[Scratch | None], grad_out: Sequence[Params],
                  state: Array | None = None, loss_scale: float = 1.0) -> tuple[Array, Array, list[Params], Array | None]:
    """(loss, ŷ, every layer's parameter gradients, the new flat state or None) of one batch:
    the reference a runner must equal. ``state`` is the current flat state (its shape and dtype
    for the new one)."""
    output, tape = forward_pass(plan.layers, params, x, context, scratch)
    new_state = None if state is None else next_state(plan.layers, plan.state_table, params, tape, state, backend.xp)
    loss, grads = backward_pass(plan, backend, params, tape, output, y, scratch, grad_out, loss_scale)
    return loss, output, grads, new_state


def evaluation_pass(plan: Plan, params: Sequence[Params], x: Array, y: Array, xp: Any) -> tuple[Array, Array]:
    """(loss, ŷ) of a batch in inference mode, the loss defined as training defines it: from the
    output layer's logits when the plan fuses an output pair (the loss of a clipped ŷ would
    disagree where ŷ saturates), else the loss of ŷ."""
    layers = plan.layers
    if plan.pair is None:
        output, _ = forward_pass(layers, params, x, INFERENCE, [None] * len(layers))
        return plan.loss.value(output, y, xp), output
    hidden, _ = forward_pass(layers[:-1], params[:-1], x, INFERENCE, [None] * (len(layers) - 1))
    output_layer = layers[-1]
    assert isinstance(output_layer, Dense)  # make_plan pairs only a Dense output layer
    z, output = output_layer.logits_and_output(params[-1], hidden)
    return pair_loss(plan.pair, z, output, y, xp), output


class Engine:
    """A plan bound to one model: its scratch buffers and its backend's compiled runner, if any."""

    def __init__(self, plan: Plan, backend: Backend) -> None:
        self.plan = plan
        self.backend = backend
        self.scratch: list[Scratch | None] = [Scratch(backend) if backend.reuses_buffers else None
                                              for _ in plan.layers]
        self.runner: Callable[..., Any] | None = backend.compile_pass(plan)
        self.step: Any = backend.compile_step(plan)  # a callable with split, join, gradients_of (Backend.compile_step)

    def gradients(self, flat_params: Array, flat_grads: Array, flat_state: Array, params: list[Params],
                  grad_out: list[Params], x: Array, y: Array,
                  context: PassContext) -> tuple[Array, Array, Array, Array | None]:
        """(loss, ŷ, flat gradients, new flat state or None) of one batch; on mutable backends the
        gradients are written into ``flat_grads`` (and it is returned); on immutable ones a new
        flat array is returned. The state is never written: the model commits it."""
        if self.runner is not None:
            result = self.runner(flat_params, flat_grads, flat_state, x, y, context)
            if result is not None:
                return result
        state = flat_state if self.plan.state_table.size else None
        with self.backend.quiet():  # a diverging step says so through its loss, not through warnings
            loss, output, grads, new_state = gradient_pass(self.plan, self.backend, params, x, y, context, self.scratch,
                                                           grad_out, state)
        return loss, output, self.gather(flat_grads, grads, grad_out), new_state

    def gather(self, flat_grads: Array, grads: list[Params], grad_out: list[Params]) -> Array:
        """The layers' gradients in the flat buffer: already there when every op wrote into its
        slot; copied into the slots (mutable) or concatenated into a new array (immutable) else."""
        backend = self.backend
        if not backend.mutable:
            return self.plan.table.gather(grads, flat_grads, backend.xp)
        for layer_grads, slots in zip(grads, grad_out, strict=True):
            for name, value in layer_grads.items():
                if value is not slots[name]:
                    backend.assign(slots[name], value)
        return flat_grads
