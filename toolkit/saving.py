"""Save and load a model in one file: the architecture as JSON and the weights, the layers'
state (BatchNorm's running statistics) and the optimizer's state as tensors, with the dropout
generator's seed and step, so a resumed run continues exactly as the uninterrupted one. Loading
rebuilds the model on the active backend; a model trained on one backend loads on any other with
bit-identical weights."""

from __future__ import annotations

import os
from typing import Any

from . import registry
from .errors import CheckpointError, InputError, ShapeError, ToolkitError
from .layers import from_config
from .losses import LOSSES
from .optimizers import OPTIMIZERS

Model = Any  # a network container with its trainer (toolkit.model.Sequential), known by duck typing

FORMAT = "toolkit-checkpoint"
VERSION = 1
# The containers ``load`` can rebuild, by class name (``toolkit.model`` registers ``Sequential``):
# saving knows networks through this table, so it imports no container module.
CONTAINERS: dict[str, Any] = {}


def register_container(cls: type) -> type:
    """Let ``load`` rebuild checkpoints of the container class ``cls`` (by its name)."""
    CONTAINERS[cls.__name__] = cls
    return cls


def _io() -> Any:
    return registry.service("checkpoint_io")  # host-side file format; toolkit/ itself stays Array-API only


def save(model: Model, path: str | os.PathLike, include_optimizer: bool = True) -> None:
    """Write ``model`` to ``path`` (safetensors; atomic: the old file survives a crash mid-save).

    Example:
        >>> import os, tempfile
        >>> from toolkit import Dense, Sequential, load, save
        >>> model = Sequential([Dense(2, input_dim=3)])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
        >>> save(model, path)
        >>> sorted(load(path).get_weights()) == sorted(model.get_weights())
        True
    """
    if not model.built:
        raise ToolkitError("cannot save a model that is not built yet (give input_dim or train it first)")
    tensors = {f"param/{name}": value for name, value in model.get_weights().items()}
    tensors.update({f"state/{name}": value for name, value in model.get_state().items()})
    metadata: dict[str, Any] = {"format": FORMAT, "version": VERSION, "model": model.get_config(),
                                "trained_on": model.backend.name,
                                "random": {"seed": model.random_seed, "step": model.random_step,
                                           "epochs": model.epochs_completed}}
    if model.loss is not None:
        metadata["loss"] = {"name": model.loss.name, "config": model.loss.get_config()}
        metadata["metrics"] = [metric.name for metric in model.metrics]
    if include_optimizer and model.optimizer is not None:
        state = model.optimizer.state_dict()
        metadata["optimizer"] = {key: state[key] for key in ("name", "config", "lr", "iterations")}
        tensors.update({f"optimizer/{k}": model.backend.to_host(v) for k, v in state["state"].items()})
    _io().write(path, tensors, metadata)


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    tensors, metadata = _io().read(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{os.fspath(path)!r} is not a toolkit checkpoint")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"checkpoint format version {metadata.get('version')} is not supported (expected {VERSION})")
    return tensors, metadata


def _build(config: dict[str, Any], backend: Any) -> Model:
    layers = [from_config(spec) for spec in config["layers"]]
    shape = config.get("input_shape") or config["input_dim"]  # older checkpoints have input_dim only
    container = CONTAINERS[config.get("class", "Sequential")]  # older checkpoints name no class
    return container(layers, input_shape=shape, dtype=config["dtype"], seed=config["seed"], backend=backend)


def _restore(model: Model, tensors: dict[str, Any], metadata: dict[str, Any], path: str,
             include_optimizer: bool = True) -> None:
    """Put a checkpoint into ``model``: everything is checked and converted first, then written,
    so on any error the model (weights, state, dropout step, optimizer) is as it was."""
    def part(prefix: str) -> dict[str, Any]:
        return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}

    try:
        weights = model._flatten_checked(model.table, part("param/"), "weight")
        state = model._flatten_checked(model.state_table, part("state/"), "state")
        random = metadata.get("random", {})
        seed, step = int(random.get("seed", model.random_seed)), int(random.get("step", 0))
        epochs = int(random.get("epochs", 0))
        optimizer_state = None
        if include_optimizer and model.optimizer is not None and "optimizer" in metadata:
            optimizer_state = _optimizer_state(model, tensors, metadata["optimizer"])
    except (ToolkitError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path!r} does not match this model: {error}") from error
    model.assign_params(weights)
    model.assign_state(state)
    model.random_seed, model.random_step, model.epochs_completed = seed, step, epochs
    if optimizer_state is not None:
        assert model.optimizer is not None
        model.optimizer.load_state_dict(optimizer_state)
        model.optimizer.bind(model.flat_params, model.backend, owner=model)


def _optimizer_state(model: Model, tensors: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's optimizer state for ``model.optimizer``, checked (kind, names, shapes)."""
    optimizer = model.optimizer
    assert optimizer is not None
    if info["name"] != optimizer.name:
        raise InputError(f"its optimizer state is {info['name']!r} but the model is compiled with "
                         f"{optimizer.name!r}; compile with the same optimizer, or load without its state "
                         "(include_optimizer=False)")
    state = {k[len("optimizer/"):]: model.backend.asarray(v, dtype=model.dtype)
             for k, v in tensors.items() if k.startswith("optimizer/")}
    expected = tuple(model.flat_params.shape)
    for name, value in state.items():
        if tuple(value.shape) != expected:
            raise ShapeError(f"optimizer state {name!r} has shape {tuple(value.shape)}, the parameters {expected}")
    return {**info, "state": state}


def load(path: str | os.PathLike, backend: Any = None) -> Model:
    """Rebuild a saved model (compiled again with its loss, metrics and optimizer state), on
    ``backend`` or the active one. See ``save`` for an example."""
    path = os.fspath(path)
    tensors, metadata = _read(path)
    try:
        model = _build(metadata["model"], backend)
        if "loss" in metadata:
            loss = LOSSES[metadata["loss"]["name"]](**metadata["loss"]["config"])
            optimizer = None
            if "optimizer" in metadata:
                info = metadata["optimizer"]
                optimizer = OPTIMIZERS[info["name"]](**info["config"])
            model.compile(loss=loss, optimizer=optimizer or "sgd", metrics=metadata.get("metrics", []))
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path!r} has an invalid architecture description: {error!r}") from error
    _restore(model, tensors, metadata, path)
    return model


# How a layer's weights were first drawn does not change what they mean: two models that differ
# only in these settings hold interchangeable weights.
_INITIAL_VALUE_SETTINGS = ("kernel_initializer", "bias_initializer")


def _meaning(layers: Any) -> Any:
    """The layer configs (nested ones too) without the settings that only choose initial values."""
    if not isinstance(layers, list):
        return layers
    return [{**spec, "config": {k: _meaning(v) for k, v in spec.get("config", {}).items()
                                if k not in _INITIAL_VALUE_SETTINGS}}
            if isinstance(spec, dict) else spec for spec in layers]


def load_weights(model: Model, path: str | os.PathLike, include_optimizer: bool = False) -> None:
    """Load a checkpoint's weights and layer state (running statistics, the dropout step) into an
    existing model of the same architecture; on any mismatch the model is left untouched.

    The optimizer chosen in ``compile`` keeps its settings (learning rate and all). With
    ``include_optimizer=True`` its saved state (moments, step count, learning rate) is restored
    too, which needs the same kind of optimizer.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> from toolkit import Dense, Sequential, load_weights, save
        >>> trained, fresh = Sequential([Dense(2, input_dim=3)], seed=1), Sequential([Dense(2, input_dim=3)], seed=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
        >>> save(trained, path)
        >>> load_weights(fresh, path)
        >>> bool(np.array_equal(fresh.get_weights()["0.W"], trained.get_weights()["0.W"]))
        True
    """
    path = os.fspath(path)
    tensors, metadata = _read(path)
    ours = _meaning(model.get_config()["layers"])
    theirs = _meaning(metadata.get("model", {}).get("layers"))
    if theirs != ours:
        raise CheckpointError(f"{path!r} holds a different architecture: {theirs} vs this model's {ours}")
    _restore(model, tensors, metadata, path, include_optimizer=include_optimizer)
