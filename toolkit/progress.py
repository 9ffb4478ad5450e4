"""Progress reporting for ``fit``: a tqdm bar per epoch on a terminal, one line per epoch
otherwise, nothing with ``verbose=0``.

The bar keeps its width: during an epoch it shows the count, elapsed time, ETA and the running
loss (the loss only from 80 columns up), never the metrics; when the epoch ends the bar stays
and the full metrics line is printed under it, as Keras lays it out. From 60 columns up the bar
itself is at least 10 characters wide."""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO


def _format(logs: dict[str, float], first: str = "", last: str = "", width: int = 80) -> str:
    """``first``, the ``key=value`` entries, then ``last``, two spaces apart, wrapped between entries
    (never inside one) to lines of at most ``width`` characters; wrapped lines are indented by two spaces.

    Example:
        >>> print(_format({"loss": 0.25, "accuracy": 0.5, "val_loss": 0.3}, "epoch 1/5", "(2 ms)", width=40))
        epoch 1/5  loss=0.25  accuracy=0.5
          val_loss=0.3  (2 ms)
    """
    lines = [first] if first else []
    entries = [f"{key}={value:.4g}" for key, value in logs.items()] + ([last] if last else [])
    for entry in entries:
        if lines and len(lines[-1]) + 2 + len(entry) <= width:
            lines[-1] += "  " + entry
        else:
            lines.append(("  " if lines else "") + entry)
    return "\n".join(lines)


def _columns(stream: TextIO) -> int:
    """The terminal's width for a terminal, else 80 (logs and CI pages are read at that width)."""
    if getattr(stream, "isatty", lambda: False)():
        return shutil.get_terminal_size(fallback=(80, 24)).columns or 80
    return 80


class Progress:
    """``verbose``: 0 silent, 1 a bar on a terminal (else one line per epoch), 2 one line per epoch."""

    def __init__(self, verbose: int, epochs: int, steps_per_epoch: int | None, stream: TextIO | None = None) -> None:
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2; got {verbose!r}")
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.use_bar = verbose == 1 and getattr(self.stream, "isatty", lambda: False)()
        self.epochs, self.steps = epochs, steps_per_epoch
        self._bar: Any = None
        self._columns = 100

    def epoch_begin(self, epoch: int) -> None:
        if self.use_bar:
            from tqdm.auto import tqdm

            # A terminal that reports a size of 0×0 (a pseudo-terminal from `script`, some CI
            # runners) makes tqdm draw nothing: fall back to 100×24.
            size = shutil.get_terminal_size(fallback=(100, 24))
            self._columns = size.columns or 100
            # No rate field ("12.3batch/s"): on a narrow terminal it took the bar's room.
            layout = ("{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
                      if self.steps is not None else "{desc} {n_fmt} batches [{elapsed}{postfix}]")
            self._bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch",
                             file=self.stream, leave=True, ncols=self._columns, nrows=size.lines or 24,
                             bar_format=layout)

    def batch_end(self, running_loss: Any | None) -> None:
        """``running_loss`` is a callable giving the mean loss so far; called only when the
        bar is about to redraw, so the device is synchronised at most once per redraw."""
        if self._bar is None:
            return
        self._bar.update(1)
        n = self._bar.n
        every = 10 if self.steps is None else max(1, self.steps // 10)  # a stream of unknown length: every 10
        if running_loss is not None and self._columns >= 80 and (n in (1, self.steps) or n % every == 0):
            self._bar.set_postfix_str(f"loss={running_loss():.4g}", refresh=False)

    def close(self) -> None:
        """Close a bar left open by an epoch that ended in an error."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self._bar is not None:
            self._bar.close()  # the bar stays as drawn; the metrics go on their own line
            self._bar = None
            text = _format(logs, width=_columns(self.stream) - 2)
            print("  " + text.replace("\n", "\n  "), file=self.stream, flush=True)
        elif self.verbose:
            took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f}s"  # small data: not "0.00s"
            print(_format(logs, f"epoch {epoch + 1}/{self.epochs}", f"({took})", _columns(self.stream)),
                  file=self.stream, flush=True)
