"""CUDA source of the CuPy kernels, kept apart from cupy so that the tests can read it, compile it
as C++ and run it, and compile it with nvcc, on machines without a GPU (``tests/cuda_harness.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.ops import random
from toolkit.ops.activations import CODES, GELU_CUBIC, GELU_SCALE

_GELU_T = f"T t = tanh((T){GELU_SCALE!r} * (v + (T){GELU_CUBIC!r} * (v * v * v)));"
_SIGMOID = "T s = v >= 0 ? (T)1 / ((T)1 + exp(-fabs(v))) : exp(-fabs(v)) / ((T)1 + exp(-fabs(v)));"

# CUDA of each element-wise activation of toolkit.ops.activations.ACTIVATIONS: (A from v = Z,
# dZ from da, z, a). The kernels' branches are generated from this and the toolkit's codes, so a
# new activation is one entry here (the consistency test checks that none is missing; softmax,
# which needs a whole row, runs the reference).
CUDA_ACTIVATIONS = {
    "identity": ("a = v;", "dz = da;"),
    "sigmoid": ("T e = exp(-fabs(v)); a = v >= 0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);", "dz = da * a * ((T)1 - a);"),
    "tanh": ("a = tanh(v);", "dz = da * ((T)1 - a * a);"),
    "relu": ("a = (v > 0 || isnan(v)) ? v : (T)0;", "dz = z > 0 ? da : da * (T)0;"),  # NaN propagates
    "leaky_relu": ("a = v > 0 ? v : slope * v;", "dz = z > 0 ? da : slope * da;"),
    "gelu": (_GELU_T + " a = (T)0.5 * v * ((T)1 + t);",
             "{ T v = z; " + _GELU_T + " dz = da * ((T)0.5 * ((T)1 + t) + (T)0.5 * z * ((T)1 - t * t) * ((T)"
             f"{GELU_SCALE!r} * ((T)1 + (T){3 * GELU_CUBIC!r} * (z * z)))); }}"),
    "silu": (_SIGMOID + " a = v * s;", "{ T v = z; " + _SIGMOID + " dz = da * (s * ((T)1 + z * ((T)1 - s))); }"),
    "elu": ("a = v > 0 ? v : expm1(v);", "dz = z > 0 ? da : da * (a + (T)1);"),  # NaN: expm1(NaN) = NaN
    "softplus": ("a = (v > 0 ? v : (T)0) + log1p(exp(-fabs(v)));", "{ T v = z; " + _SIGMOID + " dz = da * s; }"),
}


def activation_branches(part: int) -> str:
    """The C branches on ``code`` of part 0 (forward) or 1 (backward) of every entry."""
    cases = [f"if (code == {CODES[name]}) {{ {sources[part]} }}" for name, sources in CUDA_ACTIVATIONS.items()]
    return "\n    else ".join(cases)


def _mix(variable: str) -> str:
    """C of ``toolkit.ops.random.mix`` on a signed 64-bit ``variable`` holding a value in [0, 2³²)."""
    rounds = "".join(f"{variable} ^= {variable} >> 16; {variable} = ({variable} * {m}LL) & {random.MASK}LL; "
                     for m in random.MULTIPLIERS)
    return rounds + f"{variable} ^= {variable} >> 15;"


# The dropout mask of toolkit.ops.random.dropout_mask, element i of the flattened batch: the
# same int64 arithmetic as the reference, so every backend draws the same bits.
DROPOUT_MASK = (
    "long long h = (start + i) ^ key; " + _mix("h")
    + f" h = (h + key) & {random.MASK}LL; " + _mix("h")
    + " mask = h >= threshold ? scale : (T)0;"
)


@dataclass(frozen=True)
class ElementwiseSpec:
    """One CuPy ``ElementwiseKernel``: its parameters, in CuPy's notation (``"T z, raw T b, int32 m"``;
    outputs are read and written), its body in CUDA C++ and its name. The CuPy backend builds its
    kernels from these, and the tests compile the same bodies with the host's C++ compiler and
    with ``nvcc``, so the arithmetic is checked on machines without a GPU."""

    in_params: str
    out_params: str
    body: str
    name: str


BIAS_ACTIVATION = ElementwiseSpec("T z, raw T b, int32 m, int32 code, T slope", "T z_out, T a",
                                  "T v = z + b[i % m]; z_out = v;\n    " + activation_branches(0),
                                  "toolkit_bias_activation")
ACTIVATION_BACKWARD = ElementwiseSpec("T da, T z, T a, int32 code, T slope", "T dz", activation_branches(1),
                                      "toolkit_activation_backward")
DROPOUT = ElementwiseSpec("int64 start, int64 key, int64 threshold, T scale", "T mask", DROPOUT_MASK,
                          "toolkit_dropout_mask")
SGD = ElementwiseSpec("T g, T grad_scale, T lr", "T p", "p -= lr * (grad_scale * g);", "toolkit_sgd")
SGD_MOMENTUM = ElementwiseSpec(
    "T grad, T grad_scale, T lr, T momentum, T carry, T gain, bool nesterov, T weight_decay", "T p, T velocity",
    """
    T g = grad_scale * grad + weight_decay * p;
    T v = carry * velocity + gain * g;
    velocity = v;
    p -= lr * (nesterov ? g + momentum * v : v);
    """,
    "toolkit_sgd_momentum",
)
ADAM = ElementwiseSpec(
    "T grad, T grad_scale, T step_size, float64 beta1, float64 beta2, T eps, T shrink, T l2, T sqrt_correction2", "T p, T m, T v",
    # 1 − β in double, then rounded, as the reference and the numba kernel do: in float32,
    # 1 − (float)0.999 is 1.3e-5 away from (float)0.001.
    """
    T q = p * shrink;
    T g = grad_scale * grad + l2 * q;
    T mi = (T)beta1 * m + (T)(1.0 - beta1) * g;
    T vi = (T)beta2 * v + (T)(1.0 - beta2) * (g * g);
    m = mi; v = vi;
    p = q - step_size * (mi / (sqrt(vi) / sqrt_correction2 + eps));
    """,
    "toolkit_adam",
)
RMSPROP = ElementwiseSpec(
    "T grad, T grad_scale, T lr, float64 alpha, T eps, T weight_decay", "T p, T s",
    """
    T g = grad_scale * grad + weight_decay * p;
    T si = (T)alpha * s + (T)(1.0 - alpha) * (g * g);
    s = si;
    p -= lr * g / (sqrt(si) + eps);
    """,
    "toolkit_rmsprop",
)
KERNELS = (BIAS_ACTIVATION, ACTIVATION_BACKWARD, DROPOUT, SGD, SGD_MOMENTUM, ADAM, RMSPROP)
