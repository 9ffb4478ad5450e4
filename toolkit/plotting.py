"""Training curves to a PNG (needs matplotlib: ``pip install -e ".[examples]"``)."""

from __future__ import annotations

import os
from typing import Any


def plot_history(history: Any, path: str | os.PathLike, keys: tuple[str, ...] | None = None) -> str:
    """Draw each logged quantity (``loss`` with ``val_loss``, ``accuracy`` with ``val_accuracy``…)
    against the epoch, one panel per quantity, and save it to ``path``. Returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('plot_history needs matplotlib: pip install -e ".[examples]"') from error
    logs = history.history if hasattr(history, "history") else dict(history)
    names = keys or tuple(k for k in logs if not k.startswith("val_") and k != "lr")
    if not names:
        raise ValueError("the history has nothing to plot")
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    epochs = range(1, len(logs[names[0]]) + 1)
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(epochs, logs[name], label=f"training {name}")
        if f"val_{name}" in logs:
            axis.plot(epochs, logs[f"val_{name}"], label=f"validation {name}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name.replace("_", " "))
        axis.set_title(name if f"val_{name}" in logs else f"{name} (no validation data)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return os.fspath(path)
