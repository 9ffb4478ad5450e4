"""CUDA source of the CuPy kernels, kept apart from cupy so that the consistency tests can read it
on machines without a GPU."""

from __future__ import annotations

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
    "elu": ("a = v > 0 ? v : expm1(v < 0 ? v : (T)0);", "dz = z > 0 ? da : da * (a + (T)1);"),
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
