#!/usr/bin/env bash
# The one script for a lent CUDA machine, run from the repository root with ci/carry carried
# (`bash ci/prepare_gpu_carry.sh` here first, then one device-tool call of `bash ci/gpu.sh`, carry ["ci/carry"],
# timeout_s 540: the script keeps itself under $GPU_SH_BUDGET = 470 s, the device tool adds its start-up).
#
# Stages, each under `timeout` and never past the budget's deadline; what each learns goes to $OUT as it goes,
# also when a stage fails or times out (the device tool brings back at most 8 files: these 8):
#   summary.txt     machine, versions, one line per stage (printed again at the end)
#   (a) carry check: the wheels arrived intact (ci/carry/MANIFEST.sha256) and import, Fashion-MNIST loads;
#       says exactly what to carry when not. Missing libraries end the run; missing data does not.
#   tests_gpu.log   (b) the gpu-marked tests, the bench / time-to-accuracy tests, 90 s per test, then the
#                       distributed checks (CuPy through NCCL and host staging) with ci/carry/mpi-wheels in a venv
#   train.log       (c) nnarray train on CuPy with its defaults (CPU: 0.8907 test accuracy at seed 0), history
#   bench.log/.json (d) scripts/bench.py, GPU rows only: cupy, cupy:fast, torch eager, torch + CUDA graph, 3 repeats
#   tta.log/.json   (e) scripts/time_to_accuracy.py to 0.88: nnarray without and with its fast path, torch eager,
#                       torch + CUDA graph; each row first runs untimed on a subset in the same process, so CuPy's
#                       kernel compilation (and torch's lazy set-up) happens outside the clocks
#   tests_rest.log  (f) the rest of the suite, with the time left
# Refuses to run with CUPY_TF32 or TORCH_ALLOW_TF32_CUBLAS_OVERRIDE set: TF32 keeps ~10 mantissa bits in
# float32 matmuls, which breaks the float32 parity tolerances and makes the torch comparison unequal.
#
# Dry run on a machine without CUDA: NNARRAY_GPU_SH_CPU=1 bash ci/gpu.sh lets the CPU stand in (stages c-e run
# on NumPy with tiny sizes, to check the plumbing; the figures mean nothing). Without it, stages that need
# CUDA say "skipped: no GPU". With $OUT unset, the files go to a new folder under /tmp, never into the repository.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
BUDGET=${GPU_SH_BUDGET:-470}
DEADLINE=$((SECONDS + BUDGET))
OUT=${OUT:-$(mktemp -d /tmp/nnarray-gpu-out.XXXXXX)}
WORK=$(mktemp -d /tmp/nnarray-gpu-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
status=0

note() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME CAP LOG CMD...: run CMD (appending to $OUT/LOG) for at most CAP seconds and never past the deadline.
stage() {
  local name=$1 cap=$2 log=$3 left limit t0 rc res
  shift 3
  left=$((DEADLINE - SECONDS))
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 15 ]; then
    note "$name: skipped: out of time ($left s left of the $BUDGET s budget)"
    return 0
  fi
  echo "== $name (at most $limit s) -> $log"
  echo "== $name: $*" >>"$OUT/$log"
  t0=$SECONDS
  timeout -k 10 "$limit" "$@" >>"$OUT/$log" 2>&1
  rc=$?
  case $rc in
    0) res=ok ;;
    124 | 137) res="TIMED OUT after $limit s" ;;
    *) res="FAILED (exit $rc)" ;;
  esac
  tail -n 15 "$OUT/$log"
  note "$name: $res in $((SECONDS - t0)) s (log: $log)"
  [ "$rc" = 0 ] || status=1
}

for var in CUPY_TF32 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE; do
  case "${!var:-0}" in
    0 | "") ;;
    *) note "refusing to run: $var=${!var} turns on TF32 (float32 matmuls keep ~10 mantissa bits); unset it"
       exit 2 ;;
  esac
done

# ---------------------------------------------------------------- (a) what arrived
note "ci/gpu.sh $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget $BUDGET s, OUT=$OUT"
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$SUMMARY"
CARRY="$REPO/ci/carry"
if [ -f "$CARRY/MANIFEST.sha256" ]; then
  if (cd "$CARRY" && sha256sum --quiet -c MANIFEST.sha256) >>"$SUMMARY" 2>&1; then
    note "(a) carry: every file of ci/carry/MANIFEST.sha256 arrived intact"
  else
    note "(a) carry: files of ci/carry are missing or damaged (above); run 'bash ci/prepare_gpu_carry.sh' on the development machine and carry [\"ci/carry\"] again"
  fi
else
  note "(a) carry: ci/carry/MANIFEST.sha256 not here: ci/carry was not carried (run 'bash ci/prepare_gpu_carry.sh', then carry [\"ci/carry\"])"
fi
for whl in "$CARRY"/wheels/*.whl; do  # pure-Python wheels: unpacking them is installing them
  [ -f "$whl" ] && "$PY" -m zipfile -e "$whl" "$WORK/site" && echo "unpacked $(basename "$whl")" >>"$SUMMARY"
done
PP=$REPO
[ -d "$WORK/site" ] && PP="$PP:$WORK/site"
export PYTHONPATH="$PP${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$CARRY/fashion-mnist" ] && export NNARRAY_DATA="$CARRY"

timeout 60 "$PY" - >>"$SUMMARY" 2>&1 <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
missing = []
for mod in ("numpy", "array_api_compat", "array_api_strict", "pytest", "pytest_timeout", "torch", "cupy", "nnarray"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')} from {getattr(m, '__file__', '?')}")
    except Exception as exc:
        print(f"{mod} NOT importable: {type(exc).__name__}: {exc}")
        missing.append(mod)
need = [m for m in ("numpy", "array_api_compat", "array_api_strict", "pytest", "nnarray") if m in missing]
if need:
    print(f"(a) FAILED: {', '.join(need)} missing: carry ci/carry (bash ci/prepare_gpu_carry.sh brings array-api-compat "
          "and array-api-strict); numpy and pytest must be on the machine")
    sys.exit(2)
import nnarray as nn
try:
    (X, t), (Xt, tt) = nn.datasets.load_fashion_mnist(download=False)
    print(f"(a) Fashion-MNIST: {X.shape[0]} training, {Xt.shape[0]} test images from {nn.datasets.find_dataset_dir('fashion-mnist')}")
except FileNotFoundError as exc:
    print("(a) Fashion-MNIST NOT found: carry ci/carry/fashion-mnist (bash ci/prepare_gpu_carry.sh copies it from "
          "Debian's dataset-fashion-mnist package). " + str(exc).splitlines()[0])
    sys.exit(3)
EOF
rc=$?
tail -n 12 "$SUMMARY"
if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
  note "(a) FAILED (exit $rc): libraries missing or broken: stages b-f not run"
  exit 1
fi
[ "$rc" = 3 ] && status=1

GPU=0
reason=$(timeout 60 "$PY" -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); assert n > 0, 'no CUDA device'" 2>&1 | tail -n 1) && GPU=1
CPU_STANDIN=0
if [ "$GPU" = 1 ]; then
  note "(a) CUDA: CuPy sees a device"
elif [ "${NNARRAY_GPU_SH_CPU:-0}" = 1 ]; then
  CPU_STANDIN=1
  note "(a) CUDA: none ($reason); NNARRAY_GPU_SH_CPU=1: the CPU stands in for stages c-e (tiny sizes, plumbing only)"
else
  note "(a) CUDA: none ($reason)"
fi

TIMEOUT_OPT=()
if "$PY" -c "import pytest_timeout" 2>/dev/null; then
  TIMEOUT_OPT=(--timeout=90)
else
  note "(b) pytest-timeout is not installed: tests are bounded only by the stage's timeout"
fi
PYTEST=("$PY" -m pytest -ra -p no:cacheprovider "${TIMEOUT_OPT[@]}")

# ---------------------------------------------------------------- (b) GPU tests and the scripts' tests first
stage "(b) gpu-marked tests" 150 tests_gpu.log "${PYTEST[@]}" -m gpu tests
stage "(b) bench/time-to-accuracy tests" 90 tests_gpu.log "${PYTEST[@]}" tests/test_bench.py tests/test_time_to_accuracy.py
# The MPI wheels need a prefix of their own (mpiexec in bin/, libmpi in lib/): a venv that sees this Python's
# packages (CuPy, NumPy, torch, pytest); nnarray and the carried pure wheels come through PYTHONPATH.
if ls "$CARRY"/mpi-wheels/*.whl >/dev/null 2>&1; then
  stage "(b) distributed checks" 90 tests_gpu.log bash -c "$(printf '%q ' "$PY" -m venv --system-site-packages \
    "$WORK/mpi-venv") && $(printf '%q ' "$WORK/mpi-venv/bin/python" -m pip install -q --no-index --no-deps \
    "$CARRY"/mpi-wheels/*.whl) && NNARRAY_REQUIRE_MPI=1 $(printf '%q ' "$WORK/mpi-venv/bin/python" -m pytest -ra \
    -p no:cacheprovider "${TIMEOUT_OPT[@]}" tests/test_distributed.py)"
else
  note "(b) distributed checks: skipped: no ci/carry/mpi-wheels (run ci/prepare_gpu_carry.sh)"
fi

# ---------------------------------------------------------------- (c)-(e) need CUDA
if [ "$GPU" = 1 ]; then
  TRAIN=(--backend cupy --dataset fashion-mnist)
  BENCH=(--backends cupy,cupy:fast --repeats 3)
  TTA=(--backend cupy)
elif [ "$CPU_STANDIN" = 1 ]; then
  TRAIN=(--backend numpy --dataset fashion-mnist --subset 2000 --hidden 32 --epochs 2)
  BENCH=(--backends numpy,numpy:fast --repeats 3 --configs 100x100 --samples 1000 --settle 0.05)
  TTA=(--backend numpy --subset 3000 --hidden 32 --max-epochs 2 --target 0.5)
fi
if [ "$GPU" = 1 ] || [ "$CPU_STANDIN" = 1 ]; then
  stage "(c) training" 75 train.log bash -c "$(printf '%q ' "$PY" scripts/train.py "${TRAIN[@]}" --out "$WORK/run" \
    --no-plots --quiet) && echo '== history.json' && $(printf '%q ' "$PY" -c \
    'import json, sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' "$WORK/run/history.json")"
  stage "(d) bench, GPU rows" 100 bench.log "$PY" scripts/bench.py "${BENCH[@]}" \
    --yardsticks torch-eager,torch-cudagraph --json "$OUT/bench.json"
  stage "(e) time to 0.88" 110 tta.log "$PY" scripts/time_to_accuracy.py "${TTA[@]}" \
    --impls nnarray:generic,nnarray:fast,torch-eager,torch-cudagraph --json "$OUT/tta.json"
else
  for s in "(c) training" "(d) bench, GPU rows" "(e) time to 0.88"; do note "$s: skipped: no GPU"; done
fi

# ---------------------------------------------------------------- (f) the rest, with the time left
stage "(f) rest of the suite" 100000 tests_rest.log "${PYTEST[@]}" -m "not gpu" \
  --ignore=tests/test_bench.py --ignore=tests/test_time_to_accuracy.py --ignore=tests/test_distributed.py

note "ci/gpu.sh finished with status $status after $SECONDS s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
echo "================ summary"
cat "$SUMMARY"
exit $status
