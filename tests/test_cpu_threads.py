"""The NumPy and numba backends' BLAS threads during ``fit`` (``toolkit_backends.cpu_threads``): chosen by
timing steps at one thread and at all of them, capped by ``TOOLKIT_NUM_THREADS``, given back after
``fit``, and never changing a result."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import selected_backends
from tests.helpers import relative_error
from toolkit import BackendError, Dense, Sequential
from toolkit_backends import cpu_threads

pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def _numpy_session_only():
    if "numpy" not in selected_backends():
        pytest.skip("the CPU thread choice runs once, in the numpy session")


class FakeLibrary:
    user_api = "blas"

    def __init__(self, threads):
        self.num_threads, self.history = threads, []

    def set_num_threads(self, threads):
        self.num_threads = threads
        self.history.append(threads)


def _tuner(monkeypatch, step_seconds, most=2):
    """A tuner over one fake library whose steps take ``step_seconds[threads]`` by a fake clock."""
    tuner = cpu_threads.BlasThreadTuner.__new__(cpu_threads.BlasThreadTuner)
    library = FakeLibrary(8)
    tuner.libraries, tuner.before, tuner.most, tuner.chosen, tuner.probing = [library], [8], most, most, False
    tuner._samples, tuner._current, tuner._started, tuner._warm_up = {}, -1, 0.0, True
    clock = {"now": 0.0}
    monkeypatch.setattr(cpu_threads.time, "perf_counter", lambda: clock["now"])

    def step():
        tuner.step_begin()
        clock["now"] += step_seconds[library.num_threads]
        tuner.step_end()

    return tuner, library, step


@pytest.mark.parametrize("times,expected", [
    ({1: 1.0, 2: 0.6}, 2),     # a quiet machine, large products: all the threads
    ({1: 1.0, 2: 0.95}, 1),    # less than 10 % faster: one thread, which another program cannot crowd
    ({1: 1.0, 2: 4.0}, 1),     # a busy machine: the second thread waits for a core
])
def test_each_epoch_times_both_counts_then_keeps_the_faster(monkeypatch, times, expected):
    tuner, library, step = _tuner(monkeypatch, times)
    tuner.epoch_begin()
    steps = 0
    while tuner.probing:
        step()
        steps += 1
    assert steps == 1 + 2 * cpu_threads.BlasThreadTuner.PROBE  # one warm-up, then alternating
    assert tuner.chosen == expected and library.num_threads == expected
    tuner.close()
    assert library.num_threads == 8  # given back as it was


def test_the_steps_threads_follow_the_tuner_while_it_runs(monkeypatch):
    """The numba backend's blocked pass spreads its blocks over ``step_threads()``: the count the tuner
    is trying or has chosen during fit, the budget outside it."""
    monkeypatch.setenv("TOOLKIT_NUM_THREADS", "8")
    tuner, _, step = _tuner(monkeypatch, {1: 1.0, 8: 2.0}, most=8)
    assert cpu_threads.step_threads() == 8
    tuner.epoch_begin()
    seen = set()
    while tuner.probing:
        step()
        seen.add(cpu_threads.step_threads())
    assert seen == {1, 8} and cpu_threads.step_threads() == 1  # one thread was faster
    tuner.close()
    assert cpu_threads.step_threads() == 8


def test_one_thread_budget_sets_one_thread_and_measures_nothing(monkeypatch):
    tuner, library, _ = _tuner(monkeypatch, {1: 1.0}, most=1)
    tuner.epoch_begin()
    assert not tuner.probing and library.num_threads == 1


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_a_bad_thread_budget_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("TOOLKIT_NUM_THREADS", value)
    with pytest.raises(BackendError, match=rf"TOOLKIT_NUM_THREADS='{value}': give a whole number of threads ≥ 1"):
        cpu_threads.thread_budget()


def test_the_thread_count_changes_only_round_off_and_one_thread_repeats_bit_for_bit(numpy_backend, monkeypatch):
    """Training with the tuner (threads switching between steps) equals training on one thread up to
    float32 round-off (OpenBLAS on 2 threads sums some products in another order: measured, 7,766 of
    the 131,072 entries of a (256×256)ᵀ(256×512) product differ in their last bits); with the count
    fixed, two runs are equal bit for bit."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2048, 256)).astype(np.float32), rng.integers(0, 10, 2048)

    def trained():
        model = Sequential([Dense(512, activation="relu", input_shape=(256,)), Dense(10, activation="softmax")], seed=1)
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
        model.fit(x, y, epochs=2, batch_size=256, verbose=0)
        return model.get_weights()

    monkeypatch.setenv("TOOLKIT_NUM_THREADS", "2")
    tuned = trained()
    monkeypatch.setenv("TOOLKIT_NUM_THREADS", "1")
    single, again = trained(), trained()
    for name, value in tuned.items():
        assert relative_error(value, single[name]) <= 1e-5, name
        np.testing.assert_array_equal(again[name], single[name])
