#!/usr/bin/env bash
# Prepare ci/carry/ (ignored by git) for a lent CUDA machine, which has Python 3.12, NumPy, CuPy, PyTorch, JAX,
# scikit-learn, mpi4py, pytest, pytest-timeout and pytest-xdist but no internet: the pure-Python wheels nnarray and its
# tests need there and the MPI wheels, pinned, the Fashion-MNIST IDX files, and MANIFEST.sha256 so that ci/gpu.sh can
# check that all of it arrived intact.
# Run here (with PyPI access), then carry ["ci/carry"] with the device tool and run `bash ci/gpu.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The versions of the development environment (.venv); keep them in step with it.
PINS=(array-api-compat==1.16.0 array-api-strict==2.6.1)
# mpi4py and MPICH's wheel for the GPU communicator checks: binary wheels, for the GPU machine's Python
# (3.12 unless CARRY_PYTHON_VERSION says otherwise); ci/gpu.sh uses the machine's own mpi4py when it loads an MPI
# library, else installs these with `pip install --prefix` into a folder it puts on PYTHONPATH, PATH, LD_LIBRARY_PATH.
MPI_PINS=(mpi4py==4.1.2 mpich==5.0.2)
CARRY_PYTHON_VERSION=${CARRY_PYTHON_VERSION:-3.12}
FMNIST=/usr/share/datasets/fashion-mnist
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

for f in "${FILES[@]}"; do
  if [ ! -f "$FMNIST/$f" ]; then
    echo "Fashion-MNIST is not installed here ($FMNIST/$f is missing). Install Debian's package, then rerun:" >&2
    echo "    sudo apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
done

rm -rf ci/carry/wheels ci/carry/mpi-wheels ci/carry/fashion-mnist ci/carry/MANIFEST.sha256  # nothing stale travels
mkdir -p ci/carry/wheels ci/carry/mpi-wheels ci/carry/fashion-mnist
"$PY" -m pip download -q --no-deps --only-binary=:all: -d ci/carry/wheels "${PINS[@]}"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$CARRY_PYTHON_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d ci/carry/mpi-wheels "${MPI_PINS[@]}"
cp "${FILES[@]/#/$FMNIST/}" ci/carry/fashion-mnist/
(cd ci/carry && find wheels mpi-wheels fashion-mnist -type f | sort | xargs sha256sum >MANIFEST.sha256)
cat ci/carry/MANIFEST.sha256
du -sh ci/carry
echo 'now: device tool run of "bash ci/gpu.sh" with carry ["ci/carry"] and timeout_s 360'
