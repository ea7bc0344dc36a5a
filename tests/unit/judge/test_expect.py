"""Checking families × devices on inventories (the probe itself is tested on real
libraries in tests/integration; here inventories are written by hand)."""

from __future__ import annotations

from orchestrator.archs import ComputeCapability, CudaVersion, Target, parse_arch_list
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    NOT_APPLICABLE,
    PRESENT,
    archs_without_code,
    check_cell,
    judge,
)
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library
from orchestrator.symbols import FamilyRule

CC = ComputeCapability.parse
NVFP4 = FamilyRule(
    name="nvfp4",
    devices=(CC("10.0"), CC("10.3"), CC("12.0"), CC("12.1")),
    sources=("nvfp4_*.cu",),
    kernels=("nvfp4",),
    exclude_sources=("*_entry.cu",),
    min_cuda=CudaVersion(12, 8),
)
SKIP = "Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a"


def kernel(name: str = "nvfp4_quant_kernel", instructions: int = 40) -> Kernel:
    return Kernel(
        name=f"(anonymous namespace)::{name}(float*, int, float)",
        mangled=f"_ZN_{name}",
        size=instructions * 16,
        instructions=instructions,
        hollow=instructions <= 8,
    )


def code(arch: str, *kernels: Kernel, source: str = "nvfp4_quant_kernels.cu") -> CodeObject:
    return CodeObject(Target.parse(arch), tuple(kernels), (source,))


def inventory(*objects: CodeObject, path: str = "_C.so") -> Inventory:
    cubins = tuple(o for o in objects if not o.arch.ptx)
    ptx = tuple(o for o in objects if o.arch.ptx)
    return Inventory((Library(path, cubins, ptx),))


def test_12_0a_cubins_do_not_serve_a_12_1_device_and_the_log_line_is_quoted() -> None:
    inv = inventory(code("sm_120a", kernel()))
    verdict = judge(inv, NVFP4, CC("12.1"), skip_lines=[SKIP, "Not building CUTLASS MLA"])
    assert verdict.status == MISSING
    assert verdict.built_for == ("sm_120a",)
    assert verdict.cause == SKIP
    assert "built only for sm_120a" in verdict.reason and SKIP in verdict.reason


def test_a_family_absent_everywhere_is_missing_with_its_cause() -> None:
    verdict = judge(inventory(), NVFP4, CC("12.1"), skip_lines=[SKIP])
    assert verdict.status == MISSING and verdict.cause == SKIP
    assert verdict.built_for == ()


def test_family_cubins_serve_the_rest_of_the_family() -> None:
    for arch in ("sm_120f", "sm_120"):
        verdict = judge(inventory(code(arch, kernel())), NVFP4, CC("12.1"))
        assert verdict.status == PRESENT
        assert verdict.served_by == (arch,)
        assert verdict.libraries == ("_C.so",)


def test_the_closest_cubin_is_judged() -> None:
    inv = inventory(code("sm_120f", kernel()), code("sm_121a", kernel(instructions=2)))
    verdict = judge(inv, NVFP4, CC("12.1"))
    # sm_121a is what the driver loads on 12.1, and its body is compiled out.
    assert verdict.status == HOLLOW
    assert verdict.served_by == ("sm_121a",)
    assert judge(inv, NVFP4, CC("12.0")).status == PRESENT


def test_hollow_uses_the_familys_threshold() -> None:
    strict = FamilyRule(
        name="nvfp4", devices=(CC("12.1"),), kernels=("nvfp4",), hollow_max_instructions=50
    )
    inv = inventory(code("sm_121a", kernel(instructions=40)))
    assert judge(inv, strict, CC("12.1")).status == HOLLOW
    assert judge(inv, NVFP4, CC("12.1")).status == PRESENT


def test_ptx_is_used_only_without_a_fitting_cubin() -> None:
    scaled = FamilyRule(name="scaled_mm_sm90", devices=(CC("9.0"),), kernels=("nvfp4",))
    inv = inventory(code("sm_80", kernel()), code("compute_80", kernel()))
    verdict = judge(inv, scaled, CC("9.0"))
    assert verdict.status == PRESENT and verdict.served_by == ("compute_80",)


def test_dispatcher_sources_never_count() -> None:
    inv = inventory(code("sm_121a", kernel("nvfp4_dispatch"), source="nvfp4_entry.cu"))
    assert judge(inv, NVFP4, CC("12.1")).status == MISSING


def test_a_kernel_that_moved_library_is_still_present() -> None:
    moved = Inventory(
        (
            Library("_C.so", (code("sm_120f", kernel("other"), source="other.cu"),)),
            Library("_C_stable_libtorch.so", (code("sm_120f", kernel()),)),
        )
    )
    verdict = judge(moved, NVFP4, CC("12.1"))
    assert verdict.status == PRESENT and verdict.libraries == ("_C_stable_libtorch.so",)


def test_not_applicable_devices_and_cuda_versions() -> None:
    inv = inventory(code("sm_90a", kernel()))
    assert judge(inv, NVFP4, CC("9.0")).status == NOT_APPLICABLE
    old = judge(inv, NVFP4, CC("12.0"), cuda=CudaVersion(12, 6))
    assert old.status == NOT_APPLICABLE and "needs CUDA >= 12.8" in old.reason


def test_check_cell_covers_every_requested_device() -> None:
    inv = inventory(code("sm_90a", kernel("x"), source="x.cu"), code("sm_121a", kernel()))
    verdicts = check_cell(inv, [NVFP4], parse_arch_list("9.0a;12.1a"), cuda=CudaVersion(13, 0))
    assert [(v.device, v.status) for v in verdicts] == [
        ("9.0", NOT_APPLICABLE),
        ("12.1", PRESENT),
    ]


def test_duplicate_embedded_cubins_are_one_kernel() -> None:
    inv = inventory(code("sm_121a"), code("sm_121a", kernel()), code("sm_121a", kernel()))
    verdict = judge(inv, NVFP4, CC("12.1"))
    assert verdict.status == PRESENT
    assert verdict.reason.startswith("1 of 1 nvfp4 kernel served")


def test_requested_archs_without_any_code_are_flagged() -> None:
    inv = inventory(code("sm_90a", kernel()), code("compute_90a", kernel()))
    assert archs_without_code(inv, parse_arch_list("9.0a+PTX;12.1a")) == (["sm_121a"], [])
    assert archs_without_code(inv, parse_arch_list("9.0a")) == ([], [])


def test_a_requested_cubin_whose_device_another_cubin_serves_is_a_note() -> None:
    """vLLM with CUDA 13.0 turns a requested 12.1a into 12.0f cubins: 12.1 is served."""
    inv = inventory(code("sm_120f", kernel()), code("sm_120a", kernel()))
    assert archs_without_code(inv, parse_arch_list("12.1a")) == (
        [],
        ["sm_121a (12.1 is served by sm_120f)"],
    )
    # an sm_120a cubin does not load on 12.1: still a failure; PTX is never replaced
    only_a = inventory(code("sm_120a", kernel()))
    assert archs_without_code(only_a, parse_arch_list("12.1a")) == (["sm_121a"], [])
    assert archs_without_code(inv, parse_arch_list("12.0f+PTX"))[0] == ["compute_120f"]


def test_core_kernels_decide_presence_beside_working_helpers() -> None:
    """vLLM's MLA in sm_120a: the attention kernels are arch-guard stubs, the split-KV
    reduction beside them is real SIMT code. Without ``core_kernels`` the family reads
    present (the helper works); with them it is hollow, and so is the code object."""
    import dataclasses

    from orchestrator.judge.expect import code_objects_holding, family_kernels, serve

    working = kernel("mla_attention_kernel", 6000)
    stub = Kernel(
        working.name, working.mangled, working.size, working.instructions, True,
        "CUTLASS arch-guard stub: …",
    )  # fmt: skip
    inv = inventory(
        code("sm_120a", stub, kernel("mla_reduction_kernel", 500), source="nvfp4_mla.cu"),
        code("sm_100a", kernel("mla_attention_kernel", 6000), source="nvfp4_mla.cu"),
    )
    plain = dataclasses.replace(NVFP4, kernels=("mla_",))
    core = dataclasses.replace(plain, core_kernels=("mla_attention",))
    assert serve(family_kernels(inv, plain), plain, CC("12.0"))[0] == PRESENT
    status, served = serve(family_kernels(inv, core), core, CC("12.0"))
    assert status == HOLLOW and len(served) == 2
    assert serve(family_kernels(inv, core), core, CC("10.0"))[0] == PRESENT
    holding, working = code_objects_holding(family_kernels(inv, core), core)
    assert {t.name for t in holding - working} == {"sm_120a"}
    verdict = judge(inv, core, CC("12.0"))
    assert verdict.status == HOLLOW and "arch-guard stub" in verdict.reason
    # the configure tier predicts kernels named after their source: any may do the work
    from orchestrator.read.inventory import PREDICTED

    predicted = Kernel("nvfp4_mla.cu", "nvfp4_mla.cu", 0, PREDICTED, False)
    named = dataclasses.replace(core, kernels=(), sources=("nvfp4_mla.cu",))
    inv = inventory(code("sm_120f", predicted, source="nvfp4_mla.cu"))
    assert serve(family_kernels(inv, named), named, CC("12.0"))[0] == PRESENT
