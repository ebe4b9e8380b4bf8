"""Same seed, same bytes on every x86-64 CPU: the numerical libraries' kernels and threads pinned,
by environment variables that each library reads once, when it loads. Imports nothing heavy:
VI.py calls pin_numerics before numpy and torch load."""

import os
import platform

# Same seed, same bytes on every x86-64 CPU. Each numerical library picks kernels for the CPU it
# finds, and kernels of another vector width add in another order; L-BFGS with early stopping
# turns those last bits into another model. The libraries read these once, when they load.
PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's kernels: AVX2, also on AVX-512 machines
    "MKL_CBWR": "COMPATIBLE",  # torch's matrix products (MKL): one code path on every CPU vendor
    "OPENBLAS_CORETYPE": "Nehalem",  # numpy's matrix products: SSE4.2 kernels, as numpy requires
    "NPY_DISABLE_CPU_FEATURES": None,  # numpy's loops: no AVX-512 (names: numpy_avx512)
}
THREADS = {  # one thread per process: a parallel sum's order follows the thread count, and a
    "OMP_NUM_THREADS": "1",  # fork after a thread pool has started can hang; the cores train
    "MKL_NUM_THREADS": "1",  # independent models instead (fork_map)
    "OPENBLAS_NUM_THREADS": "1",
}


def numpy_avx512():
    """numpy's names for its AVX-512 loops, read from its version without importing it: numpy
    2.4 renamed them and 2.3 added one, and an unknown name is a warning at import."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        major, minor = (int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        major, minor = 2, 4
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    names = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
    return names + " AVX512_SPR" * ((major, minor) >= (2, 3))


def pin_numerics(argv):
    """Set PINS and THREADS, on x86-64 only (elsewhere the names mean nothing or warn), unless
    --native-numerics. Called when python VI.py runs, before numpy and torch load; importing
    VI changes nothing."""
    if platform.machine().lower() in ("x86_64", "amd64") and "--native-numerics" not in argv:
        os.environ.update({**PINS, "NPY_DISABLE_CPU_FEATURES": numpy_avx512(), **THREADS})
