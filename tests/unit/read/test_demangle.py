"""demangle: the C++ runtime called directly gives what cxxfilt gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cxxfilt
import pytest

from orchestrator.symbols import demangle

NAMES = [
    "_Z12quant_kernelPf",
    "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf",
    "_ZN7cutlass13device_kernelIN4vllm24cutlass_3x_gemm_fp8_blockwiseIfEEEEvNT_6ParamsE",
    "_Z3fooILi1EEvv",
    # a name whose demangled form outgrows any buffer used before it
    "_Z1f" + "".join(f"N{len(s)}{s}E" for s in ["a" * 300, "b" * 400]),
    "_Z" + "N3abc" * 200 + "E1xv",
]
INVALID = ["_Z", "_Zfoo", "_ZN3foo", "_Z1"]


def reference(mangled: str) -> str:
    try:
        return str(cxxfilt.demangle(mangled, external_only=False))
    except cxxfilt.InvalidName:
        return mangled


@pytest.mark.parametrize("mangled", NAMES + INVALID + ["not_mangled", "main"])
def test_demangle_equals_cxxfilt(mangled: str) -> None:
    assert demangle.__wrapped__(mangled) == reference(mangled)


def test_short_after_long_and_invalid_between() -> None:
    # one buffer is reused: a failure must leave it usable, a long name grows it
    sequence = [NAMES[4], INVALID[1], NAMES[0], NAMES[5], INVALID[2], NAMES[2]] * 3
    assert [demangle.__wrapped__(n) for n in sequence] == [reference(n) for n in sequence]


def test_threads_each_get_their_own_answers() -> None:
    names = [f"_Z{len(s)}{s}v" for s in (f"kernel_{i}" for i in range(2000))]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(demangle.__wrapped__, names))
    assert got == [reference(n) for n in names]


@pytest.mark.parametrize("mangled", NAMES + INVALID)
def test_a_kernel_read_without_its_name_is_the_kernel_read_with_it(mangled: str) -> None:
    """The readers leave ``name`` to be demangled when asked (a probe table never asks):
    the kernel is then equal, in every way, to one made with the name."""
    import pickle

    from orchestrator.read.inventory import Kernel

    named = Kernel(reference(mangled), mangled, 64, 3, False)
    lazy = Kernel(None, mangled, 64, 3, False)
    assert lazy.name == named.name
    assert Kernel(None, mangled, 64, 3, False) == named
    assert hash(Kernel(None, mangled, 64, 3, False)) == hash(named)
    # (to --jobs worker processes and back; bytes made here)
    assert pickle.loads(pickle.dumps(Kernel(None, mangled, 64, 3, False))) == named  # noqa: S301
    assert lazy.to_json() == named.to_json()
    more = Kernel(named.name, mangled, 64, 4, False)
    assert sorted([Kernel(None, mangled, 64, 4, False), lazy]) == [named, more]
