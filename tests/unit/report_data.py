"""Hand-written cell results covering every status a report must show: passed,
failed (missing with its CMake cause, and hollow), error (build crash with its log
tail), skipped (unsupported, toolchain-unavailable) and not-run. No compiling."""

from __future__ import annotations

from typing import Any

from orchestrator.archs import Target
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, PRESENT, Verdict
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library

NASTY = "void foo<int, &bar>(float*)"  # what a template kernel's name can look like
SKIP_LINE = "Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a"
CRASH = "nvcc fatal   : Unsupported gpu architecture 'compute_100f'"
LIB = "_C.abi3.so"
STABLE = "_C_stable_libtorch.abi3.so"
FAMILIES = ("nvfp4", "scaled_mm_sm120", "mla_sm100", "scaled_mm_sm90")


def cell(cell_id: str, cuda: str, archs: str, devices: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": cell_id,
        "cuda": cuda,
        "archs": archs,
        "gencode": [],
        "cmake_architectures": "",
        "devices": devices,
        "backend": "local",
        "cmake_options": {},
        "env": {},
        "status": extra.pop("plan_status", "planned"),
        "reason": extra.pop("plan_reason", None),
        **extra,
    }


def kernel(name: str, size: int = 4096, hollow: bool = False) -> Kernel:
    return Kernel(name, "_Z" + name.replace(" ", "_"), size, 0 if hollow else size // 16, hollow)


def code(arch: str, *kernels: Kernel, source: str = "nvfp4_quant_kernels.cu") -> CodeObject:
    return CodeObject(Target.parse(arch), kernels, (source,))


def na(family: str, device: str) -> Verdict:
    return Verdict(family, device, NOT_APPLICABLE, reason=f"{family} is not meant for {device}")


def passed_cell() -> CellResult:
    """cu13.0-12.1f: everything present; FP4 kernels live in the stable library."""
    quant = kernel("nvfp4_quant_kernel(float*, int)", 9000)
    gemm = kernel("nvfp4_scaled_mm_kernel(float*, int)", 12000)
    mm = kernel("scaled_mm_sm120_kernel(float*)", 20000)
    inventory = Inventory(
        (
            Library(LIB, cubins=(code("sm_120f", kernel(NASTY, 512), mm, source="mm.cu"),)),
            Library(STABLE, cubins=(code("sm_120f", quant, gemm),)),
        )
    )
    return CellResult(
        cell=cell("cu13.0-12.1f", "13.0", "12.1f", ["12.1"]),
        status=PASSED,
        toolchain="nvidia-cuda-nvcc 13.0.88",
        duration_s=41.5,
        build_s=38.0,
        log="logs/cu13.0-12.1f.log",
        artifacts=[LIB, STABLE],
        inventory=inventory,
        verdicts=[
            Verdict(
                "nvfp4",
                "12.1",
                PRESENT,
                ("sm_120f",),
                (STABLE,),
                (quant.name, gemm.name, NASTY),
                ("sm_120f",),
                "3 of 3 nvfp4 kernels served on 12.1 by sm_120f",
            ),
            Verdict(
                "scaled_mm_sm120",
                "12.1",
                PRESENT,
                ("sm_120f",),
                (LIB,),
                (mm.name,),
                ("sm_120f",),
                "1 of 1 scaled_mm_sm120 kernel served on 12.1 by sm_120f",
            ),
            na("mla_sm100", "12.1"),
            na("scaled_mm_sm90", "12.1"),
        ],
    )


def failed_cell() -> CellResult:
    """cu12.9-12.1a: the vLLM incident -- NVFP4 skipped by CMake, scaled_mm traps."""
    mm = kernel("scaled_mm_sm120_kernel(float*)", 64, hollow=True)
    inventory = Inventory((Library(LIB, cubins=(code("sm_121a", mm, source="mm.cu"),)),))
    return CellResult(
        cell=cell("cu12.9-12.1a", "12.9", "12.1a", ["12.1"]),
        status=FAILED,
        toolchain="/usr/local/cuda-12.9",
        duration_s=35.0,
        log="logs/cu12.9-12.1a.log",
        skip_lines=[SKIP_LINE],
        artifacts=[LIB],
        inventory=inventory,
        verdicts=[
            Verdict(
                "nvfp4",
                "12.1",
                MISSING,
                reason=f"no kernel of nvfp4 is in any library; the build log says: {SKIP_LINE}",
                cause=SKIP_LINE,
            ),
            Verdict(
                "scaled_mm_sm120",
                "12.1",
                HOLLOW,
                ("sm_121a",),
                (LIB,),
                (mm.name,),
                ("sm_121a",),
                "scaled_mm_sm120 loads sm_121a on 12.1 (DGX Spark), but its kernels there have "
                "no real body (working instructions: 0): compiled out by an arch guard, or a trap",
            ),
            na("mla_sm100", "12.1"),
            na("scaled_mm_sm90", "12.1"),
        ],
    )


def error_cell() -> CellResult:
    return CellResult(
        cell=cell("cu12.8-10.0f", "12.8", "10.0f", ["10.0"]),
        status=ERROR,
        reason="build failed (exit 1)",
        log="logs/cu12.8-10.0f.log",
        log_tail=["-- Configuring done", "\x1b[31m" + CRASH + "\x1b[0m", "ninja: build stopped"],
    )


def unsupported_cell() -> CellResult:
    why = "CUDA 12.8 cannot compile sm_121a (needs CUDA >= 12.9)"
    return CellResult(
        cell=cell(
            "cu12.8-12.1a", "12.8", "12.1a", ["12.1"], plan_status="unsupported", plan_reason=why
        ),
        status=SKIPPED,
        reason=why,
    )


def unavailable_cell() -> CellResult:
    why = (
        "no CUDA 12.9 toolchain here: pass --cuda-home /usr/local/cuda-12.9 or use --backend docker"
    )
    return CellResult(
        cell=cell(
            "cu12.9-9.0a",
            "12.9",
            "9.0a",
            ["9.0"],
            plan_status="toolchain-unavailable",
            plan_reason=why,
        ),
        status=SKIPPED,
        reason=why,
    )


def not_run_cell() -> CellResult:
    return CellResult(
        cell=cell("cu13.0-9.0a", "13.0", "9.0a", ["9.0"]),
        status=NOT_RUN,
        reason="interrupted before it ran",
    )


def sample_results() -> list[CellResult]:
    return [
        passed_cell(),
        failed_cell(),
        error_cell(),
        unsupported_cell(),
        unavailable_cell(),
        not_run_cell(),
    ]


def synthetic_results(cells: int, families: int) -> list[CellResult]:
    """A large matrix: every 7th cell misses its first family, every 13th crashed."""
    names = [f"family_{i:02d}_kernels" for i in range(families)]
    out: list[CellResult] = []
    for i in range(cells):
        cell_id = f"cu13.{i % 6}-arch{i:04d}_12.0a_12.1a"
        if i % 13 == 0:
            out.append(
                CellResult(
                    cell=cell(cell_id, "13.0", "12.0a;12.1a", ["12.0", "12.1"]),
                    status=ERROR,
                    reason="the build failed (exit 1)",
                    log_tail=[CRASH] * 20,
                )
            )
            continue
        verdicts = []
        for j, family in enumerate(names):
            for device in ("12.0", "12.1"):
                missing = i % 7 == 0 and j == 0 and device == "12.1"
                verdicts.append(
                    Verdict(
                        family,
                        device,
                        MISSING if missing else PRESENT,
                        () if missing else ("sm_120a",),
                        reason=f"{family} is built only for sm_120a, none of which runs on 12.1 "
                        f"(DGX Spark); the build log says: {SKIP_LINE}"
                        if missing
                        else "served",
                        cause=SKIP_LINE if missing else None,
                    )
                )
        result = CellResult(
            cell=cell(cell_id, "13.0", "12.0a;12.1a", ["12.0", "12.1"]),
            status=PASSED,
            verdicts=verdicts,
        )
        result.settle()
        out.append(result)
    return out
