"""The CPU backends keep a step's freed temporaries in the C heap (``toolkit_backends.allocator``):
glibc's thresholds are raised once when a NumPy, numba or JAX (CPU) backend is made, and a user's own
``MALLOC_*`` settings are left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import selected_backends

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

# A fresh process makes the backend, then asks whether the thresholds were set by that (a second
# call returns the first call's answer).
PROBE = ("import toolkit_backends.allocator as a, toolkit_backends.{module} as n; "
         "n.{backend}(); print(a.keep_freed_memory.cache_info().currsize, a.keep_freed_memory())")
PROBED = {"numpy": ("numpy_backend", "NumpyBackend"), "jax": ("jax_backend", "JaxBackend")}


def _probed(name: str) -> str:
    if name not in selected_backends():
        pytest.skip(f"a process-wide setting: checked once, in the {name} session")
    return name


def _run(name: str = "numpy", **environment: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    module, backend = PROBED[name]
    return subprocess.run([sys.executable, "-c", PROBE.format(module=module, backend=backend)], env={**env, **environment},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("name", sorted(PROBED))
def test_a_cpu_backend_raises_the_thresholds(name):
    assert _run(_probed(name)) == "1 True"


@pytest.mark.parametrize("setting", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"])
def test_the_users_malloc_settings_win(setting):
    assert _run(_probed("numpy"), **{setting: "131072"}) == "1 False"
