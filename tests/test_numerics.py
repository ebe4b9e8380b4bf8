"""Same seed, same bytes on another CPU. VI.py pins, when it runs as a script on x86-64, the
kernels each numerical library picks (tools/pins.py: PINS) and one thread per process (THREADS). The
shared runs of conftest check both sides: a kernel choice the pins do not name (MKL's AVX2
path) leaves results.json byte-identical, and without the pins this machine's own kernels
(AVX-512 here; conftest's in-process run, which has only THREADS) do change it, so the test can
fail.
"""

from pathlib import Path

import pytest
from conftest import results_bytes

from tools import pins


def test_a_kernel_choice_the_pins_do_not_name_changes_no_byte(processes):
    # MKL restricted to AVX2 (and the work in one process instead of two)
    assert results_bytes(processes["no fork"]) == results_bytes(processes["hand-in"]) != b""


def has_avx512():
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " avx512f" in cpuinfo.read_text(encoding="utf-8")


@pytest.mark.skipif(
    not has_avx512(), reason="needs a CPU whose own kernels are not the pinned ones"
)
def test_without_the_pins_this_cpus_own_kernels_do_change_the_bytes(processes, quick):
    # so the variants above do reach the kernels, and the test of the pins can fail: the
    # in-process run of conftest has the same settings, one thread and no kernel pins
    assert (quick / "results.json").read_bytes() != results_bytes(processes["no fork"]) != b""


@pytest.mark.parametrize("argv", [[], ["--quick", "--native-numerics"]])
def test_the_pins_are_set_only_without_native_numerics(monkeypatch, argv):
    environ = {}
    monkeypatch.setattr(pins.os, "environ", environ)
    monkeypatch.setattr(pins.platform, "machine", lambda: "x86_64")
    pins.pin_numerics(argv)
    assert set(environ) == (set() if argv else set(pins.PINS) | set(pins.THREADS))
