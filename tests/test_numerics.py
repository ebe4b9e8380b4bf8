"""Same seed, same bytes on another CPU. VI.py pins, when it runs as a script on x86-64, the
kernels each numerical library picks (VI.PINS) and one thread per process (VI.THREADS). The
shared runs of conftest.PROCESSES check both sides: a kernel choice the pins do not name
(MKL's AVX2 path) leaves results.json byte-identical, and without the pins another kernel
choice (torch's AVX2 path on an AVX-512 machine) does change it, so the variants reach the
kernels and the test can fail.
"""

from pathlib import Path

import pytest
from conftest import results_bytes


def test_a_kernel_choice_the_pins_do_not_name_changes_no_byte(processes):
    assert results_bytes(processes["one worker"]) == results_bytes(processes["dev"]) != b""


def has_avx512():
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " avx512f" in cpuinfo.read_text()


@pytest.mark.skipif(not has_avx512(), reason="needs a CPU whose own kernels are not torch's AVX2")
def test_without_the_pins_another_cpus_kernels_do_change_the_bytes(processes):
    native, avx2 = processes["native"], processes["native avx2"]
    assert native[0].returncode == avx2[0].returncode == 0, native[0].stderr + avx2[0].stderr
    assert results_bytes(native) != results_bytes(avx2)
