#!/usr/bin/env bash
# The GPU proof in one run (issue #31), on a machine with an NVIDIA GPU and no package registry:
#
#     bash gpu/fetch_wheels.sh                     # here, first: the wheels the GPU machine lacks
#     run(command="bash gpu/check.sh", carry=[".whl"], timeout_s=560)
#
# It installs the carried wheels (--no-index --no-deps --target), installs the project without build
# isolation (so its backends' entry points exist), prints nvidia-smi and the libraries' versions, then
# runs, each part under its own time budget, with everything tee'd under $OUT:
#   1. the suite's GPU-relevant files with TOOLKIT_TEST_BACKENDS=cupy,torch:cuda,jax:gpu (gradients
#      of every layer family against numpy on the host, checkpoints across devices, dropout masks);
#   2. benchmarks/gpu_step.py: the toolkit on cupy, torch:cuda and jax:gpu against PyTorch CUDA
#      eager (and torch.compile) at MLP batch 4096 and LeNet batch 1024, float32;
#   3. examples/mnist_cnn.py on cupy, end to end (accuracy and time).
# A part that fails or runs out of time is recorded in $OUT/summary.txt and the next part runs.
# The whole run fits in 8 minutes (budgets below: 30 + 240 + 150 + 60 s).
#
# GPU_CHECK_DRY_RUN=1 runs the same script on a CPU-only machine (tests/test_gpu_check.py does, so
# the script cannot rot while no GPU is around): the GPU parts become their CPU forms on small
# sizes, or are skipped with the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
DRY=${GPU_CHECK_DRY_RUN:-0}
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# part NAME SECONDS COMMAND...: run one part under a time budget, its output tee'd to $OUT/NAME.log
part() {
    local name=$1 budget=$2; shift 2
    local started=$SECONDS
    say "== $name (budget ${budget}s): $*"
    timeout --kill-after=10 "$budget" "$@" > >(tee "$OUT/$name.log") 2>&1
    local code=$?
    local took=$((SECONDS - started))
    case $code in
        0) say "   $name: ok in ${took}s" ;;
        124|137) say "   $name: OUT OF TIME after ${took}s (budget ${budget}s)" ;;
        *) say "   $name: FAILED (exit $code) after ${took}s" ;;
    esac
    return 0
}

if [ "$DRY" = 1 ]; then
    say "dry run (GPU_CHECK_DRY_RUN=1): CPU forms of every part, small sizes"
    BACKENDS=numpy
else
    BACKENDS=cupy,torch:cuda,jax:gpu
fi

# -- the carried wheels and the project --------------------------------------------------------
if ls .whl/*.whl > /dev/null 2>&1; then
    # Only the distributions this machine lacks: its own builds (numpy, torch, jax...) stay in charge.
    missing=$(python3 - .whl/*.whl <<'PY'
import importlib.metadata, pathlib, sys
for wheel in sys.argv[1:]:
    name = pathlib.Path(wheel).name.split("-")[0]
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
)
    if [ -n "$missing" ]; then
        say "wheels to install: $(echo $missing | xargs -n1 basename | tr '\n' ' ')"
        part install-wheels 30 python3 -m pip install --quiet --no-index --no-deps --target "$PWD/.gpu-site" $missing
        export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        say "== install-wheels: every carried wheel is installed here already"
    fi
else
    say "== install-wheels: skipped: no .whl/ folder (run gpu/fetch_wheels.sh and carry .whl)"
fi
if [ "$DRY" = 1 ]; then
    say "== install-project: skipped in the dry run (the environment that runs it has the project installed)"
else
    part install-project 60 python3 -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi

# -- what the machine is -----------------------------------------------------------------------
if command -v nvidia-smi > /dev/null; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1; head -n 15 "$OUT/nvidia-smi.txt"
else
    say "nvidia-smi: not found (no NVIDIA driver here)"
fi
python3 - > "$OUT/versions.txt" 2>&1 <<'PY'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
for name in ("numpy", "cupy", "torch", "jax", "numba", "array_api_compat", "array_api_strict", "safetensors", "toolkit"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # noqa: BLE001 - a report, not a check
        print(name, "not importable:", type(error).__name__, error)
try:
    import torch
    print("torch.cuda", torch.cuda.is_available(), torch.version.cuda)
except Exception as error:  # noqa: BLE001
    print("torch.cuda: ?", error)
try:
    import jax
    print("jax devices", jax.devices())
except Exception as error:  # noqa: BLE001
    print("jax devices: ?", error)
PY
cat "$OUT/versions.txt" | tee -a "$SUMMARY"

# -- 1. the suite on the GPU backends ------------------------------------------------------------
TESTS="tests/test_backprop.py tests/test_conv.py tests/test_deeper.py tests/test_saving.py tests/test_fused_kernels.py tests/test_engine.py tests/test_silent_wrong_answers_2.py"
if [ "$DRY" = 1 ]; then
    # Collect the selection (the files exist, the tests import), then run one real test of it.
    part tests-collected 60 env TOOLKIT_TEST_BACKENDS=$BACKENDS python3 -m pytest -q -p no:cacheprovider --collect-only \
        $TESTS
    part tests 60 env TOOLKIT_TEST_BACKENDS=$BACKENDS python3 -m pytest -q -p no:cacheprovider \
        "tests/test_backprop.py::test_textbook_one_hidden_layer_by_hand"
else
    part tests 240 env TOOLKIT_TEST_BACKENDS=$BACKENDS python3 -m pytest -q -p no:cacheprovider -m "not mpi and not slow" \
        -o addopts="-ra" $TESTS
fi
grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 3 | tee -a "$SUMMARY"

# -- 2. the benchmarks -------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    part benchmarks 150 python3 benchmarks/gpu_step.py --dry-run --out "$OUT/gpu_step.json"
else
    part benchmarks 150 python3 benchmarks/gpu_step.py --out "$OUT/gpu_step.json"
fi
grep -E "^(mlp|lenet) " "$OUT/benchmarks.log" | tee -a "$SUMMARY"

# -- 3. the example end to end -----------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    part mnist-cnn 60 env TOOLKIT_BACKEND=numpy python3 examples/mnist_cnn.py --epochs 1 --verbose 2 --out "$OUT"
else
    part mnist-cnn 60 env TOOLKIT_BACKEND=cupy python3 examples/mnist_cnn.py --verbose 2 --out "$OUT"
fi
grep -E "test accuracy" "$OUT/mnist-cnn.log" | tee -a "$SUMMARY"
say "== done in ${SECONDS}s; logs in $OUT"
