"""Control flow of SASS kernels (``read.sass`` decodes, ``read.kernelcode`` walks):
hand-made instruction words whose encodings are those read off ``cuobjdump -sass`` of
real cubins (the integration test ``tests/integration/test_control_flow_real.py``
checks the decoder against the real disassembler); and the verdict's words for hollow and partly hollow families."""

from __future__ import annotations

import io

import pytest
from synth import FFMA, LDC_R1, NOP, CubinSpec, KernelSpec, build_cubin, sass

from orchestrator.archs import ComputeCapability, Target
from orchestrator.judge.expect import HOLLOW, PRESENT, judge
from orchestrator.read.cuobjdump import control_op_of, parse_sass_dump
from orchestrator.read.fatbin import cubin_object
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library
from orchestrator.read.kernelcode import (
    arch_guard_messages,
    kernel_trap_evidence,
    sass_trap_evidence,
    trap_evidence,
    traps_on_every_path,
)
from orchestrator.read.sass import ControlOp, branch_offset, has_trap, sass_control_ops
from orchestrator.symbols import FamilyRule

EXIT = (0x794D, 0x000FEA0003800000)
TRAP = (0x000000040000795C, 0x000FEA0000300000)
TRAP_IF_P0 = (0x000000040000095C, 0x000FEA0000300000)  # @P0 BPT.TRAP 0x1
PRINTF = (0x0000000002007343, 0x003FEA0003C00000)  # CALL.ABS.NOINC R2 (vprintf)
RET = (0xFFFFFFFC14B47950, 0x000FEC0003C3FFFF)  # RET.REL.NODEC R20
BRX = (0xFFFFFFFC02C87949, 0x000FEA000383FFFF)  # BRX R2 -0xe0


def bra(
    offset: int, sm: int, guard: int = 0x7, flags: int = 0, condition: int = 0x7
) -> tuple[int, int]:
    """A BRA to ``offset`` bytes after the next instruction, encoded for ``sm``."""
    field = offset // 4 if sm < 90 else offset // 1024
    low = 0 if sm < 90 else (offset // 4) & 0xFF
    if sm >= 90:
        assert offset == field * 1024 + low * 4
    field &= (1 << 48) - 1
    word0 = 0x947 | guard << 12 | low << 16 | flags << 32 | (field & ((1 << 30) - 1)) << 34
    word1 = 0x000FEA0000000000 | condition << 23 | field >> 30
    return word0, word1


@pytest.mark.parametrize("sm", [75, 80, 89, 90, 100, 120])
@pytest.mark.parametrize("offset", [16, 224, 1008, 0x9E10, -64, -15536])
def test_branch_offsets_round_trip_in_both_encodings(sm: int, offset: int) -> None:
    word0, word1 = bra(offset, sm)
    assert branch_offset(word0, word1, sm) == offset


def test_real_words_from_the_disassembler() -> None:
    # sm_80 "@!P0 BRA 0x130" at 0x90 and sm_100 "BRA `(.L_x_1641)" 15536 bytes back
    assert branch_offset(0x0000009000008947, 0x000FEA0003800000, 80) == 0x130 - 0xA0
    assert branch_offset(0xFFFFFFC000D47947, 0x000FEA000383FFFF, 100) == -15536
    # sm_80 "BRA.DIV ~URZ, 0x13ec0" at 0x1fc0: bits 32..33 are the .DIV flag
    assert branch_offset(0x00011EF27F007947, 0x000FEA000B800000, 80) == 0x13EC0 - 0x1FD0


def code_of(*words: tuple[int, int]) -> bytes:
    return sass(*words)


@pytest.mark.parametrize("sm", [75, 90, 120])
def test_a_printf_and_trap_stub_traps_on_every_path(sm: int) -> None:
    # CUTLASS arch-guard stub: set-up, printf, trap, and code after the trap (ptxas
    # does not end a path at a trap)
    code = code_of(LDC_R1, FFMA, FFMA, PRINTF, TRAP, FFMA, EXIT, bra(-16, sm), NOP)
    evidence = sass_trap_evidence(code, 0, len(code), sm)
    assert evidence is not None
    assert (evidence.traps, evidence.calls_out, evidence.instructions) == (1, 1, 9)
    assert str(evidence) == "every path traps: 1 trap, 1 printf/external call, 9 instructions"


@pytest.mark.parametrize("sm", [75, 90, 120])
def test_a_guarded_trap_or_a_branch_around_it_leaves_a_way_out(sm: int) -> None:
    guarded = code_of(LDC_R1, PRINTF, TRAP_IF_P0, FFMA, EXIT)
    assert sass_trap_evidence(guarded, 0, len(guarded), sm) is None
    around = code_of(LDC_R1, bra(32, sm, guard=0x0), PRINTF, TRAP, FFMA, EXIT)
    assert sass_trap_evidence(around, 0, len(around), sm) is None
    # the same branch unconditional, over the exit into the trap: hollow
    into = code_of(LDC_R1, bra(16, sm), EXIT, PRINTF, TRAP, NOP)
    assert sass_trap_evidence(into, 0, len(into), sm) is not None


@pytest.mark.parametrize("sm", [75, 90])
def test_div_uniform_and_predicate_operand_branches_are_conditional(sm: int) -> None:
    for word in (bra(32, sm, flags=2), bra(32, sm, flags=1), bra(32, sm, condition=0xB)):
        code = code_of(word, EXIT, TRAP, EXIT)
        assert sass_control_ops(code, 0, len(code), sm)[0].kind == "branch"
        assert sass_trap_evidence(code, 0, len(code), sm) is None


def test_unknown_control_is_assumed_to_reach_an_exit() -> None:
    for word in (RET, BRX):
        code = code_of(LDC_R1, word, TRAP, NOP)
        assert sass_trap_evidence(code, 0, len(code), 90) is None
    # a kernel with no trap is never walked; one running off its end may exit
    assert sass_trap_evidence(code_of(FFMA, EXIT), 0, 32, 90) is None
    assert not has_trap(code_of(FFMA, EXIT), 0, 32, 90)
    assert not traps_on_every_path({}, 4)
    # a branch out of the code: may exit
    assert not traps_on_every_path({0: ControlOp("goto", 99), 1: ControlOp("trap")}, 2)


def test_loops_terminate_and_a_loop_without_way_out_is_no_exit() -> None:
    spin = {0: ControlOp("branch", 0), 1: ControlOp("goto", 0), 2: ControlOp("trap")}
    assert traps_on_every_path(spin, 3)  # the walk ends; no path leaves the loop
    leave = {0: ControlOp("branch", 0), 1: ControlOp("branch", 0), 2: ControlOp("exit")}
    assert not traps_on_every_path(leave, 3)
    ops = {0: ControlOp("branch", 2), 1: ControlOp("goto", 0), 2: ControlOp("trap")}
    assert traps_on_every_path(ops, 3)


def test_pre_volta_code_is_never_walked() -> None:
    code = code_of(LDC_R1, PRINTF, TRAP, NOP)
    assert sass_trap_evidence(code, 0, len(code), 61) is None


def test_the_disassembly_gives_the_same_control_ops() -> None:
    dump = b"""
Fatbin elf code:
================
arch = sm_90a

\tcode for sm_90a
\t\tFunction : k_trap
        /*0000*/                   LDC R1, c[0x0][0x28] ;                        /* 0x00000a00ff017b82 */
        /*0010*/              @!P0 BRA 0x30 ;                                    /* 0x0000000000048947 */
        /*0020*/                   CALL.ABS.NOINC R2 ;                           /* 0x0000000002007343 */
        /*0030*/                   BPT.TRAP 0x1 ;                                /* 0x000000040000795c */
        /*0040*/                   BRA 0x40;                                     /* 0xfffffffc00fc7947 */
Fatbin elf code:
================
arch = sm_80
"""
    blocks = list(parse_sass_dump(io.BytesIO(dump)))
    assert len(blocks) == 2 and blocks[1] == {}
    ops, count, tensor_core, loads = blocks[0]["k_trap"]
    assert tensor_core == 0 and loads == frozenset()  # c[0x0]: not the strings' bank
    assert count == 5
    assert ops == {
        1: ControlOp("branch", 3),
        2: ControlOp("call_out"),
        3: ControlOp("trap"),
        4: ControlOp("goto", 4),
    }
    assert str(trap_evidence(ops, count)).startswith("every path traps: 1 trap, 1 printf")
    assert control_op_of("@!PT", "EXIT", "") is None
    assert control_op_of("", "BRA.U", "!UP0, 0x60") == ControlOp("branch", 6)
    assert control_op_of("", "RET.REL.NODEC", "R20 0x0") == ControlOp("unknown")


def test_the_native_engine_marks_a_stub_hollow_with_its_evidence() -> None:
    stub = code_of(LDC_R1, *([FFMA] * 40), PRINTF, TRAP, EXIT, NOP)
    real = code_of(LDC_R1, *([FFMA] * 40), EXIT, NOP)
    spec = CubinSpec(kernels=[KernelSpec("_Z4stubv", stub), KernelSpec("_Z4realv", real)])
    cubin = build_cubin(spec, sm=90)
    kernels = {k.mangled: k for k in cubin_object(cubin, Target.parse("sm_90"), "t").kernels}
    assert kernels["_Z4stubv"].hollow and kernels["_Z4stubv"].instructions > 8
    assert kernels["_Z4stubv"].traps.startswith("every path traps: 1 trap,")
    assert not kernels["_Z4realv"].hollow and kernels["_Z4realv"].traps == ""
    assert Kernel.from_json(kernels["_Z4stubv"].to_json()) == kernels["_Z4stubv"]


# --- the verdict's words ---------------------------------------------------------------

CC = ComputeCapability.parse
FAMILY = FamilyRule(name="gemm", devices=(CC("9.0"),), kernels=("gemm",))
STUB = "every path traps: 3 traps, 2 printf/external calls, 4000 instructions"


def kernel(name: str, traps: str = "") -> Kernel:
    return Kernel(f"{name}(float*)", f"_Z{name}", 64000, 3000, bool(traps), traps)


def test_a_family_of_stubs_is_hollow_and_says_why() -> None:
    inv = Inventory(
        (Library("_C.so", (CodeObject(Target.parse("sm_90"), (kernel("gemm_a", STUB),)),)),)
    )
    verdict = judge(inv, FAMILY, CC("9.0"))
    assert verdict.status == HOLLOW
    assert "1 is an arch-guard stub (" + STUB + ")" in verdict.reason


def test_a_partly_hollow_family_is_present_and_says_which_part() -> None:
    objects = (
        CodeObject(
            Target.parse("sm_90"),
            (kernel("gemm_a"), kernel("gemm_b", STUB), kernel("gemm_c", STUB)),
        ),
    )
    verdict = judge(Inventory((Library("_C.so", objects),)), FAMILY, CC("9.0"))
    assert verdict.status == PRESENT
    assert verdict.reason.startswith("1 of 3 gemm kernels served on 9.0 by sm_90")
    assert "1 of 3 loaded there are real, 2 are arch-guard stubs (" + STUB + ")" in verdict.reason


# --- CUTLASS arch-guard stubs --------------------------------------------------------

GUARD = "Attempting to use SM100_MMA_MXF4_SS without CUTE_ARCH_TCGEN05_MXF4NVF4_MMA_ENABLED"
# A stub's shape: its producer path exits, its MMA path prints and traps.
STUB_OPS = {
    1: ControlOp("branch", 4),
    2: ControlOp("call_out"),
    3: ControlOp("trap"),
    4: ControlOp("exit"),
}


def test_a_trapping_kernel_that_loads_an_arch_guard_message_is_a_stub() -> None:
    def evidence(tensor_core: int, loads: set[int], ops: dict[int, ControlOp] = STUB_OPS) -> str:
        found = kernel_trap_evidence(
            ops, 4000, tensor_core, lambda: frozenset(loads), lambda: {0x10: GUARD}
        )
        return str(found) if found else ""

    assert evidence(0, {0x10, 0x18}) == (
        "CUTLASS arch-guard stub: 1 trap, 1 printf/external call, 0 tensor-core "
        f'instructions of 4000; it prints "{GUARD}"'
    )
    assert evidence(3, {0x10}) == ""  # it does tensor-core work: not judged a stub
    assert evidence(0, {0x18}) == ""  # it prints another string (an assertion)
    no_printf = {k: v for k, v in STUB_OPS.items() if v.kind != "call_out"}
    assert evidence(0, {0x10}, no_printf) == ""


def test_guard_messages_and_constant_loads_from_the_disassembly() -> None:
    dump = b"""
Fatbin elf code:
================
arch = sm_120f

\tcode for sm_120f
\t\tFunction : k_stub
        /*0000*/                   LDCU.64 UR4, c[0x4][0x10] ;                   /* 0x01000200ff0477ac */
        /*0010*/                   LDC.64 R8, c[0x4][R8] ;                       /* 0x0100000008087b82 */
        /*0020*/                   UTCQMMA gdesc[UR4], gdesc[UR6], tmem[UR8], tmem[UR10], idesc[UR11], UPT ; /* 0x0000000000007dea */
        /*0030*/                   EXIT ;                                        /* 0x000000000000794d */
"""
    (functions,) = parse_sass_dump(io.BytesIO(dump))
    assert functions["k_stub"].constant_loads == frozenset({0x10})
    assert functions["k_stub"].tensor_core == 1
    assert arch_guard_messages({0x10: GUARD.encode(), 0x18: b"Assertion failed (%s:%d): %s"}) == {
        0x10: GUARD
    }
    assert arch_guard_messages(
        {
            8: b"ERROR : Arch conditional MMA instruction used without targeting sm90a compute "
            b"capability. Aborting.\n"
        }
    )
