#!/usr/bin/env bash
# The one script for a lent CUDA machine, run from the repository root with ci/carry carried:
# `bash ci/prepare_gpu_carry.sh` here first, then ONE device-tool call of `bash ci/gpu.sh` with carry ["ci/carry"]
# and timeout_s 360. The script keeps itself under $GPU_SH_BUDGET (300 s): with the machine's start, such a call
# leaves room in 15 device minutes for a second one.
#
# Stages, each under `timeout` in a slot of the budget: every stage has a cap, a fixed share of the budget (the caps
# add up to less than it; GPU_SH_PLAN=1 prints them), and may also use the time earlier stages left unused; none
# runs past the budget's deadline. What each learns goes to $OUT as it goes, also when a stage fails or times out;
# the device tool brings back at most 8 files, these 8:
#   summary.txt   machine, versions, one line per stage (printed again at the end)
#   (a) carry: the wheels arrived intact (ci/carry/MANIFEST.sha256) and import, Fashion-MNIST loads; says
#       exactly what to carry when not (missing libraries end the run, missing data does not). MPI: the
#       machine's own mpi4py when it loads an MPI library and an mpiexec is on PATH, else the carried
#       mpi-wheels installed with `pip install --prefix` into a folder put on PYTHONPATH, PATH and
#       LD_LIBRARY_PATH (no nested venv: every child Python keeps this Python's packages). Then a tiny
#       float32 and float64 fit (generic and fast path) fills CuPy's kernel cache for the stages after it.
#   tests.log     (b) the gpu-marked tests (NNARRAY_REQUIRE_GPU=1 on a GPU: a gpu test that cannot run fails),
#                     then the distributed checks (mpiexec -n 2 equal to one process; NNARRAY_REQUIRE_MPI=1),
#                 (g) the rest of the suite in the time left: reported, never a failure of this run (CI runs it)
#   parity.log/.json (c) scripts/gpu_parity.py: NumPy against CuPy, torch on CUDA and JAX on CUDA (when nnarray
#                     has a JAX backend): float64 to 1e-10 after 300 steps, float32 within the guide's tolerances
#   train.log     (d) nnarray train on CuPy with its defaults (CPU: 0.8907 test accuracy at seed 0), history
#   speed.log, bench.json, tta.json  (e) scripts/bench.py, GPU rows: cupy, cupy:fast, torch eager, torch + CUDA
#                     graph; (f) scripts/time_to_accuracy.py to 0.88, each row warmed up outside its clock
# pytest runs with -ra and --continue-on-collection-errors: a module that fails to import is named in the
# summary and the other modules still run.
# Refuses to run with CUPY_TF32 or TORCH_ALLOW_TF32_CUBLAS_OVERRIDE set: TF32 keeps ~10 mantissa bits in
# float32 matmuls, which breaks the float32 parity tolerances and makes the torch comparison unequal.
#
# Dry run on a machine without CUDA: NNARRAY_GPU_SH_CPU=1 bash ci/gpu.sh lets the CPU stand in (parity in CPU
# mode, stages d-f on NumPy with tiny sizes, to check the plumbing; the figures mean nothing). Without it,
# stages that need CUDA say "skipped: no GPU". GPU_SH_STAGES=a,c (a comma-separated subset of a-g; a always
# runs) runs fewer stages. With $OUT unset, the files go to a new folder under /tmp, never into the repository.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
BUDGET=${GPU_SH_BUDGET:-300}
STAGES=${GPU_SH_STAGES:-a,b,c,d,e,f,g}
# Each stage's cap, in thousandths of the budget, in the order the stages run. The caps add up to 92 % of the budget;
# the rest is kept first, for the checksums, nvidia-smi and the notes. Stages run on a schedule: stage i must end by
# the start + the reserve + the caps of stages 1..i, so a stage may use the time earlier ones left unused (or that
# skipped ones did not need), every stage still gets at least its own cap, and the whole run ends inside the budget;
# the rest of the suite (g) takes what is left at the end.
ORDER=(imports cuda mpi warm gpu_tests distributed parity train bench tta)
declare -A SHARE=([imports]=40 [cuda]=30 [mpi]=30 [warm]=90 [gpu_tests]=190 [distributed]=150 [parity]=100
                  [train]=90 [bench]=100 [tta]=100)
cap() { echo $((BUDGET * SHARE[$1] / 1000)); }
CAPS=0
for k in "${ORDER[@]}"; do CAPS=$((CAPS + $(cap "$k"))); done
if [ "${GPU_SH_PLAN:-0}" = 1 ]; then
  for k in "${ORDER[@]}"; do echo "cap $k $(cap "$k")"; done
  echo "caps $CAPS budget $BUDGET (the rest of the suite takes what is left)"
  exit 0
fi
DEADLINE=$((SECONDS + BUDGET))
SLOT_END=$((SECONDS + BUDGET - CAPS))  # the reserve, then one slot per stage
slot() { SLOT_END=$((SLOT_END + $(cap "$1"))); }  # the next stage's slot ends its cap later than the last one's
slot_left() { local l=$((SLOT_END - SECONDS)); echo $((l > 5 ? l : 5)); }
OUT=${OUT:-$(mktemp -d /tmp/nnarray-gpu-out.XXXXXX)}
WORK=$(mktemp -d /tmp/nnarray-gpu-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
status=0

note() { echo "$*" | tee -a "$SUMMARY"; }
selected() { [[ ",$STAGES," == *",$1,"* ]]; }

# stage NAME KEY LOG CMD...: run CMD (appending to $OUT/LOG) in the slot of KEY (see SHARE; "" for the slot the
# last stage opened) and never past the deadline. Sets $rc; a failure or a timeout marks the run failed unless NOFAIL=1.
stage() {
  local name=$1 key=$2 log=$3 limit t0 res start
  shift 3
  [ -n "$key" ] && slot "$key"
  limit=$((SLOT_END - SECONDS))
  rc=0
  if [ "$limit" -lt 10 ]; then
    note "$name: skipped: out of time (its slot ends in $limit s; $((DEADLINE - SECONDS)) s left of the $BUDGET s budget)"
    rc=124
    return 0
  fi
  echo "== $name (at most $limit s) -> $log"
  echo "== $name: $*" >>"$OUT/$log"
  start=$(wc -l <"$OUT/$log")
  t0=$SECONDS
  timeout -k 5 "$limit" "$@" >>"$OUT/$log" 2>&1
  rc=$?
  case $rc in
    0) res=ok ;;
    124 | 137) res="TIMED OUT after $limit s" ;;
    *) res="FAILED (exit $rc)" ;;
  esac
  echo >>"$OUT/$log"  # a stage cut short leaves its last line open
  tail -n 12 "$OUT/$log"
  note "$name: $res in $((SECONDS - t0)) s (log: $log)"
  # pytest's -ra lines of this stage: the tests that failed and the modules that could not be collected
  tail -n +"$((start + 1))" "$OUT/$log" | grep -E '^(FAILED|ERROR) ' | awk '!seen[$0]++' | head -n 20 | sed 's/^/    /' | tee -a "$SUMMARY"
  [ "$rc" = 0 ] || [ "${NOFAIL:-0}" = 1 ] || status=1
}

for var in CUPY_TF32 TORCH_ALLOW_TF32_CUBLAS_OVERRIDE; do
  case "${!var:-0}" in
    0 | "") ;;
    *) note "refusing to run: $var=${!var} turns on TF32 (float32 matmuls keep ~10 mantissa bits); unset it"
       exit 2 ;;
  esac
done

# ---------------------------------------------------------------- (a) what arrived
note "ci/gpu.sh $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget $BUDGET s, stages $STAGES, OUT=$OUT"
timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$SUMMARY"
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
# Every child Python (pytest's subprocesses, mpiexec's ranks, the scripts) inherits this path.
export PYTHONPATH="$PP${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$CARRY/fashion-mnist" ] && export NNARRAY_DATA="$CARRY"

stage "(a) imports and data" imports summary.txt "$PY" ci/gpu_check.py imports
if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
  note "(a) FAILED (exit $rc): libraries missing or broken: stages b-g not run"
  exit 1
fi

GPU=0
slot cuda
reason=$(timeout "$(slot_left)" "$PY" ci/gpu_check.py cuda 2>&1 | tail -n 1) && GPU=1
CPU_STANDIN=0
if [ "$GPU" = 1 ]; then
  note "(a) CUDA: $reason"
  export NNARRAY_REQUIRE_GPU=1  # from here on, a gpu test that cannot run is a failure
elif [ "${NNARRAY_GPU_SH_CPU:-0}" = 1 ]; then
  CPU_STANDIN=1
  note "(a) CUDA: none ($reason); NNARRAY_GPU_SH_CPU=1: the CPU stands in (parity in CPU mode, stages d-f tiny, plumbing only)"
else
  note "(a) CUDA: none ($reason)"
fi

# MPI for the distributed checks: the machine's own, else the carried wheels under a prefix of their own.
# mpiexec: beside this Python (an MPI wheel in its environment), else on PATH (as tests/test_distributed.py looks).
find_mpiexec() {
  local beside
  beside="$(dirname "$(command -v "$PY")")/mpiexec"
  if [ -x "$beside" ]; then echo "$beside"; else command -v mpiexec; fi
}
MPI=0
slot mpi
if timeout "$(slot_left)" "$PY" -c "from mpi4py import MPI" >/dev/null 2>&1 && find_mpiexec >/dev/null; then
  MPI=1
  note "(a) MPI: this Python's mpi4py loads an MPI library; mpiexec is $(find_mpiexec)"
elif ls "$CARRY"/mpi-wheels/*.whl >/dev/null 2>&1; then
  stage "(a) MPI wheels into $WORK/mpi" "" summary.txt "$PY" -m pip install -q --no-index --no-deps \
    --ignore-installed --no-compile --no-warn-script-location --prefix "$WORK/mpi" "$CARRY"/mpi-wheels/*.whl
  site=$(find "$WORK/mpi" -type d -name mpi4py -path '*-packages/*' 2>/dev/null | head -n 1)
  if [ "$rc" = 0 ] && [ -n "$site" ]; then
    # The carried mpi4py before the machine's own (which is why pip must --ignore-installed it); its MPI library
    # and mpiexec from the prefix.
    export PYTHONPATH="$(dirname "$site"):$PYTHONPATH" PATH="$WORK/mpi/bin:$PATH"
    export LD_LIBRARY_PATH="$WORK/mpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    timeout "$(slot_left)" "$PY" -c "from mpi4py import MPI" >>"$SUMMARY" 2>&1 && find_mpiexec >/dev/null && MPI=1
  fi
  if [ "$MPI" = 1 ]; then
    note "(a) MPI: the carried mpi-wheels, from $WORK/mpi (mpiexec $(find_mpiexec))"
  else
    note "(a) MPI: the carried mpi-wheels did not give a working mpi4py and mpiexec (above)"
  fi
else
  note "(a) MPI: none here and no ci/carry/mpi-wheels (run ci/prepare_gpu_carry.sh): the distributed checks cannot run"
fi
if [ "$MPI" = 1 ]; then
  NNARRAY_MPIEXEC=$(find_mpiexec)
  export NNARRAY_MPIEXEC NNARRAY_REQUIRE_MPI=1
  timeout "$(slot_left)" "$PY" -c "from mpi4py import MPI; print('(a) MPI library:', MPI.Get_library_version().splitlines()[0])" 2>&1 | tee -a "$SUMMARY"
fi

slot warm
if [ "$GPU" = 1 ] || [ "$CPU_STANDIN" = 1 ]; then
  stage "(a) kernel cache warm-up" "" summary.txt "$PY" ci/gpu_check.py warm "$([ "$GPU" = 1 ] && echo cupy || echo numpy)"
fi

TIMEOUT_OPT=()
if "$PY" -c "import pytest_timeout" 2>/dev/null; then
  TIMEOUT_OPT=(--timeout=60)
else
  note "pytest-timeout is not installed: tests are bounded only by their stage's timeout"
fi
PYTEST=("$PY" -m pytest -ra -p no:cacheprovider --continue-on-collection-errors "${TIMEOUT_OPT[@]}")

# ---------------------------------------------------------------- (b) GPU tests, then the distributed checks
slot gpu_tests
if selected b; then
  stage "(b) gpu-marked tests" "" tests.log "${PYTEST[@]}" -m gpu tests
fi
slot distributed
if selected b; then
  if [ "$MPI" = 1 ]; then
    stage "(b) distributed checks" "" tests.log "${PYTEST[@]}" -m "not gpu" tests/test_distributed.py
  else
    note "(b) distributed checks: FAILED: no MPI (above)"
    status=1
  fi
fi

# ---------------------------------------------------------------- (c) parity across backends
slot parity
if selected c; then
  if [ "$GPU" = 1 ]; then
    PARITY=(--mode gpu --sizes 784,256,10 --n 3200 --batch 128)
  else
    PARITY=(--mode cpu --sizes 16,32,10 --n 400 --batch 20)
  fi
  stage "(c) parity" "" parity.log "$PY" scripts/gpu_parity.py "${PARITY[@]}" --json "$OUT/parity.json"
fi

# ---------------------------------------------------------------- (d)-(f) need CUDA
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
  slot train
  selected d && stage "(d) training" "" train.log bash -c "$(printf '%q ' "$PY" scripts/train.py "${TRAIN[@]}" \
    --out "$WORK/run" --no-plots --quiet) && echo '== history.json' && $(printf '%q ' "$PY" -c \
    'import json, sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))' "$WORK/run/history.json")"
  slot bench
  selected e && stage "(e) bench, GPU rows" "" speed.log "$PY" scripts/bench.py "${BENCH[@]}" \
    --yardsticks torch-eager,torch-cudagraph --json "$OUT/bench.json"
  slot tta
  selected f && stage "(f) time to 0.88" "" speed.log "$PY" scripts/time_to_accuracy.py "${TTA[@]}" \
    --impls nnarray:generic,nnarray:fast,torch-eager,torch-cudagraph --json "$OUT/tta.json"
else
  for s in "(d) training" "(e) bench, GPU rows" "(f) time to 0.88"; do note "$s: skipped: no GPU"; done
  slot train; slot bench; slot tta
fi

# ---------------------------------------------------------------- (g) the rest, in the time left: never a failure
if selected g; then
  left=$((DEADLINE - SECONDS))
  XDIST=()
  if [ "$(nproc)" -ge 8 ] && "$PY" -c "import xdist" 2>/dev/null; then XDIST=(-n 4 --dist loadfile); fi
  SESSION=()
  [ "${#TIMEOUT_OPT[@]}" -gt 0 ] && SESSION=(--session-timeout=$((left - 10)))
  if [ "$left" -ge 20 ]; then
    # Without the dry run of this script (it is this script) and the distributed tests (stage b).
    SLOT_END=$DEADLINE
    NOFAIL=1 stage "(g) rest of the suite" "" tests.log "${PYTEST[@]}" "${XDIST[@]}" "${SESSION[@]}" \
      -m "not gpu" --ignore=tests/test_distributed.py --deselect tests/test_gpu_sh.py::test_cpu_dry_run_of_stages_a_and_c
    counts=$(tail -n 3 "$OUT/tests.log" | grep -Eo '[0-9]+ (passed|failed|errors?|skipped)' | tr '\n' ' ')
    if grep -q "session-timeout" <(tail -n 5 "$OUT/tests.log"); then
      note "(g) rest of the suite: partial: ${counts:-nothing finished }before the time ran out; CI runs the whole suite (not a failure of this run)"
    else
      note "(g) rest of the suite: ${counts}(reported; CI runs the whole suite, so this does not fail the GPU run)"
    fi
  else
    note "(g) rest of the suite: left to CI ($left s left of the $BUDGET s budget)"
  fi
fi

note "ci/gpu.sh finished with status $status after $SECONDS s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
echo "================ summary"
cat "$SUMMARY"
exit $status
