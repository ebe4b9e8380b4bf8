"""Same seed, same bytes on another CPU. The pipeline (numbers only) runs in subprocesses whose
environment makes the numerical libraries pick the kernels another x86-64 CPU would get: AVX2
instead of AVX-512 in torch and MKL, another OpenBLAS core type, numpy without its AVX-512
loops, one thread instead of two. VI.py pins those choices where a run starts, so every variant
must write a byte-identical results.json. Without the pins (python VI.py --native-numerics)
they differ, which shows that the variants do reach the kernels.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT

# quick settings, but the full data size and quadrature step, where last bits show
ARGS = ["--quick", "--n", "1000", "--grid-step", "0.1", "--no-figures", "--workers", "1"]
VARIANTS = {
    "plain": {},
    "MKL without AVX-512": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "torch's AVX2 kernels": {"ATEN_CPU_CAPABILITY": "avx2"},
    "OpenBLAS Haswell kernels": {"OPENBLAS_CORETYPE": "Haswell"},
    "OpenBLAS Skylake-X kernels (an Intel AVX-512 CPU)": {"OPENBLAS_CORETYPE": "SkylakeX"},
    "numpy without AVX-512": {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "four threads": {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"},
}


def results_of(variant, out, *extra):
    # as a user's shell would have it
    env = {k: v for k, v in os.environ.items() if k not in VI_PINS}
    env.update(VARIANTS[variant])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "VI.py"), *ARGS, *extra, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (out / "results.json").read_bytes()


VI_PINS = __import__("VI").NUMERICS


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("numerics")
    with ThreadPoolExecutor(2) as pool:  # two single-threaded processes at a time
        return dict(
            zip(
                VARIANTS,
                pool.map(lambda v: results_of(v, folder / v.replace(" ", "_")), VARIANTS),
                strict=True,
            )
        )


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "plain"])
def test_another_cpus_kernels_give_the_same_bytes(runs, variant):
    assert runs[variant] == runs["plain"], f"results.json differs under {VARIANTS[variant]}"


def test_native_numerics_keep_the_forked_workers_alive(tmp_path):
    # --native-numerics frees the kernels but not the threads: fork_map forks its workers, and a
    # child forked after OpenMP has started its threads waits forever for them
    env = {k: v for k, v in os.environ.items() if k not in VI_PINS}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "VI.py"), *ARGS[:-1], "2", "--native-numerics"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,  # a healthy run takes seconds
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "results.json").exists()
