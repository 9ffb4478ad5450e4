"""The documentation runs as written: every docstring example (doctest) and every Python block
of the README, in the numpy session (they do not depend on the backend under test)."""

import doctest
import importlib
import os
import pathlib
import pkgutil
import re

import numpy as np
import pytest

import toolkit
from tests.conftest import selected_backends, unavailable_reason

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _in_the_numpy_session():
    if "numpy" not in selected_backends():
        pytest.skip("the documentation runs once, in the numpy session")


MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(toolkit.__path__, "toolkit."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(numpy_backend, name):
    _in_the_numpy_session()
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_public_api_has_docstrings_with_examples():
    _in_the_numpy_session()
    import inspect

    missing = []
    for name in toolkit.__all__:
        value = getattr(toolkit, name)
        public = (isinstance(value, type) and not issubclass(value, Exception)) or inspect.isfunction(value)
        if public and ">>>" not in (value.__doc__ or ""):
            missing.append(name)
    # Base classes document their examples on the concrete classes; History comes from fit; load
    # and store_torch_weights point to the example of their inverse.
    assert set(missing) <= {"Layer", "Loss", "Optimizer", "History", "load", "store_torch_weights"}, missing


def _blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_blocks_run(numpy_backend, tmp_path, monkeypatch, index):
    """Each block runs with the data its text assumes: the digits (x, y; x_train, y_train binary
    for the yes/no blocks), .npy files, a loader, an endless generator."""
    _in_the_numpy_session()
    block = _blocks()[index]
    if "numba" in block and unavailable_reason("numba"):
        pytest.skip(unavailable_reason("numba"))
    from sklearn.datasets import load_digits

    digits = load_digits()
    x_all, labels = (digits.data / 16.0).astype(np.float32), digits.target
    binary = "sigmoid" in block and "softmax" not in block
    y_all = (labels == 8).astype(np.float32).reshape(-1, 1) if binary else labels
    x, y, x_test, y_test = x_all[:1400], y_all[:1400], x_all[1400:], y_all[1400:]
    monkeypatch.chdir(tmp_path)
    for name, value in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        np.save(tmp_path / f"{name}.npy", value)

    def generator():
        while True:
            for start in range(0, len(x), 64):
                yield x[start : start + 64], y[start : start + 64]

    namespace = {"np": np, "toolkit": toolkit, "x": x, "y": y, "x_train": x, "y_train": y, "x_test": x_test,
                 "y_test": y_test, "generator": generator, "loader": [(x[i : i + 64], y[i : i + 64]) for i in
                                                                     range(0, len(x), 64)]}
    if "torch" in block:
        namespace["torch"] = pytest.importorskip("torch")
        namespace.update({"Dense": toolkit.Dense, "Sequential": toolkit.Sequential})
    if block.startswith("model.fit"):  # a continuation: the model the README built just before
        model = toolkit.Sequential([toolkit.Dense(32, activation="relu", input_dim=64),
                                    toolkit.Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam")
        namespace["model"] = model
    os.environ.setdefault("MPLBACKEND", "Agg")
    exec(compile(block, f"README block {index + 1}", "exec"), namespace)  # noqa: S102 - our own README
