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


# -- long-lived buffers on transparent huge pages -------------------------------------------------
def _vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds ``address`` (``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and all(c in "0123456789abcdef-" for c in fields[0]):
                start, end = (int(bound, 16) for bound in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "VmFlags:":
                return fields[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


huge_pages = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps (Linux)")


@pytest.mark.parametrize("shape", [(3, 5), 2**20 // 4 + 1, (700, 1000)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_lived_zeros_are_zeros_of_the_shape_asked(shape, dtype):
    import numpy as np

    from toolkit_backends.allocator import long_lived_zeros

    buffer = long_lived_zeros(shape, dtype)
    assert buffer.shape == (shape if isinstance(shape, tuple) else (shape,)) and buffer.dtype == np.dtype(dtype)
    assert buffer.flags.c_contiguous and buffer.flags.writeable and not buffer.any()
    buffer[...] = 1.5
    assert float(buffer.sum()) == 1.5 * buffer.size


@huge_pages
def test_a_buffer_of_a_mib_or_more_is_advised_onto_huge_pages_and_a_smaller_one_stays_in_the_heap():
    from toolkit_backends import allocator

    if not allocator.huge_pages_allowed():
        pytest.skip("transparent huge pages are off on this system ([never])")
    large = allocator.long_lived_zeros(allocator.HUGE_PAGES_FROM // 4, "float32")
    small = allocator.long_lived_zeros(allocator.HUGE_PAGES_FROM // 4 - 1, "float32")
    assert large.ctypes.data % allocator.HUGE_PAGE == 0
    assert "hg" in _vm_flags(large.ctypes.data)  # MADV_HUGEPAGE on its mapping
    # The small one is NumPy's own array, from the heap. (Its mapping's flags prove nothing: NumPy
    # advises huge pages for its own arrays of 4 MiB and more, heap ranges included.)
    assert small.base is None and large.base is not None


@huge_pages
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_a_models_flat_buffers_and_optimizer_state_are_long_lived_buffers(name):
    from toolkit_backends import allocator

    if name not in selected_backends():
        pytest.skip(f"{name} is not selected")
    if not allocator.huge_pages_allowed():
        pytest.skip("transparent huge pages are off on this system ([never])")
    import toolkit
    from toolkit import Adam, Dense, Sequential

    with toolkit.use_backend(name):
        model = Sequential([Dense(512, activation="relu"), Dense(10, activation="softmax")], input_dim=784)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=1e-3))
    import numpy as np

    x = np.random.default_rng(0).normal(size=(8, 784)).astype(np.float32)
    model.fit(x, np.eye(10, dtype=np.float32)[np.arange(8)], epochs=1, batch_size=8, verbose=0)
    buffers = [model.flat_params, model.flat_grads, *model.optimizer.state.values()]
    assert len(buffers) == 4
    assert all("hg" in _vm_flags(buffer.ctypes.data) for buffer in buffers)
