"""Shared by the benchmarks that time PyTorch in a process of its own (in one process with NumPy,
OpenBLAS's spinning threads slow PyTorch down to 2×): the script runs itself with ``--part NAME
--arguments JSON``, and the child prints its result as JSON on its last line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable


def in_own_process(script: str, part: str, **arguments: object) -> dict[str, float]:
    """Run ``script --part part --arguments {...}`` and return the JSON it printed last."""
    command = [sys.executable, script, "--part", part, "--arguments", json.dumps(arguments)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def seconds_per_call(step: Callable[[int], None], seconds: float) -> float:
    """Mean seconds of ``step(i)`` over about ``seconds`` of calls, after three warm-up calls."""
    for i in range(3):
        step(i)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step(count)
        count += 1
    return (time.perf_counter() - started) / count
