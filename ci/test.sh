#!/usr/bin/env bash
# The test command of README.md: installs what the tests need, then runs the whole suite.
#   bash ci/test.sh [extra pytest arguments]
# - ci/install.sh test: Fashion-MNIST (Debian package) and .venv with nnarray[test] (MPI, ruff and mypy included);
# - ruff check . and mypy (pyproject.toml's [tool.ruff] and [tool.mypy]) before the tests: a finding fails the run;
# - PyTorch's CPU build when a local wheel is on this machine (for the torch parity tests and the
#   benchmark's yardsticks); without it those tests skip and say so. GPU tests skip without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh test

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  wheel=$(ls "${PIP_FIND_LINKS:-/opt/wheels}"/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ]; then
    echo "== installing PyTorch (CPU) from $wheel"
    .venv/bin/python -m pip install -q "$wheel" || echo "warning: torch could not be installed; torch tests will skip"
  else
    echo "== no local PyTorch CPU wheel: torch tests will skip (pip install torch to run them)"
  fi
fi

# The multi-process tests (tests/test_distributed.py) must run here, not skip: nnarray[test] installs
# mpi4py and MPICH's wheel, and a missing mpi4py or mpiexec is a test failure.
export NNARRAY_REQUIRE_MPI=1

# Lint and type checks first (configured in pyproject.toml): any finding fails the run before the tests.
echo "== ruff check ."
if ! .venv/bin/ruff check .; then
  echo "error: ruff reports the findings above; fix them (ruff check --fix handles imports) before the tests run" >&2
  exit 1
fi
echo "== mypy (the package: nnarray/)"
if ! .venv/bin/mypy; then
  echo "error: mypy reports the type errors above; fix them before the tests run" >&2
  exit 1
fi

echo "== running the tests"
exec .venv/bin/python -m pytest -ra "$@"
