#!/usr/bin/env bash
# Prepare ci/carry/ (ignored by git) for a lent CUDA machine, which has CuPy, NumPy and PyTorch but
# no internet: pure-Python wheels nnarray's tests need there, and the Fashion-MNIST IDX files.
# Run here (with PyPI access), then carry ci/carry with the device tool and run ci/gpu.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p ci/carry/wheels ci/carry/fashion-mnist
for pkg in array-api-compat array-api-strict; do  # the rest (pytest, tqdm, matplotlib, torch, cupy) is there
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d ci/carry/wheels "$pkg"
done
cp -u /usr/share/datasets/fashion-mnist/*.gz ci/carry/fashion-mnist/
# mpi4py and MPICH's wheel for the GPU communicator checks (ci/gpu.sh installs them in a venv of their own).
mkdir -p ci/carry/mpi-wheels
for pkg in mpi4py mpich; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d ci/carry/mpi-wheels "$pkg"
done
du -sh ci/carry
