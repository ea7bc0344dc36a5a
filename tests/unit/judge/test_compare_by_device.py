"""The comparison of two runs, rule by rule: by what each requested device loads.

A change of code object that still serves a device is no regression; one that
leaves it without working code, or with PTX only where a cubin served it, is.
"""

from __future__ import annotations

import pytest

from orchestrator.judge.baseline import Baseline, CellSummary, FamilyState, KernelCopy
from orchestrator.judge.compare import (
    FAMILY_CHANGED,
    FAMILY_DOWNGRADED,
    FAMILY_FIXED,
    FAMILY_LOST,
    KERNEL_DOWNGRADED,
    KERNEL_HOLLOW,
    KERNEL_LOST,
    compare,
)
from orchestrator.judge.expect import HOLLOW, MISSING, PRESENT

LIB = "vllm/_C.abi3.so"


def side(archs: str, family: dict[str, FamilyState], *copies: KernelCopy) -> Baseline:
    """One cell asking for ``archs``: the family ``nvfp4`` on each device, and one kernel."""
    cell = CellSummary(
        "cell",
        "passed",
        archs=archs,
        families={("nvfp4", device): state for device, state in family.items()},
        kernels={"nvfp4_quant(float*)": copies},
    )
    return Baseline({"cell": cell})


def served(*objects: str) -> FamilyState:
    return FamilyState(PRESENT, objects)


@pytest.mark.parametrize(
    ("archs", "device", "base", "head"),
    [
        ("12.0", "12.0", "sm_120", "sm_120a"),  # arch-specific now: 12.0 loads it
        ("10.0", "10.0", "sm_100", "sm_100f"),  # family code: 10.0 loads it
        ("12.1", "12.1", "sm_120f", "sm_121a"),
        ("9.0", "9.0", "compute_90", "sm_90"),  # PTX to a cubin: better
    ],
)
def test_a_change_of_code_object_that_still_serves_the_device_is_no_regression(
    archs: str, device: str, base: str, head: str
) -> None:
    diff = compare(
        side(archs, {device: served(base)}, KernelCopy(LIB, base, 100)),
        side(archs, {device: served(head)}, KernelCopy(LIB, head, 100)),
        strict=True,
    )
    assert diff.regressions == [] and diff.exit_code == 0
    assert [f.kind for f in diff.findings if f.kind == FAMILY_CHANGED] == [FAMILY_CHANGED]


def test_sm_120f_to_sm_120a_loses_dgx_spark() -> None:
    """The incident: the family code served 12.0 and 12.1; sm_120a serves 12.0 only."""
    base = side(
        "12.0f;12.1f",
        {"12.0": served("sm_120f"), "12.1": served("sm_120f")},
        KernelCopy(LIB, "sm_120f", 100),
    )
    head = side(
        "12.0a;12.1a",
        {"12.0": served("sm_120a"), "12.1": FamilyState(MISSING)},
        KernelCopy(LIB, "sm_120a", 100),
    )
    diff = compare(base, head)
    (family,) = diff.of(FAMILY_LOST)
    assert family.subject == "nvfp4 on 12.1" and family.after == "missing"
    (kernel,) = diff.of(KERNEL_LOST)
    assert (kernel.devices, kernel.before, kernel.after) == (("12.1",), f"sm_120f in {LIB}", "gone")
    assert diff.exit_code == 1  # a family × device regression decides


def test_a_cubin_replaced_by_ptx_is_a_downgrade() -> None:
    base = side("10.0", {"10.0": served("sm_100f")}, KernelCopy(LIB, "sm_100f", 100))
    head = side("10.0", {"10.0": served("compute_80")}, KernelCopy(LIB, "compute_80", 100))
    diff = compare(base, head)
    (family,) = diff.of(FAMILY_DOWNGRADED)
    assert family.regression and family.after == "present (compute_80)"
    (kernel,) = diff.of(KERNEL_DOWNGRADED)
    assert (kernel.devices, kernel.after) == (("10.0",), "compute_80 (JIT)")
    assert diff.exit_code == 1


def test_ptx_only_on_both_sides_is_no_downgrade() -> None:
    base = side("10.0", {"10.0": served("compute_80")}, KernelCopy(LIB, "compute_80", 100))
    head = side("10.0", {"10.0": served("compute_90")}, KernelCopy(LIB, "compute_90", 100))
    assert compare(base, head, strict=True).regressions == []


def test_a_hollow_head_is_a_regression_and_a_fix_is_named() -> None:
    base = side("9.0a", {"9.0": served("sm_90a")}, KernelCopy(LIB, "sm_90a", 100))
    head = side(
        "9.0a", {"9.0": FamilyState(HOLLOW, ("sm_90a",))}, KernelCopy(LIB, "sm_90a", 9, True)
    )
    diff = compare(base, head)
    assert [f.kind for f in diff.regressions] == [FAMILY_LOST, KERNEL_HOLLOW]
    (kernel,) = diff.of(KERNEL_HOLLOW)
    assert kernel.after == "hollow sm_90a"
    # the other way round: fixed, no regression
    back = compare(head, base, strict=True)
    assert back.regressions == [] and [f.kind for f in back.of(FAMILY_FIXED)] == [FAMILY_FIXED]
    assert "1 family × device fixed" in back.line()


def test_a_kernel_the_base_had_only_hollow_is_no_regression() -> None:
    base = side(
        "9.0a", {"9.0": FamilyState(HOLLOW, ("sm_90a",))}, KernelCopy(LIB, "sm_90a", 9, True)
    )
    head = side("9.0a", {"9.0": FamilyState(MISSING)})
    diff = compare(base, head, strict=True)
    assert diff.regressions == []
