"""Data-parallel training over MPI: 2 ranks on loopback equal 1 process with the same global batch."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import toolkit
from toolkit import (
    GRU,
    LSTM,
    AvgPool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    LayerNorm,
    MaxPool2D,
    MultiHeadAttention,
    PositionEmbedding,
    Reshape,
    Residual,
    Sequential,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS, GLOBAL_BATCH = 2, 10
pytestmark = pytest.mark.mpi


def make_problem(kind="mlp"):
    rng = np.random.default_rng(0)
    # 37 rows: the last global batch (7) splits unevenly, 3 + 4
    if kind == "seq":  # token ids in, a label per position out
        return rng.integers(0, 5, size=(37, 4)), rng.integers(0, 5, size=(37, 4))
    if kind == "rnn":  # sequences of 5 steps of 2 features
        return rng.normal(size=(37, 5, 2)), rng.integers(0, 3, size=37)
    if kind == "lenet":
        return rng.normal(size=(37, 12, 12, 1)), rng.integers(0, 3, size=37)
    x = rng.normal(size=(37, 6, 5, 2)) if kind == "cnn" else rng.normal(size=(37, 6))
    return x, rng.integers(0, 3, size=37)


def make_model(seed=0, kind="mlp"):
    if kind == "cnn":
        # Every image layer: (6, 5, 2) → (6, 5, 3) → (3, 5, 3) → (3, 2, 3) → 18 → (3, 2, 3) → 3 → 3.
        layers = [Conv2D(3, 3, padding="same", activation="relu", input_shape=(6, 5, 2)), AvgPool2D((2, 1)),
                  MaxPool2D((1, 2)), Flatten(), Reshape((3, 2, 3)), GlobalAveragePooling2D(),
                  Dense(3, activation="softmax")]
    elif kind == "lenet":  # numba runs it as one blocked pass; the units of test_conv_pass's (its kernels cached)
        layers = [Conv2D(3, 5, padding="same", activation="relu", input_shape=(12, 12, 1)), MaxPool2D(2),
                  Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(3, activation="softmax")]
    elif kind == "deep":
        # BatchNorm statistics over the global batch, dropout masks by global row, a residual block.
        layers = [Dense(8, activation="relu", input_dim=6), BatchNorm(), Dropout(0.3),
                  Residual([Dense(8, activation="tanh"), BatchNorm(momentum=0.2), Dropout(0.5)]),
                  Dense(3, activation="softmax")]
    elif kind == "seq":
        # Attention-weight dropout by global row, LayerNorm, embeddings' scatter-added gradients.
        layers = [Embedding(5, 6, input_length=4), PositionEmbedding(4),
                  Residual([LayerNorm(), MultiHeadAttention(2, 3, causal=True, dropout=0.3)]),
                  Residual([LayerNorm(), Dense(8, activation="gelu"), Dense(6), Dropout(0.2)]),
                  Dense(5, activation="softmax")]
    elif kind == "rnn":  # backpropagation through time per rank, gradients reduced once per step
        layers = [Conv1D(3, 2, padding="same", dilation=2, input_shape=(5, 2)), LSTM(4, return_sequences=True), GRU(3),
                  Dense(3, activation="softmax")]
    else:
        layers = [Dense(8, activation="tanh", input_dim=6), Dense(3, activation="softmax")]
    model = Sequential(layers, dtype="float64", seed=seed)
    loss = "sparse_categorical_crossentropy" if kind == "seq" else "categorical_crossentropy"
    model.compile(loss=loss, optimizer=toolkit.Adam(lr=0.01), metrics=["accuracy"])
    return model


def _mpi_ready():
    if shutil.which("mpiexec") is None:
        return "mpiexec is not on PATH (pip install mpi4py mpich)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    return None


def launch(mode, out, backend, timeout=120, kind="mlp", ranks=2):
    reason = _mpi_ready()
    if reason:
        if os.environ.get("TOOLKIT_REQUIRE_MPI"):
            pytest.fail(reason)
        pytest.skip(reason)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = ["mpiexec", "-n", str(ranks), sys.executable, str(ROOT / "tests" / "mpi_worker.py"), mode, str(out), backend, kind]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize("backend,kind", [("numpy", "mlp"), ("numba", "mlp"), ("numpy", "cnn"), ("numba", "lenet"),
                                          ("numpy", "deep"),
                                          ("numba", "deep"), ("numpy", "dataset"), ("numpy", "seq"),
                                          ("numpy", "rnn")])
def test_two_ranks_equal_one_process(tmp_path, backend, kind):
    result = launch("train", tmp_path / "out.npz", backend, kind=kind)
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "out.npz")
    assert int(data["size"]) == 2
    assert float(data["rank_spread"]) == 0.0  # every rank holds the same weights
    assert bool(data["shared_reduction"])  # host buffers on one machine: reduced in shared memory
    steps_per_epoch = -(-37 // GLOBAL_BATCH)
    assert int(data["steps"]) == EPOCHS * steps_per_epoch  # one all-reduce per step

    if kind == "dataset":  # each rank read only its share of every batch, and the two shares are everything
        assert data["rows_read"].sum() == EPOCHS * 37 and abs(data["rows_read"][0] - data["rows_read"][1]) <= 2 * EPOCHS
    with toolkit.use_backend(backend):
        single = make_model(seed=100, kind=kind)  # rank 0's seed: the broadcast start
        history = single.fit(*make_problem(kind), epochs=EPOCHS, batch_size=GLOBAL_BATCH, verbose=0, seed=3)
    reference = np.asarray(single.backend.to_host(single.flat_params))
    error = np.max(np.abs(data["weights"] - reference)) / np.max(np.abs(reference))
    assert error <= 1e-10, error
    state = np.asarray(single.backend.to_host(single.flat_state))
    if state.size:  # BatchNorm's running statistics
        assert np.max(np.abs(data["state"] - state)) / np.max(np.abs(state)) <= 1e-10
    np.testing.assert_allclose(data["loss"], history["loss"], rtol=1e-10)
    np.testing.assert_allclose(data["accuracy"], history["accuracy"], rtol=1e-12)


def test_the_shared_memory_all_reduce_sums_in_rank_order_on_every_rank(tmp_path):
    """Three ranks, 7 values (slices of 2, 2 and 3): 1e16 + (-1e16) + 1 is 1 only when summed in rank
    order, and every rank must hold the same bits."""
    result = launch("shared", tmp_path / "out.npz", "numpy", ranks=3)
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "out.npz")
    expected = np.arange(1, 8, dtype=np.float64)  # (1e16·k − 1e16·k) + k
    for rank_result in data["results"]:
        np.testing.assert_array_equal(rank_result, expected)
    assert int(data["windows"]) == 1  # a shared buffer asked for again is itself, not a second window
    assert float(data["inputs_kept"]) == 1e16  # the caller's array is copied, not used as the buffer


def test_without_room_in_dev_shm_every_rank_reduces_through_mpi(tmp_path):
    result = launch("shared", tmp_path / "out.npz", "numpy", ranks=3, kind="full")
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "out.npz")
    assert int(data["windows"]) == 0
    for rank_result in data["results"]:
        np.testing.assert_array_equal(rank_result, 6.0 * np.arange(1, 8))  # (1 + 2 + 3)·k


def test_two_ranks_deal_the_batches_of_a_stream(tmp_path):
    """A plain iterable has no row index: rank r trains on batches r, r + 2, …; ranks stay equal."""
    result = launch("train", tmp_path / "out.npz", "numpy", kind="stream")
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "out.npz")
    assert float(data["rank_spread"]) == 0.0
    assert int(data["steps"]) == EPOCHS * 2  # 4 batches per epoch over 2 ranks
    assert np.all(np.isfinite(data["loss"]))


def test_a_failing_rank_ends_the_job_instead_of_hanging(tmp_path):
    result = launch("raise", tmp_path / "out.npz", "numpy", timeout=60)
    assert result.returncode != 0
    # What the failing rank wrote before it aborted the job (its stderr, kept in a file: mpiexec's
    # forwarding of an aborted rank's last output is best effort).
    written = (tmp_path / "out.npz.rank1.err").read_text()
    assert "[rank 1]" in written and "rank 1 fails on purpose" in written
    assert not (tmp_path / "out.npz").exists()


def test_auto_is_off_without_a_launcher(monkeypatch):
    from toolkit.distributed import auto
    from toolkit_backends import mpi

    for name in mpi.LAUNCH_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert auto() is None


def test_a_reduction_buffer_of_another_size_is_refused():
    from toolkit.errors import InputError

    model = make_model()
    before = model.reduction_buffer
    with pytest.raises(InputError, match="must match the model's"):
        model.use_reduction_buffer(np.zeros(before.shape[0] + 1))
    assert model.reduction_buffer is before
