#!/usr/bin/env bash
# Create the exporter virtual environments for the model zoo, OUTSIDE the repository, and
# (with --export) run each family's export script in its venv to rewrite models/zoo/*.onnx|npz.
#
#     models/zoo/setup_venvs.sh [--export] [torch] [tf] [jax] [paddle] [sklearn]   # default: all
#
# The exporters are never dependencies of lipgraph or of its tests: the committed .onnx/.npz
# files are all the tests need. ZOO_VENVS (default /work/venvs) says where the venvs go.
# These are the exact pins the committed models were exported with (Python 3.11, x86-64 CPU).
set -euo pipefail
ROOT=${ZOO_VENVS:-/work/venvs}
PYTHON=${PYTHON:-python3.11}
PIP="pip install -q --disable-pip-version-check"

# torch first, pinned to the CPU wheel, so nothing pulls a multi-GB CUDA build.
TORCH_PINS="torch==2.13.0 onnxscript==0.7.2 onnx==1.23.2 onnxruntime==1.32.0"
TF_PINS="tensorflow-cpu==2.21.0 tf2onnx==1.17.0"
JAX_PINS="jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 jax2onnx==0.17.1"
# paddle2onnx imports packaging and has polygraphy pip-install onnx_graphsurgeon, sympy and
# onnxruntime on first use unless they are already there: pin them here instead.
PADDLE_PINS="paddlepaddle==3.3.1 paddle2onnx==2.1.0 packaging==26.4 onnx_graphsurgeon==0.6.1 sympy==1.14.0 onnxruntime==1.32.0"
SKLEARN_PINS="scikit-learn==1.9.1 skl2onnx==1.20.0 onnxruntime==1.32.0"

make_venv() {  # name, pins...
    local dir=$ROOT/zoo-$1; shift
    [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
    for pins in "$@"; do "$dir/bin/python" -m $PIP $pins; done
    "$dir/bin/python" -m pip freeze > "$dir/freeze.txt"
    echo "ready: $dir"
}

EXPORT=0
if [ "${1:-}" = "--export" ]; then EXPORT=1; shift; fi
ZOO=$(cd "$(dirname "$0")" && pwd)
families=${*:-torch tf jax paddle sklearn}
for f in $families; do
    case $f in
        torch)   make_venv torch   "torch==2.13.0" "$TORCH_PINS"; script=export_torch.py ;;
        tf)      make_venv tf      "$TF_PINS";      script=export_keras.py ;;
        jax)     make_venv jax     "$JAX_PINS";     script=export_jax.py ;;
        paddle)  make_venv paddle  "$PADDLE_PINS";  script=export_paddle.py ;;
        sklearn) make_venv sklearn "$SKLEARN_PINS"; script=export_sklearn.py ;;
        *) echo "unknown family: $f" >&2; exit 2 ;;
    esac
    if [ $EXPORT = 1 ]; then "$ROOT/zoo-$f/bin/python" "$ZOO/$script"; fi
done
