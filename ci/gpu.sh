#!/usr/bin/env bash
# The one script to run on a lent CUDA machine (from the repository root, with ci/carry carried):
#   bash ci/gpu.sh
# 1. installs what is missing there from ci/carry/wheels (see ci/prepare_gpu_carry.sh);
# 2. refuses to run with CUPY_TF32 set (TF32 breaks the float32 parity tolerances);
# 3. runs the whole test suite, the gpu-marked NumPy-vs-CuPy parity tests included;
# 4. trains Fashion-MNIST on cupy with scripts/train.py;
# 5. runs scripts/bench.py (nnarray vs plain NumPy/CuPy, PyTorch eager, PyTorch + CUDA graph);
# 6. runs scripts/time_to_accuracy.py (seconds to 0.88 on Fashion-MNIST, nnarray on cupy vs PyTorch).
# Logs and JSON go to $OUT: 8 files, the most the device tool brings back.
# From a development machine: `bash ci/prepare_gpu_carry.sh`, then one device-tool run of
# `bash ci/gpu.sh` carrying ci/carry, with a timeout that leaves room for one rerun (it needs ~5 min).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

case "${CUPY_TF32:-0}" in
  0|"") ;;
  *) echo "refusing to run: CUPY_TF32=$CUPY_TF32 makes float32 matmuls keep ~10 mantissa bits; unset it" >&2; exit 2 ;;
esac

if ls ci/carry/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ci/carry/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d ci/carry/fashion-mnist ] && export NNARRAY_DATA="$PWD/ci/carry"

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, numpy, cupy, array_api_compat; print(sys.version); print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'array_api_compat', array_api_compat.__version__)"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
echo "== tests (gpu-marked included)"
python3 -m pytest -ra -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -n 40
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== distributed: CuPy arrays through NCCL (one rank) and host staging (one and two ranks)"
# The MPI wheels need a prefix of their own (mpiexec in bin/, libmpi in lib/): a venv that sees the
# system's CuPy and NumPy. Unverified until it has run on a lent GPU machine.
if ls ci/carry/mpi-wheels/*.whl >/dev/null 2>&1; then
  if python3 -m venv --system-site-packages /tmp/mpi-venv \
    && /tmp/mpi-venv/bin/python -m pip install -q --no-index --no-deps ci/carry/mpi-wheels/*.whl; then
    # Appended to pytest.log: $OUT already holds the most files the device tool brings back.
    NNARRAY_REQUIRE_MPI=1 /tmp/mpi-venv/bin/python -m pytest -ra -p no:cacheprovider tests/test_distributed.py 2>&1 \
      | tee -a "$OUT/pytest.log" | tail -n 15
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  else
    echo "the MPI wheels could not be installed"; status=1
  fi
else
  echo "no ci/carry/mpi-wheels (run ci/prepare_gpu_carry.sh): distributed GPU checks not run"
fi

echo "== training Fashion-MNIST on cupy"
python3 scripts/train.py --backend cupy --dataset fashion-mnist --out /tmp/nnarray-run --no-plots 2>&1 | tee "$OUT/train.log" | grep -v "^epoch.*batch/s"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
cp /tmp/nnarray-run/history.json "$OUT/train_history.json" 2>/dev/null

echo "== benchmark"
python3 scripts/bench.py --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== time to 0.88 test accuracy"
python3 scripts/time_to_accuracy.py --backend cupy --json "$OUT/tta.json" 2>&1 | tee "$OUT/tta.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

echo "== ci/gpu.sh finished with status $status"
exit $status
