"""Checks of ci/gpu.sh's stage (a), one per sub-command: ``python ci/gpu_check.py imports|cuda|warm BACKEND``.

* ``imports`` — what this Python holds (version and origin of each library the stages use; the optional ones
  are looked up, not imported); exit status 2 when one that every stage needs is missing (with what to carry),
  3 when Fashion-MNIST is missing, else 0.
* ``cuda`` — whether CuPy imports and sees a CUDA device; the last line says what it found or why not (warnings
  raised while importing CuPy are printed, never turned into a silent "no GPU"); exit status 0 with a device.
* ``warm BACKEND`` — a tiny float32 and float64 fit on BACKEND (cupy or numpy), by the generic path and on CuPy
  also the CUDA-graph path: CuPy compiles its kernels here once, into its on-disk cache, instead of inside the
  timed or bounded stages.
"""

import importlib
import importlib.metadata
import importlib.util
import sys
import time
import warnings

NEEDED = ("numpy", "array_api_compat", "array_api_strict", "pytest", "nnarray")
OPTIONAL = ("pytest_timeout", "xdist", "mpi4py", "sklearn", "torch", "cupy", "jax")


def imports():
    print("python", sys.version.split()[0], sys.executable)
    missing = [m for m in NEEDED if not _imported(m)]
    dists = importlib.metadata.packages_distributions()
    for mod in OPTIONAL:  # found and versioned, not imported (importing torch alone takes seconds)
        spec = importlib.util.find_spec(mod)
        if spec is None:
            print(f"{mod} NOT installed")
            continue
        names = dists.get(mod, [])
        version = importlib.metadata.version(names[0]) if names else "?"
        print(f"{mod} {version} ({', '.join(names) or 'no distribution'}) at {spec.origin}")
    need = [m for m in NEEDED if m in missing]
    if need:
        print(f"(a) FAILED: {', '.join(need)} missing: carry ci/carry (bash ci/prepare_gpu_carry.sh brings "
              "array-api-compat and array-api-strict); numpy and pytest must be on the machine")
        return 2
    import nnarray as nn  # noqa: PLC0415

    try:
        (X, _), _ = nn.datasets.load_fashion_mnist(download=False)
    except FileNotFoundError as exc:
        print("(a) Fashion-MNIST NOT found: carry ci/carry/fashion-mnist (bash ci/prepare_gpu_carry.sh copies it from "
              "Debian's dataset-fashion-mnist package). " + str(exc).splitlines()[0])
        return 3
    print(f"(a) Fashion-MNIST: {X.shape[0]} training images from {nn.datasets.find_dataset_dir('fashion-mnist')}")
    return 0


def _imported(mod):
    """Import ``mod`` and print its version and origin (and any warning it raised); False when it fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 -- reported: a broken install is as good as a missing one
            print(f"{mod} NOT importable: {type(exc).__name__}: {exc}")
            return False
    print(f"{mod} {getattr(m, '__version__', '?')} from {getattr(m, '__file__', '?')}"
          + "".join(f"\n  warned: {w.category.__name__}: {w.message}" for w in caught))
    return True


def cuda():
    if importlib.util.find_spec("cupy") is None:
        print("CuPy is not installed")
        return 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import cupy  # noqa: PLC0415

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 -- the reason is the report
            print(f"CuPy is installed but unusable: {type(exc).__name__}: {exc}")
            return 1
    for w in caught:
        print(f"importing CuPy warned: {w.category.__name__}: {w.message}")
    if count == 0:
        print("CuPy finds no CUDA device")
        return 1
    print(f"CuPy {cupy.__version__} sees {count} device(s)")
    return 0


def warm(backend):
    import numpy as np  # noqa: PLC0415

    import nnarray as nn  # noqa: PLC0415

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 784))
    t = rng.integers(0, 10, size=300)
    for dtype in ("float32", "float64"):
        for fast in (False, True) if backend == "cupy" else (False,):  # the CUDA-graph path: CuPy only
            t0 = time.perf_counter()
            net = nn.MLP([784, 64, 10], backend=backend, dtype=dtype, seed=0)
            hist = nn.fit(net, nn.SGD(0.05, momentum=0.9), X, t, epochs=2, batch_size=100, seed=0,
                          options=nn.FitOptions(fast=fast), validation=(X[:100], t[:100]))
            print(f"warm-up {backend} {dtype} fast={fast}: {time.perf_counter() - t0:.1f} s, "
                  f"loss {hist.train_loss[-1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "imports":
        sys.exit(imports())
    if command == "cuda":
        sys.exit(cuda())
    if command == "warm" and len(sys.argv) == 3:
        sys.exit(warm(sys.argv[2]))
    sys.exit(f"usage: python ci/gpu_check.py imports|cuda|warm BACKEND (got {sys.argv[1:]})")
