"""The CPU backends keep a step's freed temporaries in the C heap (``toolkit_backends.allocator``):
glibc's thresholds are raised once when a NumPy or numba backend is made, and a user's own
``MALLOC_*`` settings are left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import selected_backends

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

PROBE = ("import toolkit_backends.allocator as a, toolkit_backends.numpy_backend as n; "
         "n.NumpyBackend(); print(a.keep_freed_memory())")


@pytest.fixture(autouse=True)
def _numpy_session_only():
    if "numpy" not in selected_backends():
        pytest.skip("a process-wide setting: checked once, in the numpy session")


def _run(**environment: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-c", PROBE], env={**env, **environment}, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_cpu_backend_raises_the_thresholds():
    assert _run() == "True"


@pytest.mark.parametrize("setting", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"])
def test_the_users_malloc_settings_win(setting):
    assert _run(**{setting: "131072"}) == "False"
