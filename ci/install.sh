#!/usr/bin/env bash
# Install what nnarray's commands need on a fresh machine (offline apart from PyPI and Debian):
#   bash ci/install.sh EXTRAS     EXTRAS: the pip extras, comma-separated ("test", "scripts", "scripts,cuda12")
# - Fashion-MNIST from Debian's dataset-fashion-mnist package (when root and apt-get exist);
# - a virtual environment in .venv holding nnarray (editable) with the extra.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-scripts}

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "== installing dataset-fashion-mnist (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } >/dev/null \
      || echo "warning: dataset-fashion-mnist could not be installed"
  else
    echo "note: Fashion-MNIST is not installed (as root: apt-get install dataset-fashion-mnist)"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing nnarray[$extra] into .venv"
.venv/bin/python -m pip install -q -e ".[$extra]"
