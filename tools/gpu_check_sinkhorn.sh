#!/usr/bin/env bash
# GPU check of the Sinkhorn op's CUDA kernel, for a machine with a GPU, torch and nvcc but without
# detectron2 (e.g. the lent device machine: `bash tools/gpu_check_sinkhorn.sh`):
#   1. builds defect_det._C in place with the CUDA kernel (FORCE_CUDA=1 python setup.py build_ext --inplace);
#   2. makes `defect_det` importable without running defect_det/__init__.py (which imports
#      detectron2): a sitecustomize.py generated into a temp dir on PYTHONPATH registers a bare
#      package module whose __path__ is this checkout's defect_det/;
#   3. runs tests/layers/test_sinkhorn_op.py (test_cuda_matches_cpu must run, not skip) and
#      tools/benchmark_sinkhorn.py (full grid, CPU and CUDA columns).
# Logs go to $OUT (device tool) or output/gpu_check/. Override: PYTHON, TORCH_CUDA_ARCH_LIST, MAX_JOBS,
# BENCH_ARGS (e.g. "--quick"). Exit status: non-zero if the build, the CUDA import or a test fails.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
LOG=${OUT:-$REPO/output/gpu_check}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name(0), '| threads', torch.get_num_threads())"
  echo "nvcc: $(command -v nvcc) $(nvcc --version | grep -o 'release [0-9.]*')"
  nproc
} 2>&1 | tee "$LOG/env.log"

# 1. build (sm_90 = H100/H200 unless told otherwise; a stale CPU-only .so is removed first)
export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-8}
rm -f defect_det/_C*.so
t0=$(date +%s)
if ! "$PY" setup.py build_ext --inplace >"$LOG/build.log" 2>&1; then
  tail -n 60 "$LOG/build.log"
  echo "[gpu_check] BUILD FAILED"
  exit 1
fi
echo "[gpu_check] built in $(( $(date +%s) - t0 )) s: $(ls defect_det/_C*.so)"

# 2. bare `defect_det` package (no __init__.py run), only for this script's processes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/sitecustomize.py" <<EOF
import sys, types
_m = types.ModuleType("defect_det")
_m.__path__ = ["$REPO/defect_det"]
sys.modules.setdefault("defect_det", _m)
EOF
export PYTHONPATH="$tmp:$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "
import torch
from defect_det.layers.sinkhorn import compiled_sinkhorn_available
assert compiled_sinkhorn_available('cuda'), 'defect_det._C was built without CUDA'
assert torch.cuda.is_available(), 'no GPU visible'
print('[gpu_check] defect_det._C loaded with CUDA')
" 2>&1 | tee -a "$LOG/env.log"; then
  echo "[gpu_check] _C WITH CUDA NOT IMPORTABLE"
  exit 1
fi

# 3. tests, then the benchmark
status=0
"$PY" -m pytest tests/layers/test_sinkhorn_op.py -q -ra -p no:cacheprovider 2>&1 | tee "$LOG/pytest.log" || status=1
if grep -qE "SKIPPED.*(no GPU|built without CUDA)" "$LOG/pytest.log"; then
  echo "[gpu_check] test_cuda_matches_cpu was skipped"
  status=1
fi
# optional: a small masked fwd+bwd (float32 and float64, early exit on) under compute-sanitizer memcheck
if [ "${SANITIZE:-0}" = 1 ]; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" -c "
import torch
from defect_det.layers.sinkhorn import sinkhorn
for dt in (torch.float32, torch.float64):
    c = torch.rand(3, 37, 300, dtype=dt, device='cuda', requires_grad=True)
    row = torch.ones(3, 37, dtype=torch.bool, device='cuda'); row[1, 20:] = False; row[0, 0] = False
    col = torch.ones(3, 300, dtype=torch.bool, device='cuda'); col[2, 111:] = False
    r = sinkhorn(c, 0.05, row_mask=row, col_mask=col, max_iter=20, tol=1e-7, impl='cpp')
    (r.plan.sum() + r.f.sum() + r.g.pow(2).sum()).backward()
    torch.cuda.synchronize()
print('[gpu_check] memcheck run finished')
" >"$LOG/memcheck.log" 2>&1 || status=1
  tail -n 5 "$LOG/memcheck.log"
fi
# shellcheck disable=SC2086
"$PY" tools/benchmark_sinkhorn.py ${BENCH_ARGS:-} 2>&1 | tee "$LOG/benchmark.log" || status=1
echo "[gpu_check] exit status $status"
exit $status
