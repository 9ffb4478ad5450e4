"""Exceptions the toolkit raises, so that callers can catch the toolkit's own errors precisely."""


class ToolkitError(Exception):
    """Base class of every error raised by the toolkit on purpose."""


class BackendError(ToolkitError, RuntimeError):
    """A backend name is unknown, or its library or device is missing."""


class ShapeError(ToolkitError, ValueError):
    """An array's shape does not fit the layer, loss or data it is given to."""


class InputError(ToolkitError, ValueError):
    """An argument or data value is invalid (dtype, range, NaN, empty...)."""


class TrainingDiverged(ToolkitError, FloatingPointError):
    """The loss became NaN or infinite during training."""


class CheckpointError(ToolkitError, ValueError):
    """A checkpoint file is missing, damaged, or does not match the model."""
