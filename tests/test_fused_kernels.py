"""Every fused kernel a backend provides against its plain Array-API reference (``fused=False``),
and the consistency of the tables the kernels are generated from (in the spirit of thinc's
``test_ops_consistency``): same signatures, nothing listed without a kernel or an explicit fallback."""

import inspect

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy, unavailable_reason
from tests.helpers import TOLERANCE, relative_error
from toolkit.backend import Backend
from toolkit.ops.activations import ACTIVATIONS
from toolkit.ops.optim import RULES
from toolkit.ops.reference import OUTPUT_PAIRS


def _pair(backend):
    """(fused, reference) instances of the test's backend."""
    spec = backend.name if backend.name != "array_api_strict" else "array_api_strict"
    return toolkit.config.load_backend(spec, fused=True), toolkit.config.load_backend(spec, fused=False)


def _buffer(side, shape, dtype, use_buffers):
    return side.empty(shape, dtype) if use_buffers and side.reuses_buffers else None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("use_buffers", [False, True], ids=["alloc", "buffers"])
@pytest.mark.parametrize("shape", [(9, 5), (3, 70)], ids=["narrow", "wide"])  # numba: a flat loop, or row by row
def test_bias_activation_and_backward(backend, rng, name, dtype, use_buffers, shape):
    fused, reference = _pair(backend)
    activation = ACTIVATIONS[name]
    z, b, da = rng.normal(size=shape) * 3, rng.normal(size=shape[1]), rng.normal(size=shape)

    def run(side):
        t = side.dtype(dtype)
        out = _buffer(side, shape, t, use_buffers)
        # bias_activation may overwrite the product it is given: hand it a fresh copy.
        zz, a = side.bias_activation(side.asarray(z.copy(), t), side.asarray(b, t), activation, out=out)
        db_out = _buffer(side, (shape[1],), t, use_buffers)
        dz, db = side.activation_backward(side.asarray(da, t), zz, a, activation,
                                          out=_buffer(side, shape, t, use_buffers), db_out=db_out)
        return [to_numpy(side, v) for v in (zz, a, dz, db)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,units", [(5, 3), (4, 37)], ids=["small", "vector-width"])  # numba: remainder loops too
def test_gru_cell_and_its_backward(backend, rng, dtype, n, units):
    """One GRU step forward and back, fused against the reference (large pre-activations saturate
    some gates). The LSTM's cells run inside ``lstm_sequence``, tested below."""
    fused, reference = _pair(backend)
    dh = rng.normal(size=(n, units))
    x_part, u, b_hn, h = rng.normal(size=(n, 3 * units)) * 3, rng.normal(size=(n, 3 * units)), *rng.normal(size=(2, units))

    def run(side):
        t = side.dtype(dtype)
        as_t = lambda v: side.asarray(v, t)  # noqa: E731
        g_new, saved = side.gru_cell(as_t(x_part), as_t(u), as_t(b_hn), as_t(np.resize(h, (n, units))), units)
        backward = side.gru_cell_backward(as_t(dh), as_t(np.resize(h, (n, units))), saved)
        return [to_numpy(side, v) for v in (g_new, *backward)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert got.shape == want.shape and relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lstm_sequence_and_its_backward(backend, rng, dtype):
    """The whole LSTM recurrence over 6 steps forward and back (numba: its own loop, in place), fused
    against the reference's scan of single cells; the output's gradient reaches some steps only.
    37 units: numba's vector loops and their remainders both run."""
    fused, reference = _pair(backend)
    length, n, units = 6, 4, 37
    inputs, u = rng.normal(size=(length, n, 4 * units)) * 2, rng.normal(size=(units, 4 * units)) / np.sqrt(units)
    from_output = rng.normal(size=(length, n, units))
    from_output[1:3] = 0.0

    def run(side):
        t = side.dtype(dtype)
        states, previous, cells, gates = side.lstm_sequence(side.asarray(inputs, t), side.asarray(u, t), units)
        deltas = side.lstm_sequence_backward(side.asarray(from_output, t), cells, gates, side.asarray(u, t))
        return [to_numpy(side, v) for v in (states, previous, cells, gates, deltas)]

    got, want = run(fused), run(reference)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and relative_error(a, b) <= TOLERANCE[dtype]
    states, previous, cells = got[:3]
    np.testing.assert_array_equal(previous[1:], states[:-1])  # h_{t−1} is the step before's h_t
    assert np.all(previous[0] == 0) and np.all(cells[0] == 0)  # h₀ = c₀ = 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("width", [6, 37])  # numba: shorter than a vector; vectors and a remainder
def test_layer_norm_and_backward(backend, rng, dtype, width):
    fused, reference = _pair(backend)
    x, dy = rng.normal(size=(3, 4, width)) * 3 + 1, rng.normal(size=(3, 4, width))
    gamma, beta = rng.normal(size=width), rng.normal(size=width)

    def run(side):
        t = side.dtype(dtype)
        y, x_hat, inv_std = side.layer_norm(side.asarray(x, t), side.asarray(gamma, t), side.asarray(beta, t), 1e-5)
        backward = side.layer_norm_backward(side.asarray(dy, t), x_hat, inv_std, side.asarray(gamma, t))
        return [to_numpy(side, v) for v in (y, x_hat, inv_std, *backward)]

    got, want = run(fused), run(reference)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and relative_error(a, b) <= TOLERANCE[dtype]
    mean, std = x.mean(axis=-1, keepdims=True), np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    assert relative_error(got[0], gamma * (x - mean) / std + beta) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [5, 37])  # numba: shorter than a vector; vectors and a remainder
def test_attention_weights_and_backward(backend, rng, dtype, causal, length):
    fused, reference = _pair(backend)
    scores, dp = rng.normal(size=(2, 3, length, length)) * 4, rng.normal(size=(2, 3, length, length))
    scores[0, 0, -1] = -90.0  # exponentials in float32's subnormal range and below it
    scores[0, 0, -1, 0] = 0.0

    def run(side):
        t = side.dtype(dtype)
        p = side.attention_weights(side.asarray(scores, t), causal, length)
        return to_numpy(side, p), to_numpy(side, side.attention_weights_backward(side.asarray(dp, t), p))

    (p, ds), (p_ref, ds_ref) = run(fused), run(reference)
    assert relative_error(p, p_ref) <= TOLERANCE[dtype] and relative_error(ds, ds_ref) <= TOLERANCE[dtype]
    if causal:  # nothing above the diagonal, rows summing to 1
        assert np.all(p[..., np.triu_indices(length, 1)[0], np.triu_indices(length, 1)[1]] == 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scatter_add_rows_accumulates_repeated_ids(backend, rng, dtype):
    """An embedding's gradient: 500 positions over 7 ids (each id ~70 times, one never)."""
    fused, reference = _pair(backend)
    ids = rng.integers(0, 6, size=500)
    values = rng.normal(size=(500, 3))

    def run(side):
        return to_numpy(side, side.scatter_add_rows(side.asarray(ids), side.asarray(values, side.dtype(dtype)), 7))

    expected = np.zeros((7, 3))
    np.add.at(expected, ids, values)
    for got in (run(fused), run(reference)):
        assert got.shape == (7, 3) and np.all(got[6] == 0)
        assert relative_error(got, expected) <= TOLERANCE[dtype]


def test_take_rows_gives_each_arrays_rows_in_the_order_asked(backend, rng):
    """A batch's x (images), y (one-hot) and labels in the epoch's order, from host row numbers: the
    backend's own ``take_rows`` (one compiled gather on JAX) against NumPy's indexing and the generic one."""
    x, y = rng.normal(size=(40, 5, 3)), np.eye(4)[rng.integers(0, 4, size=40)]
    labels = rng.integers(0, 4, size=40)
    rows = rng.permutation(40)[:13]
    arrays = (backend.asarray(x, backend.dtype("float32")), backend.asarray(y, backend.dtype("float64")),
              backend.asarray(labels))
    for taken in (backend.take_rows(arrays, rows), Backend.take_rows(backend, arrays, rows)):
        assert len(taken) == 3
        for got, source in zip(taken, (x.astype(np.float32), y, labels), strict=True):
            got = to_numpy(backend, got)
            assert got.dtype == source.dtype and np.array_equal(got, source[rows])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("pair", sorted(OUTPUT_PAIRS))
def test_output_delta(backend, rng, pair, dtype):
    fused, reference = _pair(backend)
    width = {"softmax_ce": 4, "sigmoid_bce": 1, "identity_mse": 3}[pair]
    activation = ACTIVATIONS[OUTPUT_PAIRS[pair].activation]
    z = rng.normal(size=(7, width)) * 5
    y = {"softmax_ce": lambda: np.eye(4)[rng.integers(0, 4, size=7)],
         "sigmoid_bce": lambda: rng.integers(0, 2, size=(7, 1)).astype(float),
         "identity_mse": lambda: rng.normal(size=(7, 3))}[pair]()

    def run(side):
        t = side.dtype(dtype)
        zz = side.asarray(z, t)
        loss, delta = side.output_delta(pair, zz, activation.forward(zz, side.xp), side.asarray(y, t))
        return float(loss), to_numpy(side, delta)

    (loss_f, delta_f), (loss_r, delta_r) = run(fused), run(reference)
    assert loss_f == pytest.approx(loss_r, rel=TOLERANCE[dtype])
    assert relative_error(delta_f, delta_r) <= TOLERANCE[dtype]


@pytest.mark.parametrize("rows", [6, 9000], ids=["short", "long"])  # long: numba sums the product in blocks of rows
def test_sum_rows_and_matmul(backend, rng, rows):
    fused, reference = _pair(backend)
    x, w = rng.normal(size=(rows, 3)), rng.normal(size=(rows, 4))
    sums, products = [], []
    for side in (fused, reference):
        t = side.dtype("float64")
        out = side.zeros(3, t) if side.mutable else None
        sums.append(to_numpy(side, side.sum_rows(side.asarray(x), out=out)))
        product = side.zeros((3, 4), t) if side.mutable else None
        returned = side.matmul(side.asarray(x).T, side.asarray(w), out=product)
        products.append(to_numpy(side, returned))
        if product is not None and returned is product:  # a kernel that took the hint wrote there
            np.testing.assert_array_equal(to_numpy(side, product), products[-1])
    assert relative_error(*sums) < 1e-14
    assert relative_error(*products) < 1e-14


def _momentum(nesterov, weight_decay, grad_scale=1.0):
    def scalars(step):
        carry, gain = (0.0, 1.0) if step == 1 else (0.9, 1.0)
        return grad_scale, 0.1, 0.9, carry, gain, nesterov, weight_decay
    return scalars


# The first scalar is grad_scale: 1.0, or a global clipping norm's factor (0.37 here).
OPTIMIZER_CALLS = {
    "sgd": ("sgd", lambda step: (1.0, 0.1)),
    "sgd-scaled": ("sgd", lambda step: (0.37, 0.1)),
    "momentum": ("sgd_momentum", _momentum(False, 0.01)),
    "momentum-scaled": ("sgd_momentum", _momentum(False, 0.01, 0.37)),
    "nesterov": ("sgd_momentum", _momentum(True, 0.0)),
    "adam": ("adam", lambda step: (1.0, 1e-2 / (1 - 0.9**step), 0.9, 0.999, 1e-8, 1.0, 0.01, (1 - 0.999**step) ** 0.5)),
    "adam-scaled": ("adam", lambda step: (0.37, 1e-2 / (1 - 0.9**step), 0.9, 0.999, 1e-8, 1.0, 0.01,
                                          (1 - 0.999**step) ** 0.5)),
    "adamw": ("adam", lambda step: (1.0, 1e-2 / (1 - 0.9**step), 0.9, 0.999, 1e-8, 1 - 1e-3, 0.0,
                                    (1 - 0.999**step) ** 0.5)),
    "rmsprop": ("rmsprop", lambda step: (1.0, 1e-2, 0.99, 1e-8, 0.01)),
    "rmsprop-scaled": ("rmsprop", lambda step: (0.37, 1e-2, 0.99, 1e-8, 0.01)),
}


@pytest.mark.parametrize("size", [50, 70_001], ids=["small", "large"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(OPTIMIZER_CALLS))
def test_optimizer_updates(backend, rng, case, dtype, size):
    fused, reference = _pair(backend)
    rule, scalars = OPTIMIZER_CALLS[case]
    p0, grads = rng.normal(size=size), [rng.normal(size=size) for _ in range(3)]

    def run(side):
        t = side.dtype(dtype)
        p = side.asarray(p0.copy(), t)  # updated in place on mutable backends; numpy would alias p0
        state = tuple(side.zeros(size, t) for _ in RULES[rule].state)
        for step, g in enumerate(grads, start=1):
            p, state = side.update(rule, p, side.asarray(g, t), state, scalars(step))
        return [to_numpy(side, v) for v in (p, *state)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert relative_error(got, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_buffer_reuse_is_bit_identical_to_fresh_allocations(optimizer):
    """numba's steady-state steps write into reused buffers; results must not change by one bit."""
    reason = unavailable_reason("numba")
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 12)), rng.integers(0, 4, size=32)

    def train(reuse):
        with toolkit.use_backend("numba") as backend:
            backend.reuses_buffers = reuse
            model = toolkit.Sequential([toolkit.Dense(16, activation="relu", input_dim=12),
                                        toolkit.Dense(16, activation="tanh"),
                                        toolkit.Dense(4, activation="softmax")], dtype="float64")
            model.compile(loss="categorical_crossentropy", optimizer=optimizer)
            model.fit(x, y, epochs=3, batch_size=8, verbose=0)
            return model.get_weights()

    reused, fresh = train(True), train(False)
    for name in fresh:
        np.testing.assert_array_equal(reused[name], fresh[name])


# -- consistency of the tables ----------------------------------------------------------------
def _parameters(function):
    function = getattr(function, "py_func", function)  # a numba dispatcher wraps the Python function
    return [name for name in inspect.signature(function).parameters if name != "xp"]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_update_rule_signatures_agree_with_the_table(rule):
    spec = RULES[rule]
    assert _parameters(spec.reference) == ["param", "grad", *spec.state, *spec.scalars]


def test_every_backend_kernel_has_its_references_signature(backend):
    fused, _ = _pair(backend)
    for rule, kernel in fused.update_kernels.items():
        assert rule in RULES, f"{fused.name} registers a kernel for unknown rule {rule!r}"
        assert _parameters(kernel) == _parameters(RULES[rule].reference), (fused.name, rule)
    for op in Backend.HOT_OPS:
        mine, theirs = inspect.signature(getattr(type(fused), op)), inspect.signature(getattr(Backend, op))
        assert list(mine.parameters) == list(theirs.parameters), (fused.name, op)


def test_reference_backend_runs_no_kernel(backend):
    _, reference = _pair(backend)
    assert reference.update_kernels == {} and not reference.reuses_buffers
    for op in Backend.HOT_OPS:
        assert getattr(reference, op).__func__ is getattr(Backend, op), op


def test_every_activation_and_pair_has_a_compiled_kernel_or_an_explicit_fallback():
    from toolkit_backends.cuda_sources import CUDA_ACTIVATIONS

    elementwise = {name for name, activation in ACTIVATIONS.items() if activation.elementwise}
    assert set(CUDA_ACTIVATIONS) == elementwise  # softmax (a whole row) runs the reference on cupy
    assert sorted(activation.code for activation in ACTIVATIONS.values()) == list(range(len(ACTIVATIONS)))
    assert sorted(pair.code for pair in OUTPUT_PAIRS.values()) == list(range(len(OUTPUT_PAIRS)))
    for pair in OUTPUT_PAIRS.values():
        assert pair.activation in ACTIVATIONS
    if unavailable_reason("numba") is None:
        from toolkit_backends import numba_backend

        assert set(numba_backend._DELTA_KERNELS) | {"identity_mse"} == set(OUTPUT_PAIRS)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("window,strides", [((3, 3), (1, 1)), ((2, 3), (2, 1)), ((2, 2), (3, 3)), ((1, 1), (1, 1)),
                                            ((2, 2), (2, 2)), ((3, 2), (3, 2))])  # the last two: rows left over
def test_window_kernels(backend, rng, window, strides, dtype):
    """im2col, col2im, max_pool and its backward against their references (ties included)."""
    fused, reference = _pair(backend)
    x = np.round(rng.normal(size=(2, 7, 8, 3)) * 2) / 2  # half-integers: many tied maxima
    hw = ((7 - window[0]) // strides[0] + 1, (8 - window[1]) // strides[1] + 1)
    cols = rng.normal(size=(2, *hw, window[0] * window[1], 3))
    grad = rng.normal(size=(2, *hw, 3))

    def run(side):
        t = side.dtype(dtype)
        taken = side.im2col(side.asarray(x, t), window, strides, hw)
        added = side.col2im(side.asarray(cols, t), (7, 8), window, strides)
        largest, winners = side.max_pool(side.asarray(x, t), window, strides, hw)
        routed = side.max_pool_backward(side.asarray(grad, t), winners, (7, 8), window, strides)
        return [to_numpy(side, v) for v in (taken, added, largest, winners, routed)]

    for got, want in zip(run(fused), run(reference), strict=True):
        assert got.shape == want.shape
        assert relative_error(got, want) <= TOLERANCE[dtype]


def test_cuda_dropout_source_draws_the_reference_bits():
    """The CUDA kernel's C, read as Python (it uses only int64 ^, >>, *, & and one ternary), gives
    the reference's mask: checks the generated source without a GPU."""
    import re

    from toolkit.ops import random
    from toolkit_backends.cuda_sources import DROPOUT_MASK

    statements = [s.strip() for s in DROPOUT_MASK.replace("long long ", "").replace("LL", "").split(";") if s.strip()]
    *arithmetic, choice = statements
    condition, kept = re.fullmatch(r"mask = (.+) \? (\w+) : \(T\)0", choice).groups()
    start, shape, rate, scale = 14, (5, 7), 0.35, 1 / 0.65  # rows 2… of a global batch
    key = random.layer_key(random.step_key(21, 8), 3)
    threshold = random.threshold(rate)
    drawn = []
    for i in range(35):
        scope = {"start": start, "i": i, "key": key, "threshold": threshold, "scale": scale}
        for statement in arithmetic:
            exec(statement, {}, scope)  # noqa: S102 - our own generated source
        drawn.append(scope[kept] if eval(condition, {}, scope) else 0.0)  # noqa: S307
    reference = random.dropout_mask(random.step_key(21, 8), 3, shape, start // 7, rate, np.float64, np)
    np.testing.assert_array_equal(np.array(drawn).reshape(shape), reference)


def test_max_pool_kernel_lets_nan_win_as_the_reference_does(backend):
    """A NaN in a window is its maximum and its winner (the first NaN), in the kernel as in ``xp.max``."""
    fused, reference = _pair(backend)
    x = np.arange(2 * 4 * 4 * 2, dtype=np.float64).reshape(2, 4, 4, 2)
    x[0, 1, 1, 0] = x[0, 0, 1, 0] = x[1, 3, 2, 1] = np.nan  # two NaNs in one window, one in another

    def run(side):
        largest, winners = side.max_pool(side.asarray(x, side.dtype("float64")), (2, 2), (2, 2), (2, 2))
        return to_numpy(side, largest), to_numpy(side, winners)

    (got, got_winners), (want, want_winners) = run(fused), run(reference)
    assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[1, 1, 1, 1])
    np.testing.assert_array_equal(got, want)
    assert got_winners[0, 0, 0, 0] == 1  # the first NaN in row-major window order
    np.testing.assert_array_equal(got_winners[~np.isnan(want)], want_winners[~np.isnan(want)])
