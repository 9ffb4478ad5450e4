"""CUDA source of the CuPy kernels, kept apart from cupy so that the consistency tests can read it
on machines without a GPU."""

from __future__ import annotations

from toolkit.ops.activations import CODES

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
}


def activation_branches(part: int) -> str:
    """The C branches on ``code`` of part 0 (forward) or 1 (backward) of every entry."""
    cases = [f"if (code == {CODES[name]}) {{ {sources[part]} }}" for name, sources in CUDA_ACTIVATIONS.items()]
    return "\n    else ".join(cases)
