#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, then runs the whole suite.
#   bash ci/test.sh [extra pytest arguments]
# - a virtual environment in .venv with nnarray and its "test" extra (PyPI);
# - Fashion-MNIST from Debian's dataset-fashion-mnist package, for the real-data tests (needs root/apt);
# - PyTorch's CPU build when a local wheel is on this machine (for the torch parity tests and the
#   benchmark's yardsticks); without it those tests skip and say so. GPU tests skip without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing dataset-fashion-mnist (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || echo "warning: dataset-fashion-mnist could not be installed; the real-data tests will fail"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing nnarray[test]"
.venv/bin/python -m pip install -q -e ".[test]"

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  wheel=$(ls "${PIP_FIND_LINKS:-/opt/wheels}"/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    echo "== installing PyTorch (CPU) from $wheel"
    .venv/bin/python -m pip install -q "$wheel" || echo "warning: torch could not be installed; torch tests will skip"
  else
    echo "== no local PyTorch CPU wheel: torch tests will skip (pip install torch to run them)"
  fi
fi

echo "== running the tests"
exec .venv/bin/python -m pytest -ra "$@"
