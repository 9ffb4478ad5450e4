"""The CuPy backend's CUDA kernels checked without a GPU (issue #31): their bodies compiled as C++
with the host's compiler and run against the Array-API references on values that find the edge
cases (NaN, ±inf, ±1e4, denormals, signed zeros, exact ties), and compiled for the GPU by
``nvcc --ptx -arch=sm_90`` so that a syntax or type error cannot wait for a GPU. Each test skips,
with the reason, where its compiler is missing."""

import math
import pathlib
import shutil

import numpy as np
import pytest

import toolkit_backends.cuda_sources as cuda
from tests import cuda_harness
from tests.conftest import selected_backends
from toolkit.ops import optim, random
from toolkit.ops.activations import ACTIVATIONS, CODES, LEAKY_RELU_SLOPE

if "numpy" not in selected_backends():  # nothing here depends on the backend under test
    pytest.skip("the CUDA arithmetic is checked once, in the numpy session", allow_module_level=True)

COMPILER = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
NVCC = shutil.which("nvcc")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C++ compiler (g++, c++, clang++) on the PATH")
# float32: relative 2e-6 (a few ulp), and 1e-6 absolute where a result is a difference of numbers of
# order 1 (gelu near −3: 0.5·v·(1 + tanh(…)) with tanh ≈ −1 loses the ulps of tanh to cancellation).
TOLERANCE = {np.float32: dict(rtol=2e-6, atol=1e-6), np.float64: dict(rtol=1e-14, atol=1e-15)}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def edge_values(dtype) -> np.ndarray:
    """NaN, ±inf, ±1e4, denormals, signed zeros, exact ties (±1 twice), and ordinary values."""
    tiny = np.finfo(dtype).smallest_subnormal
    special = [np.nan, np.inf, -np.inf, 1e4, -1e4, 0.0, -0.0, tiny, -tiny, 8 * tiny, 1.0, 1.0, -1.0, -1.0,
               88.0, -88.0, 710.0, -710.0, 30.0, -30.0, 1e-8, -1e-8]
    ordinary = np.random.default_rng(3).normal(scale=3.0, size=42)
    return np.array(special + list(ordinary), dtype=dtype)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    if COMPILER is None:
        pytest.skip("no C++ compiler (g++, c++, clang++) on the PATH")
    return cuda_harness.CompiledKernels(cuda.KERNELS, COMPILER, str(tmp_path_factory.mktemp("cuda-as-cpp")))


def assert_same(got, expected, dtype, what):
    expected = np.asarray(expected, dtype=dtype)
    assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{what}: NaN at {np.flatnonzero(np.isnan(got))}, " \
                                                               f"expected at {np.flatnonzero(np.isnan(expected))}"
    np.testing.assert_allclose(got, expected, err_msg=what, **TOLERANCE[dtype])


# Where float32 math differs by a few ulp between libm and NumPy's SIMD loops, as it does between
# CUDA's and NumPy's: the gelu/silu compositions amplify it near their zero crossing.
LOOSER = {"gelu": 5e-6, "silu": 5e-6, "elu": 5e-6, "softplus": 5e-6}


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(cuda.CUDA_ACTIVATIONS))
def test_activation_kernels_equal_the_references(kernels, name, dtype):
    z = edge_values(dtype)
    bias = np.array([0.0, 0.25], dtype=dtype)  # every other element shifted: the bias is added first
    n = z.size
    out = kernels("toolkit_bias_activation", dtype, {"z": z, "b": bias, "m": 2, "code": CODES[name],
                                                    "slope": LEAKY_RELU_SLOPE}, n)
    shifted = z + np.tile(bias, n // 2)
    activation = ACTIVATIONS[name]
    with np.errstate(all="ignore"):
        expected_a = activation.forward(shifted, np)
    tolerance = TOLERANCE[dtype] if dtype == np.float64 else {**TOLERANCE[dtype], "rtol": LOOSER.get(name, 2e-6)}
    assert_same(out["z_out"], shifted, dtype, f"{name}: Z + b")
    assert np.array_equal(np.isnan(out["a"]), np.isnan(expected_a)), f"{name} forward: NaN pattern differs"
    np.testing.assert_allclose(out["a"], expected_a, err_msg=f"{name} forward", **tolerance)

    a = np.asarray(expected_a, dtype=dtype)
    da = np.resize(np.array([1.0, -2.0, 0.5, np.nan, 1e4], dtype=dtype), n)
    back = kernels("toolkit_activation_backward", dtype, {"da": da, "z": shifted, "a": a, "code": CODES[name],
                                                         "slope": LEAKY_RELU_SLOPE}, n)
    with np.errstate(all="ignore"):
        expected_dz = activation.backward(da, shifted, a, np)
    assert np.array_equal(np.isnan(back["dz"]), np.isnan(expected_dz)), f"{name} backward: NaN pattern differs"
    np.testing.assert_allclose(back["dz"], expected_dz, err_msg=f"{name} backward", **tolerance)


@needs_compiler
def test_relu_propagates_nan_as_the_reference_does(kernels):
    """The CUDA ReLU once mapped NaN to 0; the reference (xp.maximum) propagates it."""
    out = kernels("toolkit_bias_activation", np.float32, {"z": np.array([np.nan, -1.0, 2.0], np.float32),
                                                          "b": np.zeros(1, np.float32), "m": 1,
                                                          "code": CODES["relu"], "slope": 0.0}, 3)
    assert math.isnan(out["a"][0]) and out["a"][1] == 0.0 and out["a"][2] == 2.0


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_mask_kernel_draws_the_reference_bits(kernels, dtype, rate):
    shape, first_row, key, stream = (37, 11), 5, random.step_key(7, 3), 2
    n = math.prod(shape)
    start = first_row * shape[1]
    out = kernels("toolkit_dropout_mask", dtype, {"start": start, "key": random.layer_key(key, stream),
                                                  "threshold": random.threshold(rate), "scale": 1.0 / (1.0 - rate)}, n)
    expected = random.dropout_mask(key, stream, shape, first_row, rate, dtype, np).reshape(-1)
    np.testing.assert_array_equal(out["mask"], expected)


OPTIMIZER_CASES = {  # the first scalar is grad_scale (a global clipping norm's factor)
    "toolkit_sgd": ("sgd", (0.37, 0.1)),
    "toolkit_sgd_momentum": ("sgd_momentum", (0.37, 0.1, 0.9, 0.9, 1.0, True, 0.01)),
    "toolkit_adam": ("adam", (0.37, 0.01, 0.9, 0.999, 1e-8, 0.999, 0.01,
                              optim.adam_step_constants(0.01, 0.9, 0.999, 3)[1])),
    "toolkit_rmsprop": ("rmsprop", (0.37, 0.01, 0.99, 1e-8, 0.001)),
}


@needs_compiler
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", sorted(OPTIMIZER_CASES))
def test_optimizer_kernels_equal_the_reference_rules(kernels, kernel, dtype):
    rule_name, scalars = OPTIMIZER_CASES[kernel]
    rule = optim.RULES[rule_name]
    grad = edge_values(dtype)
    n = grad.size
    rng = np.random.default_rng(1)
    param = rng.normal(size=n).astype(dtype)
    state = [np.abs(rng.normal(size=n)).astype(dtype) for _ in rule.state]
    with np.errstate(all="ignore"):
        expected = rule.reference(param, grad, *state, *scalars, np)
    spec = next(s for s in cuda.KERNELS if s.name == kernel)
    ins = [p.name for p in cuda_harness.params(spec.in_params)]
    outs = [p.name for p in cuda_harness.params(spec.out_params)]
    inputs = {ins[0]: grad, **dict(zip(ins[1:], scalars, strict=True)), outs[0]: param,
              **dict(zip(outs[1:], state, strict=True))}
    got = kernels(kernel, dtype, inputs, n)
    for name, value in zip(outs, expected, strict=True):
        tolerance = {**TOLERANCE[dtype], "rtol": 1e-5 if dtype == np.float32 else 1e-13}
        assert np.array_equal(np.isnan(got[name]), np.isnan(value)), f"{kernel}.{name}: NaN pattern differs"
        np.testing.assert_allclose(got[name], value, err_msg=f"{kernel}.{name}", **tolerance)


def test_the_cupy_backend_builds_every_kernel_from_its_spec():
    """cupy_backend builds its ElementwiseKernels in one place, each from a spec of cuda_sources,
    so what these tests compile is what CuPy compiles (read as text: cupy itself is not needed)."""
    text = (pathlib.Path(cuda.__file__).parent / "cupy_backend.py").read_text()
    assert text.count("ElementwiseKernel(") == 1
    names = [name for name, value in vars(cuda).items() if isinstance(value, cuda.ElementwiseSpec)]
    assert sorted(names) == sorted(name for name, value in vars(cuda).items() if value in cuda.KERNELS)
    for name in names:
        assert f"_kernel(cuda.{name})" in text, name


@pytest.mark.skipif(NVCC is None, reason="no nvcc on the PATH (the CUDA toolkit's compiler)")
def test_every_kernel_compiles_for_the_gpu_with_nvcc():
    ptx = cuda_harness.compile_cuda(cuda.KERNELS, NVCC)
    for spec in cuda.KERNELS:
        assert spec.name in ptx
