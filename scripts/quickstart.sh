#!/usr/bin/env bash
# The main job in one command: install what is needed, then train on real data.
#   bash scripts/quickstart.sh [nnarray train options]     e.g. --epochs 5 --backend cupy
# Installs Fashion-MNIST (Debian package, when root) and .venv with nnarray[scripts,numba] (or the extras in
# $NNARRAY_EXTRAS, e.g. NNARRAY_EXTRAS=scripts,cuda12 for a GPU), then runs
# `nnarray train`, which writes checkpoint, best model, history and PNG plots into a new runs/<date-time>/
# (runs/latest points at it; or --out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh "${NNARRAY_EXTRAS:-scripts,numba}"
exec .venv/bin/nnarray train "$@"
