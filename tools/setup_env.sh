#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) on the verified stack (see ../shared/DESIGN.md §2):
#   Python 3.10, torch==2.3.1, torchvision==0.18.1, numpy<2, Detectron2 (official if importable,
#   else the sal-detectron2==0.7.2 wheel), fvcore, pycocotools, opencv-python-headless, defect_det (editable).
# Also builds the compiled kernels defect_det._C (CPU; CUDA when setup.py finds a matching toolkit or
# FORCE_CUDA=1) through the editable install.
# Idempotent: a second run only checks imports and returns; it rebuilds _C when it is missing or
# older than a source under defect_det/csrc/.
# Env: PYTHON=/path/to/python3.10 chooses the interpreter; VENV=dir chooses the venv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.defect_det_installed"

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys; assert sys.version_info[:2]==(3,10)' 2>/dev/null; then
    command -v python3.10; return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | sort -V | tail -n 1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python3.10"; return; fi
  fi
  return 1
}

# defect_det._C is up to date when its .so exists and no file under defect_det/csrc is newer.
ext_fresh() {
  local so
  so=$(ls defect_det/_C*.so 2>/dev/null | head -n 1 || true)
  [ -n "$so" ] || return 1
  [ -z "$(find defect_det/csrc -type f -newer "$so" 2>/dev/null | head -n 1)" ] || return 1
  "$VENV/bin/python" -c 'import defect_det._C' 2>/dev/null
}

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$STAMP" -nt setup.py ] \
   && "$VENV/bin/python" -c 'import torch, torchvision, detectron2, pycocotools, cv2, ot, defect_det' 2>/dev/null; then
  if ! ext_fresh; then
    echo "[setup_env] defect_det._C missing or older than defect_det/csrc: rebuilding (editable install)"
    "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps -e .
    ext_fresh || { echo "[setup_env] ERROR: building defect_det._C failed" >&2; exit 1; }
  fi
  echo "[setup_env] $VENV is up to date ($("$VENV/bin/python" -c 'import torch, detectron2; print("torch", torch.__version__, "detectron2", detectron2.__version__)'))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python) || {
    echo "[setup_env] ERROR: Python 3.10 not found. Install it (e.g. 'pyenv install 3.10.13') or pass PYTHON=/path/to/python3.10." >&2
    exit 1
  }
  "$PY" -c 'import sys; assert sys.version_info[:2]==(3,10), sys.version' || {
    echo "[setup_env] ERROR: $PY is not Python 3.10 (the sal-detectron2 wheel is cp310 only)." >&2; exit 1; }
  echo "[setup_env] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade "pip" "setuptools<81" wheel
if ! "$VENV/bin/python" -c 'import torch, torchvision; assert torch.__version__.startswith("2.3.1") and torchvision.__version__.startswith("0.18.1")' 2>/dev/null; then
  echo "[setup_env] installing torch==2.3.1 torchvision==0.18.1 (large download, a few minutes)"
  $PIP install -q "torch==2.3.1" "torchvision==0.18.1" "numpy<2"
fi
$PIP install -q "numpy<2" fvcore iopath pycocotools opencv-python-headless "pillow" "matplotlib" "pytest" "scipy" "pot" "ninja" \
    "onnx==1.16.2" "onnxruntime==1.19.2"   # ONNX export (tools/export_model.py --format onnx) and its parity checks
if "$VENV/bin/python" -c 'import detectron2, detectron2._C' 2>/dev/null; then
  echo "[setup_env] using the detectron2 already importable: $("$VENV/bin/python" -c 'import detectron2; print(detectron2.__version__, detectron2.__file__)')"
else
  echo "[setup_env] installing sal-detectron2==0.7.2 (provides the detectron2 package)"
  $PIP install -q --no-deps "sal-detectron2==0.7.2"
  # its runtime dependencies, minus anything that would move torch/numpy off the verified pins
  $PIP install -q "numpy<2" "torch==2.3.1" "torchvision==0.18.1" termcolor yacs tabulate cloudpickle tqdm \
      tensorboard "omegaconf>=2.1" "hydra-core>=1.1" black packaging
fi
echo "[setup_env] installing defect_det (editable; builds the compiled kernels defect_det._C)"
$PIP install -q --no-build-isolation --no-deps -e .
ext_fresh || { echo "[setup_env] ERROR: defect_det._C was not built" >&2; exit 1; }
"$VENV/bin/python" -c 'import torch, detectron2, detectron2._C, defect_det, defect_det._C; print("[setup_env] OK: torch", torch.__version__, "| detectron2", detectron2.__version__, "| defect_det._C built")'
touch "$STAMP"
