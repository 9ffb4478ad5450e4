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


def _tuner(monkeypatch, step_seconds, most=2, first_on_all=None):
    """A tuner over one fake library whose steps take ``step_seconds[threads]`` by a fake clock (the
    first one on ``most`` threads ``first_on_all``, when given)."""
    library = FakeLibrary(8)
    monkeypatch.setattr(cpu_threads, "blas_controllers", lambda: [library])
    tuner = cpu_threads.BlasThreadTuner(most)
    clock = {"now": 0.0}
    monkeypatch.setattr(cpu_threads.time, "perf_counter", lambda: clock["now"])

    pending = {"first": first_on_all}

    def step():
        tuner.step_begin()
        took = step_seconds[library.num_threads]
        if library.num_threads == most and pending["first"] is not None:
            took, pending["first"] = pending["first"], None
        clock["now"] += took
        tuner.step_end()

    return tuner, library, step


@pytest.mark.parametrize("times,expected", [
    ({1: 1.0, 2: 0.6}, 2),     # a quiet machine, large products: all the threads
    ({1: 1.0, 2: 0.95}, 1),    # less than 10 % faster: one thread, which another program cannot crowd
    ({1: 1.0, 2: 4.0}, 1),     # a busy machine: the second thread waits for a core
])
def test_it_times_both_counts_then_keeps_the_faster(monkeypatch, times, expected):
    tuner, library, step = _tuner(monkeypatch, times)
    tuner.epoch_begin()
    steps = 0
    while tuner.probing:
        step()
        steps += 1
    crowded = times[2] > cpu_threads.BlasThreadTuner.CROWDED * times[1]  # decided by the first pair
    # one warm-up step on each count, then alternating
    assert steps == 2 + 2 * (1 if crowded else cpu_threads.BlasThreadTuner.PROBE)
    assert tuner.chosen == expected and library.num_threads == expected
    tuner.close()
    assert library.num_threads == 8  # given back as it was


def test_the_first_step_on_all_threads_wakes_them_and_is_not_timed(monkeypatch):
    """Waking OpenBLAS's sleeping threads made the first two-thread step of the digits MLP 15–24 ms
    against 0.4 ms: timed, it looked like a crowded machine and chose one thread on a quiet one."""
    tuner, library, step = _tuner(monkeypatch, {1: 1.0, 2: 0.6}, first_on_all=25.0)
    tuner.epoch_begin()
    while tuner.probing:
        step()
    assert tuner.chosen == 2
    tuner.close()


def test_it_measures_again_only_after_twenty_times_the_measuring_time(monkeypatch):
    """Measuring at every epoch made short epochs (the digits MLP: 23 steps) spend half their steps
    measuring, and on a busy machine the two-thread steps waited for a core."""
    tuner, library, step = _tuner(monkeypatch, {1: 1.0, 2: 1.5})
    tuner.epoch_begin()
    probe_steps = 0
    while tuner.probing:
        step()
        probe_steps += 1
    assert probe_steps == 2 + 2 * tuner.PROBE
    assert tuner._probe_took == (1 + tuner.PROBE) * (1.0 + 1.5)  # a warm-up and five steps on each count
    while tuner._probe_took * tuner.REPROBE > cpu_threads.time.perf_counter() - tuner._probe_ended + 1.0:
        step()  # one thread, not timed
        tuner.epoch_begin()
        assert not tuner.probing and library.num_threads == 1
    step()
    tuner.epoch_begin()  # 20 × the measuring time has passed
    assert tuner.probing
    tuner.close()


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
