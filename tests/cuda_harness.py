"""The CuPy backend's CUDA kernels (``toolkit_backends.cuda_sources``) as plain C++ and as CUDA
files, generated from the same specs CuPy compiles, so their arithmetic runs and their syntax is
checked on machines without a GPU (``tests/test_cuda_arithmetic.py``).

A spec's parameters use CuPy's notation: ``T name`` is taken element by element (here always as an
array: the caller broadcasts scalars), ``raw T name`` is a whole array the body indexes itself, and
outputs are read and written. ``T`` becomes ``float`` and ``double``.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from toolkit_backends.cuda_sources import ElementwiseSpec

C_TYPES = {"int32": "int", "int64": "long long", "bool": "bool", "float64": "double", "float32": "float"}
NUMPY_TYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "float64": np.float64, "float32": np.float32}
# Unqualified calls in the bodies (exp, tanh, isnan...) resolve to these, for float and double alike,
# before the C library's global double-only versions.
MATH = "using std::exp; using std::tanh; using std::fabs; using std::isnan; using std::expm1; using std::log1p; " \
       "using std::sqrt;"


@dataclass(frozen=True)
class Param:
    raw: bool
    type: str
    name: str

    def c_type(self, scalar: str) -> str:
        return scalar if self.type == "T" else C_TYPES[self.type]


def params(text: str) -> list[Param]:
    found = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        found.append(Param(raw, *words[raw:]))
    return found


def _signature(spec: ElementwiseSpec, scalar: str = "T") -> str:
    ins = [f"const {p.c_type(scalar)}* {p.name if p.raw else p.name + '_p'}" for p in params(spec.in_params)]
    outs = [f"{p.c_type(scalar)}* {p.name}_p" for p in params(spec.out_params)]
    return ", ".join(["long long n", *ins, *outs])


def _arguments(spec: ElementwiseSpec) -> str:
    return ", ".join(["n", *(p.name if p.raw else f"{p.name}_p" for p in params(spec.in_params)),
                      *(f"{p.name}_p" for p in params(spec.out_params))])


def _body(spec: ElementwiseSpec) -> str:
    bind = [f"const {p.c_type('T')} {p.name} = {p.name}_p[i];" for p in params(spec.in_params) if not p.raw]
    bind += [f"{p.c_type('T')}& {p.name} = {p.name}_p[i];" for p in params(spec.out_params)]
    return " ".join(bind) + "\n    " + spec.body + ";"


def cpp_source(specs: tuple[ElementwiseSpec, ...]) -> str:
    """Each spec as a loop over i in a C++ template, with ``extern "C"`` float and double entry points
    (``<name>_float``, ``<name>_double``)."""
    parts = ["#include <cmath>", "namespace kernels {", MATH]
    for spec in specs:
        parts.append(f"template <typename T> void {spec.name}({_signature(spec)}) {{\n"
                     f"  for (long long i = 0; i < n; ++i) {{ {_body(spec)} }}\n}}")
    parts.append("}")
    for spec in specs:
        for scalar in ("float", "double"):
            parts.append(f'extern "C" void {spec.name}_{scalar}({_signature(spec, scalar)}) '
                         f"{{ kernels::{spec.name}<{scalar}>({_arguments(spec)}); }}")
    return "\n".join(parts) + "\n"


def cuda_source(specs: tuple[ElementwiseSpec, ...]) -> str:
    """Each spec as a ``__global__`` CUDA kernel over one element per thread, instantiated for float
    and double: what ``nvcc --ptx`` compiles (CuPy wraps the same body the same way)."""
    parts = ["namespace kernels {"]
    for spec in specs:
        parts.append(f"template <typename T> __global__ void {spec.name}({_signature(spec)}) {{\n"
                     f"  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
                     f"  if (i >= n) return;\n  {_body(spec)}\n}}")
        for scalar in ("float", "double"):
            parts.append(f"template __global__ void {spec.name}<{scalar}>({_signature(spec, scalar)});")
    parts.append("}")
    return "\n".join(parts) + "\n"


class CompiledKernels:
    """The C++ kernels compiled into a shared library and called through ctypes on NumPy arrays."""

    def __init__(self, specs: tuple[ElementwiseSpec, ...], compiler: str, folder: str) -> None:
        self.specs = {spec.name: spec for spec in specs}
        source = os.path.join(folder, "kernels.cpp")
        library = os.path.join(folder, "kernels.so")
        with open(source, "w") as stream:
            stream.write(cpp_source(specs))
        # No -ffast-math: IEEE semantics (NaN, inf, denormals) as on the GPU without --use_fast_math.
        subprocess.run([compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-o", library, source],
                       check=True, capture_output=True, text=True)
        self.library = ctypes.CDLL(library)

    def __call__(self, name: str, dtype: type, inputs: dict[str, object], n: int) -> dict[str, np.ndarray]:
        """Run kernel ``name`` over ``n`` elements; scalars among ``inputs`` are broadcast. Outputs
        given in ``inputs`` start from those values (they are read and written); returns them all."""
        spec = self.specs[name]
        args: list[object] = [ctypes.c_longlong(n)]
        keep = []
        for p in params(spec.in_params):
            if p.raw:
                array = np.ascontiguousarray(inputs[p.name], dtype=dtype)
            else:
                array = np.ascontiguousarray(np.broadcast_to(inputs[p.name], (n,)),
                                             dtype=NUMPY_TYPES.get(p.type, dtype))
            keep.append(array)
            args.append(ctypes.c_void_p(array.ctypes.data))
        outputs = {}
        for p in params(spec.out_params):
            start = inputs.get(p.name, np.zeros(n))
            outputs[p.name] = np.array(np.broadcast_to(start, (n,)), dtype=dtype)
            args.append(ctypes.c_void_p(outputs[p.name].ctypes.data))
        suffix = "float" if np.dtype(dtype) == np.float32 else "double"
        getattr(self.library, f"{name}_{suffix}")(*args)
        return outputs


def compile_cuda(specs: tuple[ElementwiseSpec, ...], nvcc: str, arch: str = "sm_90") -> str:
    """PTX of every kernel from ``nvcc --ptx``; raises ``CalledProcessError`` with nvcc's message."""
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kernels.cu")
        with open(source, "w") as stream:
            stream.write(cuda_source(specs))
        output = os.path.join(folder, "kernels.ptx")
        subprocess.run([nvcc, "--ptx", f"-arch={arch}", "-o", output, source], check=True, capture_output=True,
                       text=True)
        with open(output) as stream:
            return stream.read()
