"""The lazy read of ``check`` (orchestrator.read.demand) on hand-made libraries: which
entries it decodes, which kernels it keeps and analyses, and that its verdicts are
the full read's."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth import (
    KIND_PTX,
    EntrySpec,
    build_container,
    build_shared_object,
    hollow_body,
    ptx_module,
    working_body,
)
from test_check import cubin

from orchestrator.archs import ComputeCapability
from orchestrator.judge.check import check_paths, lazy_read_differences
from orchestrator.probe import probe
from orchestrator.read.demand import Demand
from orchestrator.read.inventory import NOT_JUDGED, Library
from orchestrator.read.ptx import ptx_entries
from orchestrator.symbols import FamilyRule

CC = ComputeCapability.parse
QUANT = "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"
OTHER = "_Z13unrelated_fooPf"
RULES = (FamilyRule("nvfp4", (CC("9.0"), CC("10.0"), CC("10.3")), kernels=("quant_kernel",)),)


def ptx(sm: int, *names: str) -> EntrySpec:
    bodies = {name: "add.s32 %r1, %r1, 1;\n" * 20 for name in names}
    return EntrySpec(KIND_PTX, sm, ptx_module(f"sm_{sm}", bodies))


@pytest.fixture
def two_units(tmp_path: Path) -> Path:
    """Two translation units: sm_90a + compute_90, and sm_100f + compute_100 (whose
    sm_100f copy of the family's kernel is hollow); an unrelated kernel beside it."""
    path = tmp_path / "_C.so"
    path.write_bytes(
        build_shared_object(
            [
                build_container(
                    [
                        cubin(90, "a", (QUANT, working_body(40)), (OTHER, working_body(40))),
                        ptx(90, QUANT, OTHER),
                    ]
                ),
                build_container([cubin(100, "f", (QUANT, hollow_body())), ptx(100, QUANT)]),
            ]
        )
    )
    return path


def lazy_read(path: Path, *devices: str) -> Library:
    demand = Demand(RULES, tuple(CC(d) for d in devices))
    (library,) = probe([path], demand=demand, jobs=1).libraries
    return library


def test_a_ptx_module_is_read_only_where_its_unit_has_no_cubin_for_a_device(
    two_units: Path,
) -> None:
    hopper = lazy_read(two_units, "9.0")
    assert [c.arch.name for c in hopper.ptx] == []
    assert sorted(hopper.unread) == ["compute_100", "compute_90"]
    # 10.3: sm_90a does not run there, so compute_90 is what the driver JITs; the
    # second unit's sm_100f runs there, so its compute_100 is never loaded
    blackwell = lazy_read(two_units, "10.3")
    assert [c.arch.name for c in blackwell.ptx] == ["compute_90"]
    assert blackwell.unread == ("compute_100",)


def test_only_family_kernels_are_kept_and_only_loadable_cubins_analysed(
    two_units: Path,
) -> None:
    (full,) = probe([two_units], jobs=1).libraries
    assert {k.mangled for c in full.cubins for k in c.kernels} == {QUANT, OTHER}
    hopper = {c.arch.name: c for c in lazy_read(two_units, "9.0").cubins}
    assert [k.mangled for k in hopper["sm_90a"].kernels] == [QUANT]  # OTHER dropped
    (analysed,) = hopper["sm_90a"].kernels
    assert analysed.instructions == 40 and not analysed.hollow
    # sm_100f runs on no requested device: listed (the family is built for it), not judged
    (listed,) = hopper["sm_100f"].kernels
    assert listed.instructions == NOT_JUDGED and listed.size > 0


@pytest.mark.parametrize("devices", ["9.0", "10.0", "10.3", "9.0,10.3", "12.0"])
def test_lazy_and_full_reads_give_the_same_verdicts(two_units: Path, devices: str) -> None:
    wanted = tuple(CC(d) for d in devices.split(","))
    full = check_paths([two_units], RULES, wanted, lazy=False)
    lazy = check_paths([two_units], RULES, wanted)
    assert lazy_read_differences(lazy, full) == []
    # 10.x: the hollow sm_100f copy is what the driver loads -- hollow, not JIT-present
    if "10.3" in devices:
        assert lazy.verdict("nvfp4", "10.3").status == "hollow"


def test_ptx_bodies_of_wanted_entries_count_as_in_the_full_scan() -> None:
    text = ptx_module(
        "sm_90",
        {
            "_Z1aPf": "ret;",
            "_Z1bPf": "ld.param.u64 %rd1, [_Z1bPf_param_0];\n@%p1 bra $L1;\n" * 7,
            "_Z1cPf": ".reg .b32 %r<4>;\nadd.s32 %r1, %r1, 1;\nexit;",
        },
    )
    text += b".func _Z6helperv()\n{\nadd.s32 %r1, %r1, 1;\nret;\n}\n"
    full = ptx_entries(text)
    assert [e.instructions for e in full] == [0, 7, 1]
    assert ptx_entries(text, lambda _name: True) == full
    assert ptx_entries(text, lambda name: name == "_Z1bPf") == [full[1]]


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_worker_processes_read_as_lazily_as_one(
    two_units: Path, start: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes (started by fork, or by spawn, which pickles the demand:
    its families' regexes are compiled again there) the lazy read is the same."""
    import multiprocessing

    import orchestrator.read.library as library_module

    monkeypatch.setattr(library_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(library_module, "_context", lambda: multiprocessing.get_context(start))
    demand = Demand(RULES, (CC("10.3"),))
    (alone,) = probe([two_units], demand=demand, jobs=1).libraries
    (together,) = probe([two_units], demand=demand, jobs=2).libraries
    assert together == alone
    assert [c.arch.name for c in together.ptx] == ["compute_90"]
