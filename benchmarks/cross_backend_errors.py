"""The worst relative error of every backend against numpy on the deep networks of
``tests/test_deeper.py`` (dropout, BatchNorm, LayerNorm, nested residual blocks, the new
activations): weights, gradients and running statistics after 3 ``fit`` steps and a gradient pass.

    python benchmarks/cross_backend_errors.py

The tests assert the bounds (float64 ≤ 1e-10, float32 ≤ 1e-4); this prints the actual worst values.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import toolkit  # noqa: E402
from tests.conftest import unavailable_reason  # noqa: E402
from tests.helpers import relative_error  # noqa: E402
from tests.test_deeper import DEEP, _problem  # noqa: E402

BACKENDS = ("numba", "jax", "torch", "array_api_strict")


def run(spec: str, make, x, y, dtype: str) -> dict[str, np.ndarray]:
    with toolkit.use_backend(spec) as active:
        model = make(dtype)
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        xb = model.as_input(x)
        model.compute_gradients(xb, model.prepare_targets(y, xb.shape[0]))
        found = {f"gradient {n}": np.asarray(active.to_host(g)) for n, g in model.named_gradients()}
        found.update({f"state {n}": v for n, v in model.get_state().items()})
        found.update({f"weight {n}": v for n, v in model.get_weights().items()})
        return found


def main() -> None:
    available = [spec for spec in BACKENDS if unavailable_reason(spec) is None]
    for dtype in ("float64", "float32"):
        worst = (0.0, "")
        for kind in sorted(DEEP):
            make, x, y = _problem(kind, np.random.default_rng(20261122))
            reference = run("numpy", make, x, y, dtype)
            for spec in available:
                got = run(spec, make, x, y, dtype)
                for name, value in reference.items():
                    error = relative_error(got[name], value)
                    if error > worst[0]:
                        worst = (error, f"{spec}, {kind}, {name}")
        print(f"{dtype}: worst relative error against numpy {worst[0]:.3g} ({worst[1]}); backends: {', '.join(available)}")


if __name__ == "__main__":
    main()
