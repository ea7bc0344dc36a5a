"""What a kernel's code says, whichever engine read it: working-instruction counts
for SASS (cubins) and PTX, PTX entry points, and the source files that mangled
names carry.

Both probe engines (native fatbin reader, real cuobjdump) hand the same bytes to
these functions, so that their inventories are equal by construction where they
share a definition, and differ only where they really read different data.

**SASS (Volta and newer, sm_70+).** Every instruction is 128 bits; the opcode is
the low 12 bits of the first little-endian 64-bit word, the guard predicate the
next 4 bits. The opcode values of the instructions that do no work were read off
``cuobjdump -sass`` of real cubins (sample extension for sm_75 .. sm_121a, vLLM
0.33.0 libraries for sm_75 .. sm_120f; ``tests/integration`` re-checks them against
the disassembler): they are the same on every architecture from Turing to
Blackwell, and no instruction that does work shares one of these values.

**Control flow (SASS, sm_70+).** A kernel is also hollow when it can do nothing
but trap: CUTLASS/CuTe compiled for a target without the arch features it needs
(wgmma in plain ``sm_90``, tcgen05/UMMA in plain ``sm_100`` or ``sm_120a``) turns
each missing feature into ``printf("Attempting to use ...")`` + ``trap``, thousands
of instructions with no path to a normal exit. :func:`sass_control_ops` decodes the
few instructions that steer control from the bytes; :func:`traps_on_every_path`
walks the graph they form. Fields, read off ``cuobjdump -sass`` of real cubins
(vLLM 0.33.0 libraries sm_75 .. sm_120, a probe kernel built by nvcc 13.0 for
sm_75 .. sm_121 with trap, printf, assert, switch tables, direct and indirect calls;
``tests/integration/test_control_flow_real.py`` re-checks them against the disassembler):

* guard predicate: bits 12..15 of word 0 (``0x7`` = PT, always; bit 15 negates);
* ``BRA`` (``0x947``; ``0x547`` with a uniform predicate) and ``CALL.REL``: the
  target's byte offset from the next instruction is ``4 * signed(bits 34..81)``
  up to sm_89, and ``1024 * signed(bits 34..81) + 4 * bits 16..23`` from sm_90
  on (:func:`branch_offset`); bits 32..33 of word 0 are ``.U`` (1) / ``.DIV`` (2);
  bits 23..26 of word 1 a condition predicate (``BRA !P3, target``; 7 = PT). A
  ``BRA`` is unconditional only with guard PT, condition PT and no ``.U``/``.DIV``;
  every ``0x547`` form counts as conditional;
* ``EXIT`` ``0x94D``, ``BPT`` ``0x95C`` (``BPT.TRAP``: ``asm("trap;")``,
  ``__trap()``, ``__brkpt()`` and the trap after a failed ``assert``), ``CALL.REL``
  ``0x944`` / ``0x344`` (register), ``CALL.ABS`` ``0x343`` (``vprintf``,
  ``__assertfail``), ``RET`` ``0x950``, ``BRX`` ``0x949``, ``BRXU`` ``0x958``.

ptxas does not treat a trap as the end of a path (code follows it), so the walk
does: a trap without a guard ends the path. A call returns (callees are not
walked: a callee that always traps leaves the kernel judged not hollow, the safe
side); an indirect branch, a return or the end of the code ends the walk with "an
exit may be reached". Only kernels that contain a trap are walked at all.

**PTX.** An instruction is a ``;``-terminated statement in an ``.entry`` body that
is not a declaration (``.reg``, ``.local``, ``.shared``, ``.param``, ``.pragma``);
control flow (``ret``, ``exit``, ``trap``, ``brkpt``, ``bra``) does no work. A
body compiled out by ``#if __CUDA_ARCH__`` is just ``ret;``.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from orchestrator.symbols import DEFAULT_HOLLOW_MAX_INSTRUCTIONS

SASS_INSTRUCTION_BYTES = 16
FIRST_128_BIT_SM = 70  # Volta; before it 64-bit instructions with scheduling words

# 12-bit opcode -> mnemonic, for instructions that do no work. Evidence: see the
# module docstring; two values for BRA/WARPSYNC are their register/uniform forms.
NON_WORKING_SASS_OPCODES: dict[int, str] = {
    0x918: "NOP",
    0x94D: "EXIT",
    0x947: "BRA",
    0x547: "BRA",  # BRA with a uniform predicate / register target form
    0x949: "BRX",
    0x950: "RET",
    0x95C: "BPT",  # BPT.TRAP: asm("trap;")
    0x946: "YIELD",
    0x945: "BSSY",
    0x941: "BSYNC",
    0x942: "BREAK",
    0x948: "WARPSYNC",
    0x348: "WARPSYNC",
}
NON_WORKING_SASS_MNEMONICS = frozenset(NON_WORKING_SASS_OPCODES.values())

# Lookup tables for counting without a Python-level loop over instructions: the
# low byte of an instruction maps to a bit per "high opcode nibble" group that
# could complete a non-working opcode, the next byte to the bit of its nibble.
_HIGH_NIBBLES = sorted({op >> 8 for op in NON_WORKING_SASS_OPCODES})
_NIBBLE_BIT = {nibble: 1 << i for i, nibble in enumerate(_HIGH_NIBBLES)}
_LOW_TABLE = bytes(
    sum(_NIBBLE_BIT[op >> 8] for op in NON_WORKING_SASS_OPCODES if op & 0xFF == low)
    for low in range(256)
)
_HIGH_TABLE = bytes(_NIBBLE_BIT.get(byte & 0x0F, 0) for byte in range(256))


def sass_opcode(word0: int) -> int:
    """The 12-bit opcode of a Volta+ instruction from its first 64-bit word.

    >>> hex(sass_opcode(0x000000040000795C))  # BPT.TRAP 0x1, unpredicated
    '0x95c'
    """
    return word0 & 0xFFF


def count_working_sass(code: bytes | memoryview, sm: int) -> int:
    """Instructions in ``code`` (a kernel's ``.text`` section) that do work.

    Before Volta (sm < 70) instructions are 64-bit in bundles with scheduling
    words, and no opcode table was verified for them (CUDA 13 cannot build them):
    there every instruction counts, so such kernels are never called hollow.

    >>> nop = (0x7918).to_bytes(8, "little") + (0x000FC00000000000).to_bytes(8, "little")
    >>> exit_ = (0x794D).to_bytes(8, "little") + (0x03800000 << 32).to_bytes(8, "little")
    >>> ffma = (0x0D067823).to_bytes(8, "little") + bytes(8)
    >>> count_working_sass(ffma + exit_ + nop * 2, 90)
    1
    """
    view = memoryview(code).cast("B")
    return count_working_sass_in(view, 0, len(view), sm)


def count_working_sass_in(
    data: bytes | bytearray | memoryview, start: int, end: int, sm: int
) -> int:
    """:func:`count_working_sass` of ``data[start:end]``, without copying that range:
    only the two bytes of each instruction that hold its opcode are gathered
    (strided slices), then classified with two ``bytes.translate`` tables.

    >>> ffma = (0x0D067823).to_bytes(8, "little") + bytes(8)
    >>> trap = (0x795C).to_bytes(8, "little") + bytes(8)
    >>> count_working_sass_in(bytes(4) + ffma + trap + ffma, 4, 52, 90)
    2
    """
    end = min(end, len(data))
    size = max(0, end - start)
    if sm < FIRST_128_BIT_SM:
        return size // 8 - size // 32  # one scheduling word per 3 instructions
    count = size // SASS_INSTRUCTION_BYTES
    if count == 0:
        return 0
    stop = start + count * SASS_INSTRUCTION_BYTES
    low = bytes(data[start:stop:SASS_INSTRUCTION_BYTES]).translate(_LOW_TABLE)
    high = bytes(data[start + 1 : stop : SASS_INSTRUCTION_BYTES]).translate(_HIGH_TABLE)
    matches = (int.from_bytes(low, "little") & int.from_bytes(high, "little")).to_bytes(
        count, "little"
    )
    return matches.count(0)


# --- control flow -------------------------------------------------------------------

OP_BRA = 0x947
OP_BRA_UNIFORM = 0x547  # BRA.U with a uniform predicate (UP0, !UP3 ...)
OP_EXIT = 0x94D
OP_BPT = 0x95C
OP_CALL_REL = 0x944
OP_CALL_REL_REGISTER = 0x344  # CALL.REL.NOINC R6 (through a function pointer)
OP_CALL_ABS = 0x343  # CALL.ABS.NOINC: vprintf, __assertfail, malloc
OP_RET = 0x950
OP_BRX = 0x949
OP_BRXU = 0x958
PREDICATE_TRUE = 0x7
PREDICATE_NEVER = 0xF  # @!PT
SPLIT_BRANCH_OFFSET_SM = 90

ControlKind = Literal["goto", "branch", "exit", "trap", "trap_if", "call", "call_out", "unknown"]
_CONTROL_OPCODES: dict[int, ControlKind] = {
    OP_BRA: "branch",
    OP_BRA_UNIFORM: "branch",
    OP_EXIT: "exit",
    OP_BPT: "trap",
    OP_CALL_REL: "call",
    OP_CALL_REL_REGISTER: "call",
    OP_CALL_ABS: "call_out",
    OP_RET: "unknown",
    OP_BRX: "unknown",
    OP_BRXU: "unknown",
}


@dataclass(frozen=True)
class ControlOp:
    """An instruction that steers control. ``goto``: unconditional branch;
    ``branch``: conditional one (both ways); ``exit``: a normal exit (guarded or
    not: either way a path exits there); ``trap``: ends the path; ``trap_if``: a
    guarded trap; ``call``/``call_out``: returns to the next instruction (out =
    to an external function, printf); ``unknown``: anything could follow (an
    indirect branch, a return)."""

    kind: ControlKind
    target: int = -1  # instruction index of a branch target


@dataclass(frozen=True)
class TrapEvidence:
    """Why a kernel is hollow although it has many instructions: every path of it
    traps, or (``guard`` set) it is a CUTLASS arch-guard stub."""

    traps: int  # BPT.TRAP instructions in its code
    calls_out: int  # calls to external functions (printf's vprintf, __assertfail)
    instructions: int  # all instructions of its code
    tensor_core: int = 0  # tensor-core (MMA) instructions: a stub has none
    guard: str = ""  # an arch-guard message it loads (a stub judged by it)
    other_guards: int = 0  # further such messages

    def __str__(self) -> str:
        if self.guard:
            more = f" (+{self.other_guards} more)" if self.other_guards else ""
            return (
                f"CUTLASS arch-guard stub: {self.traps} traps, {self.calls_out} printf/external "
                f"calls, {self.tensor_core} tensor-core instructions of {self.instructions}; "
                f'it prints "{self.guard}"{more}'
            )
        return (
            f"every path traps: {self.traps} traps, {self.calls_out} printf/external calls, "
            f"{self.instructions} instructions"
        )


def branch_offset(word0: int, word1: int, sm: int) -> int:
    """Byte offset of a BRA/CALL.REL target from the next instruction: a signed
    field of instruction words (4 bytes) in bits 34..81; from Hopper (sm_90) on,
    its low 8 bits moved to bits 16..23 (the field at 34.. counts 1024 bytes).

    >>> branch_offset(0x0000009000008947, 0x000FEA0003800000, 80)  # @!P0 BRA +0x90
    144
    >>> branch_offset(0x0000000000382947, 0x000FEA0003800000, 100)  # @P2 BRA +0xe0
    224
    >>> branch_offset(0xFFFFFFC000D47947, 0x000FEA000383FFFF, 100)  # BRA -15536
    -15536
    """
    field = ((word1 & 0x3FFFF) << 30) | (word0 >> 34)
    if field >> 47:
        field -= 1 << 48
    if sm < SPLIT_BRANCH_OFFSET_SM:
        return field * 4
    return field * 1024 + ((word0 >> 16) & 0xFF) * 4


def _decode_control(word0: int, word1: int, index: int, sm: int) -> ControlOp | None:
    opcode = word0 & 0xFFF
    kind = _CONTROL_OPCODES.get(opcode)
    guard = (word0 >> 12) & 0xF
    if kind is None or guard == PREDICATE_NEVER:
        return None
    target = index + 1 + branch_offset(word0, word1, sm) // SASS_INSTRUCTION_BYTES
    if opcode == OP_BRA:
        plain = (word0 >> 32) & 0x3 == 0 and (word1 >> 23) & 0xF == PREDICATE_TRUE
        return ControlOp("goto" if plain and guard == PREDICATE_TRUE else "branch", target)
    if opcode == OP_BRA_UNIFORM:
        return ControlOp("branch", target)
    if kind == "trap" and guard != PREDICATE_TRUE:
        return ControlOp("trap_if")
    return ControlOp(kind)


# The opcodes _decode_control looks at, found with the same two-table trick as the
# non-working ones (no Python loop over instructions).
def _opcode_tables(opcodes: Iterable[int]) -> tuple[bytes, bytes]:
    codes = set(opcodes)
    nibbles = sorted({op >> 8 for op in codes})
    assert len(nibbles) <= 8, "one bit per high nibble"
    bit = {nibble: 1 << i for i, nibble in enumerate(nibbles)}
    low = bytes(sum(bit[op >> 8] for op in codes if op & 0xFF == b) for b in range(256))
    high = bytes(bit.get(b & 0x0F, 0) for b in range(256))
    return low, high


_CONTROL_LOW, _CONTROL_HIGH = _opcode_tables(_CONTROL_OPCODES)
_NONZERO = re.compile(rb"[^\x00]")


def _matching(
    data: bytes | bytearray | memoryview, start: int, end: int, tables: tuple[bytes, bytes]
) -> bytes:
    """One byte per instruction of ``data[start:end]``: non-zero where its opcode is
    in the set the tables were made for."""
    end = min(end, len(data))
    count = max(0, end - start) // SASS_INSTRUCTION_BYTES
    if count == 0:
        return b""
    stop = start + count * SASS_INSTRUCTION_BYTES
    low = bytes(data[start:stop:SASS_INSTRUCTION_BYTES]).translate(tables[0])
    high = bytes(data[start + 1 : stop : SASS_INSTRUCTION_BYTES]).translate(tables[1])
    return (int.from_bytes(low, "little") & int.from_bytes(high, "little")).to_bytes(
        count, "little"
    )


def has_trap(data: bytes | bytearray | memoryview, start: int, end: int, sm: int) -> bool:
    """Whether ``data[start:end]`` holds a BPT instruction (cheap: one strided copy of
    the opcodes' low bytes and a search in it; most kernels have none).

    >>> trap = (0x795C).to_bytes(8, "little") + bytes(8)
    >>> has_trap(bytes(16) + trap, 0, 32, 90), has_trap(bytes(16) + trap, 0, 16, 90)
    (True, False)
    """
    if sm < FIRST_128_BIT_SM:
        return False
    end = min(end, len(data))
    stop = start + max(0, end - start) // SASS_INSTRUCTION_BYTES * SASS_INSTRUCTION_BYTES
    low = bytes(data[start:stop:SASS_INSTRUCTION_BYTES])
    at = low.find(OP_BPT & 0xFF)
    while at >= 0:
        if data[start + at * SASS_INSTRUCTION_BYTES + 1] & 0x0F == OP_BPT >> 8:
            return True
        at = low.find(OP_BPT & 0xFF, at + 1)
    return False


def sass_control_ops(
    data: bytes | bytearray | memoryview, start: int, end: int, sm: int
) -> dict[int, ControlOp]:
    """The control instructions of a Volta+ kernel's code ``data[start:end]``, by
    instruction index.

    >>> def ins(word0, word1=0x000FEA0003800000):
    ...     return word0.to_bytes(8, "little") + word1.to_bytes(8, "little")
    >>> code = ins(0x47947) + ins(0x795C) + ins(0x794D)  # BRA +16 bytes; trap; EXIT
    >>> sass_control_ops(code, 0, len(code), 90)
    {0: ControlOp(kind='goto', target=2), 1: ControlOp(kind='trap', target=-1), 2: ControlOp(kind='exit', target=-1)}
    """
    ops: dict[int, ControlOp] = {}
    for match in _NONZERO.finditer(_matching(data, start, end, (_CONTROL_LOW, _CONTROL_HIGH))):
        index = match.start()
        at = start + index * SASS_INSTRUCTION_BYTES
        word0 = int.from_bytes(data[at : at + 8], "little")
        word1 = int.from_bytes(data[at + 8 : at + 16], "little")
        op = _decode_control(word0, word1, index, sm)
        if op is not None:
            ops[index] = op
    return ops


def traps_on_every_path(ops: dict[int, ControlOp], count: int) -> bool:
    """Whether no path from instruction 0 reaches a normal exit without a trap, in
    code of ``count`` instructions whose control instructions are ``ops``. Only the
    control instructions are visited: straight-line code between them cannot
    change where a path goes.

    >>> traps_on_every_path({3: ControlOp("trap"), 5: ControlOp("exit")}, 6)
    True
    >>> traps_on_every_path({1: ControlOp("branch", 4), 3: ControlOp("trap"), 5: ControlOp("exit")}, 6)
    False
    """
    positions = sorted(ops)
    seen: set[int] = set()
    pending = [0]
    while pending:
        start = pending.pop()
        if start in seen:
            continue
        seen.add(start)
        at = bisect_left(positions, start)
        while True:
            if at == len(positions):
                return False  # runs off the end of the code: assume it could exit
            index = positions[at]
            op = ops[index]
            if op.kind in ("exit", "unknown"):
                return False
            if op.kind == "trap":
                break
            if op.kind in ("goto", "branch"):
                if not 0 <= op.target < count:
                    return False  # a target outside the code: assume it could exit
                pending.append(op.target)
                if op.kind == "goto":
                    break
            at += 1
    return True


def sass_trap_evidence(
    data: bytes | bytearray | memoryview,
    start: int,
    end: int,
    sm: int,
    guards: Callable[[], dict[int, str]] = dict,
) -> TrapEvidence | None:
    """Why the kernel whose code is ``data[start:end]`` is hollow by its control flow
    (every path traps, or a CUTLASS arch-guard stub: ``guards`` gives its cubin's
    messages), or None when it can do its work."""
    if sm < FIRST_128_BIT_SM or not has_trap(data, start, end, sm):
        return None
    ops = sass_control_ops(data, start, end, sm)
    count = (min(end, len(data)) - start) // SASS_INSTRUCTION_BYTES
    return kernel_trap_evidence(
        ops,
        count,
        count_tensor_core(data, start, end),
        lambda: constant_loads(data, start, end, CONSTANT_BANK_OF_STRINGS),
        guards,
    )


def trap_evidence(ops: dict[int, ControlOp], count: int) -> TrapEvidence | None:
    """:class:`TrapEvidence` when every path of the code traps, else None."""
    if not traps_on_every_path(ops, count):
        return None
    kinds = [op.kind for op in ops.values()]
    traps = kinds.count("trap") + kinds.count("trap_if")
    return TrapEvidence(traps, kinds.count("call_out"), count)


# --- CUTLASS arch-guard stubs ---------------------------------------------------------
#
# A CUTLASS/CuTe kernel compiled for a target that lacks an arch feature it uses
# (tcgen05/UMMA in plain sm_100 or in sm_120f, wgmma in plain sm_90) keeps its
# producer and epilogue code, so a path may exit without a trap, but each use of the
# missing feature became CUTE_INVALID_CONTROL_PATH("Attempting to use SM100_MMA_...
# without CUTE_ARCH_..."): printf + trap, and no tensor-core instruction is left.
# Such a kernel is hollow when its code traps, calls out (printf), has no
# tensor-core instruction, and loads the address of such a message: printf's format
# strings sit in .nv.global.init, their addresses in constant bank 4 (relocated
# pointers, one per string), which the kernel reads as c[0x4][offset]. The message
# is tied to the kernel that loads it, not to every kernel of its cubin (a SIMT
# kernel beside the stubs may print an assertion and trap: it is not one).

# Tensor-core instructions by the low 9 bits of their opcode (the upper 3 select an
# operand form: UTCQMMA is 0x5ea or 0xdea). Read off cuobjdump -sass of vLLM 0.19.0
# and 0.25.0 cubins, sm_75 .. sm_120f: HMMA 0x23c, IMMA 0x237, QMMA 0x27a, OMMA
# 0x47f, UTCHMMA/UTCQMMA/UTCOMMA 0x5ea/0xdea, HGMMA 0xdf0, IGMMA 0x9f1, QGMMA 0x9f3;
# no other instruction of those cubins has these low bits. The cuobjdump engine
# counts by mnemonic (*MMA*) instead, and the engines are compared on real wheels.
TENSOR_CORE_OPCODES = {
    0x03C: "HMMA",
    0x037: "IMMA",
    0x07A: "QMMA",
    0x07F: "OMMA",
    0x1EA: "UTC*MMA",
    0x1F0: "HGMMA",
    0x1F1: "IGMMA",
    0x1F3: "QGMMA",
}
_TENSOR_CORE_LOW = bytes(
    sum(1 << (op >> 8) for op in TENSOR_CORE_OPCODES if op & 0xFF == b) for b in range(256)
)
_TENSOR_CORE_HIGH = bytes(1 << (b & 1) for b in range(256))
TENSOR_CORE_MNEMONIC = re.compile(r"^[A-Z]*MMA(?:\.|$)")


def count_tensor_core(data: bytes | bytearray | memoryview, start: int, end: int) -> int:
    """Tensor-core (MMA) instructions in the Volta+ code ``data[start:end]``.

    >>> hmma = (0x723C).to_bytes(8, "little") + bytes(8)
    >>> utcqmma = (0x7DEA).to_bytes(8, "little") + bytes(8)
    >>> count_tensor_core(hmma + utcqmma + bytes(16), 0, 48)
    2
    """
    found = _matching(data, start, end, (_TENSOR_CORE_LOW, _TENSOR_CORE_HIGH))
    return len(found) - found.count(0)


# Instructions that read an immediate constant-bank operand c[bank][offset], as seen
# loading printf's format strings (cuobjdump -sass of vLLM 0.19.0/0.25.0/0.33.0 and
# FlashMLA cubins, sm_75 .. sm_120f): LDCU, LDC, ULDC and the c-operand form of IMAD
# (IMAD.MOV.U32 R4, RZ, RZ, c[0x4][0xf8]). In word 0's high half: the bank in bits
# 22..26, the byte offset from bit 6 (from bit 5 for LDCU); LDC and LDCU with a
# register index (byte 3 not RZ, 0xff) read no fixed offset (ULDC has no index: its
# byte 3 is 0).
CONSTANT_BANK_OF_STRINGS = 4
_CONSTANT_LOADS = {0x7AC: (5, 0x1FFFF), 0xB82: (6, 0xFFFF), 0xAB9: (6, 0xFFFF), 0x624: (6, 0xFFFF)}
_INDEXED_LOADS = frozenset({0x7AC, 0xB82})
_CONSTANT_TABLES = _opcode_tables(_CONSTANT_LOADS)
CONSTANT_OPERAND = re.compile(r"\bc\[0x([0-9a-f]+)\]\[(0x[0-9a-f]+)\]")


def constant_loads(
    data: bytes | bytearray | memoryview, start: int, end: int, bank: int
) -> frozenset[int]:
    """The fixed offsets of constant bank ``bank`` that the code ``data[start:end]``
    reads.

    >>> ldc = (0x01000400FF087B82).to_bytes(8, "little") + bytes(8)  # LDC.64 R8, c[0x4][0x10]
    >>> ldcu = (0x01000C00FF0477AC).to_bytes(8, "little") + bytes(8)  # LDCU.64 UR4, c[0x4][0x60]
    >>> uldc = (0x0100020000047AB9).to_bytes(8, "little") + bytes(8)  # ULDC.64 UR4, c[0x4][0x8]
    >>> sorted(constant_loads(ldc + ldcu + uldc, 0, 48, 4)), sorted(constant_loads(ldc, 0, 16, 0))
    ([8, 16, 96], [])
    """
    offsets = set()
    for match in _NONZERO.finditer(_matching(data, start, end, _CONSTANT_TABLES)):
        at = start + match.start() * SASS_INSTRUCTION_BYTES
        word0 = int.from_bytes(data[at : at + 8], "little")
        opcode, high = word0 & 0xFFF, word0 >> 32
        if opcode in _INDEXED_LOADS and (word0 >> 24) & 0xFF != 0xFF:
            continue
        if (high >> 22) & 0x1F != bank:
            continue
        shift, mask = _CONSTANT_LOADS[opcode]
        offsets.add((high >> shift) & mask)
    return frozenset(offsets)


_ARCH_GUARD_MESSAGE = re.compile(
    rb"without (?:CUTE_ARCH_[A-Z0-9_]+|targeting [\x20-\x7e]{0,60}?compute capability)"
)


def arch_guard_messages(strings: dict[int, bytes]) -> dict[int, str]:
    """Of a cubin's format strings by the offset of their pointer in constant bank 4,
    the CUTLASS/CuTe arch-guard messages.

    >>> arch_guard_messages({8: b"Trying to use tma without CUTE_ARCH_TMA_SM90_ENABLED.", 16: b"%d"})
    {8: 'Trying to use tma without CUTE_ARCH_TMA_SM90_ENABLED.'}
    """
    return {
        offset: text.decode("utf-8", "replace").strip()
        for offset, text in strings.items()
        if _ARCH_GUARD_MESSAGE.search(text)
    }


def kernel_trap_evidence(
    ops: dict[int, ControlOp],
    count: int,
    tensor_core: int,
    loads: Callable[[], frozenset[int]],
    guards: Callable[[], dict[int, str]],
) -> TrapEvidence | None:
    """Why a trapping kernel is hollow: every path traps, or it is a CUTLASS
    arch-guard stub (it loads one of ``guards``, its cubin's arch-guard messages by
    pointer offset, and has no tensor-core instruction); None when it is not hollow.
    ``loads`` (its constant-bank-4 offsets) and ``guards`` are asked for only when the
    rest holds."""
    evidence = trap_evidence(ops, count)
    if evidence is not None:
        return evidence
    kinds = [op.kind for op in ops.values()]
    traps, calls_out = kinds.count("trap") + kinds.count("trap_if"), kinds.count("call_out")
    if not traps or not calls_out or tensor_core:
        return None
    messages = guards()
    printed = sorted({messages[offset] for offset in loads() if offset in messages})
    if not printed:
        return None
    return TrapEvidence(traps, calls_out, count, tensor_core, printed[0], len(printed) - 1)


def is_hollow(instructions: int, threshold: int = DEFAULT_HOLLOW_MAX_INSTRUCTIONS) -> bool:
    """A kernel with at most ``threshold`` working instructions does nothing useful:
    its body was compiled out (``#if __CUDA_ARCH__``) or replaced by a trap."""
    return instructions <= threshold


# --- PTX ----------------------------------------------------------------------------

# A function header: .entry / .func, a return value list for .func, then the name.
_PTX_FUNCTION = re.compile(rb"\.(entry|func)[ \t]+(?:\([^)]*\)[ \t]*)?([A-Za-z_$%][\w$%]*)")
_LINKAGE = re.compile(rb"[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*")
# Statements that are no instruction (declarations) or do no work (control flow),
# matched at the start of a line: the definition is _PTX_NOT_WORK applied to the
# first 81 characters of each line that starts with one of these characters (most
# PTX lines start with other letters: mov, ld, st, add...). _scan_lines finds the
# same lines in one pass over the module.
_PTX_LINE_CANDIDATE = re.compile(rb"\n([.@rebt{ \t][^\n]{0,80})")
_PTX_NOT_WORK = re.compile(
    rb"[ \t]*(?:\{[ \t]*)?(?:\.(?:reg|local|shared|param|pragma)\b|"
    rb"(?:@!?%\w+[ \t]+)?(?:ret|exit|trap|brkpt|bra)\b)"
)
PTX_TARGET = re.compile(rb"(?m)^[ \t]*\.target[ \t]+([\w, ]+)")


@dataclass(frozen=True)
class PtxEntry:
    """One ``.entry`` (kernel) of a PTX module."""

    mangled: str
    instructions: int


def ptx_entries(
    text: bytes, wanted: Callable[[str], bool] | None = None, limit: int | None = None
) -> list[PtxEntry]:
    """The kernels of a PTX module with their working-instruction counts; with
    ``wanted`` (of a mangled name), only those it wants, and only their bodies are
    scanned (the same counts: ``tests/unit/test_demand.py``). With ``limit`` too, a
    body is scanned only until it has more than ``limit`` working instructions: a
    count above ``limit`` is then a lower bound (hollowness up to that threshold is
    decided exactly, which is all a verdict asks).

    >>> ptx = b'''.version 9.0
    ... .target sm_80
    ... .visible .entry _Z5emptyPf(
    ... .param .u64 _Z5emptyPf_param_0
    ... )
    ... {
    ... ret;
    ... }
    ... .visible .entry _Z4workPf(
    ... .param .u64 _Z4workPf_param_0
    ... )
    ... {
    ... .reg .b64 %rd<3>;
    ... ld.param.u64 %rd1, [_Z4workPf_param_0];
    ... cvta.to.global.u64 %rd2, %rd1;
    ... st.global.u32 [%rd2], 1;
    ... ret;
    ... }
    ... '''
    >>> ptx_entries(ptx)
    [PtxEntry(mangled='_Z5emptyPf', instructions=0), PtxEntry(mangled='_Z4workPf', instructions=3)]
    """
    if wanted is None:
        headers, not_work = _scan_lines(text)
    else:
        headers, not_work = _ptx_headers(text), []
    entries = []
    for index, (kind, name, _, end_of_header) in enumerate(headers):
        if kind != b"entry":
            continue
        mangled = name.decode("ascii")
        if wanted is not None and not wanted(mangled):
            continue
        end = headers[index + 1][2] if index + 1 < len(headers) else len(text)
        if wanted is None:
            count = _ptx_body_count(text, end_of_header, end, not_work)
        else:
            count = _ptx_body_count_until(text, end_of_header, end, limit)
        entries.append(PtxEntry(mangled, count))
    return entries


def _ptx_headers(text: bytes) -> list[tuple[bytes, bytes, int, int]]:
    """The function headers ``_scan_lines`` finds, found without scanning every line:
    each ``.entry`` / ``.func`` (a fast substring search) whose line holds only
    linkage words before it."""
    headers: list[tuple[bytes, bytes, int, int]] = []
    for keyword in (b".entry", b".func"):
        at = text.find(keyword)
        while at >= 0:
            line = text.rfind(b"\n", 0, at) + 1
            linkage = _LINKAGE.match(text, line, at)
            if linkage is not None and linkage.end() == at:
                _add_header(text, at, headers)
            at = text.find(keyword, at + 1)
    return sorted(headers, key=lambda header: header[2])


def _not_work_lines(text: bytes, start: int, end: int) -> list[int]:
    """``_scan_lines``'s no-work newlines between ``start`` and ``end`` (one body)."""
    return [
        match.start()
        for match in _PTX_LINE_START.finditer(text, start, end)
        if match.start("header") < 0 and _does_no_work(text, match)
    ]


# What one pass over a PTX module finds at line starts: a function header, or a
# statement that does no work. Both begin with one of the candidate characters
# (the lookahead rejects every other line at once). The no-work keywords are matched
# without their closing word boundary, which ``_scan_lines`` checks, so that the
# count stays exactly that of ``_PTX_NOT_WORK`` applied to each candidate line.
_PTX_LINE_START = re.compile(
    rb"\n(?=[.@rebt{ \t])(?:"
    rb"[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*(?P<header>\.(?:entry|func)[ \t])"
    rb"|[ \t]*(?:\{[ \t]*)?(?:\.(?:reg|local|shared|param|pragma)|(?:@!?%\w+[ \t]+)?"
    rb"(?:ret|exit|trap|brkpt|bra))(?P<more>\w)?)"
)
_CANDIDATE_WINDOW = 81  # the characters of a line _PTX_LINE_CANDIDATE looks at


def _scan_lines(text: bytes) -> tuple[list[tuple[bytes, bytes, int, int]], list[int]]:
    """Function headers ``(kind, name, start, end)`` in order, and the positions of
    the newlines that start a line doing no work (to be counted per body)."""
    headers: list[tuple[bytes, bytes, int, int]] = []
    not_work: list[int] = []
    first = _LINKAGE.match(text, 0)
    if first is not None:
        _add_header(text, first.end(), headers)
    for match in _PTX_LINE_START.finditer(text):
        keyword = match.start("header")
        if keyword >= 0:
            _add_header(text, keyword, headers)
        elif _does_no_work(text, match):
            not_work.append(match.start())
    return headers, not_work


def _does_no_work(text: bytes, match: re.Match[bytes]) -> bool:
    """Whether a no-work candidate of ``_PTX_LINE_START`` is a line doing no work."""
    newline = match.start()
    # Short and ended by a non-word character: what _PTX_NOT_WORK accepts on the
    # line's first _CANDIDATE_WINDOW characters. Anything else (rare) is checked
    # exactly so.
    plain = match.end() - newline - 1 <= _CANDIDATE_WINDOW and match.start("more") < 0
    return plain or _line_does_no_work(text, newline + 1, len(text))


def _add_header(text: bytes, keyword: int, headers: list[tuple[bytes, bytes, int, int]]) -> None:
    match = _PTX_FUNCTION.match(text, keyword)
    if match:
        headers.append((match.group(1), match.group(2), keyword, match.end()))


def _line_does_no_work(text: bytes, start: int, end: int) -> bool:
    """Whether the line at ``start`` (a candidate line, looked at up to ``end`` and
    through its first _CANDIDATE_WINDOW characters) declares or branches only."""
    if start >= end or text[start] not in _CANDIDATE_FIRST:
        return False
    eol = text.find(b"\n", start, end)
    stop = min(eol if eol >= 0 else end, start + _CANDIDATE_WINDOW)
    return _PTX_NOT_WORK.match(text, start, stop) is not None


_CANDIDATE_FIRST = frozenset(b".@rebt{ \t")


def _ptx_body_count(text: bytes, start: int, end: int, not_work: list[int]) -> int:
    """Working instructions between a function header and the next one (or EOF).

    The body runs from the first ``{`` after the parameter list to the last ``}``
    at the start of a line before the next function (embedded PTX is compacted,
    inner blocks also close at column 0, so the last one is the body's): its
    statements (``;``) less the lines in it that do no work."""
    opening, closing = _ptx_body(text, start, end)
    if opening < 0:
        return 0  # a declaration without a body
    if closing < 0:
        # No closing line: the body runs to the next header (truncated or odd PTX),
        # counted line by line.
        body = text[opening + 1 : end + 1]
        lines = _PTX_LINE_CANDIDATE.findall(b"\n" + body)
        idle = sum(1 for line in lines if _PTX_NOT_WORK.match(line))
        return max(0, body.count(b";") - idle)
    low, high = opening + 1, closing + 1
    idle = bisect_left(not_work, high) - bisect_left(not_work, low)
    # The body's first line follows the "{" (usually nothing, or a newline).
    idle += _line_does_no_work(text, low, high)
    return max(0, text.count(b";", low, high) - idle)


def _ptx_body(text: bytes, start: int, end: int) -> tuple[int, int]:
    """(the body's ``{``, the newline before its closing ``}``); -1 where absent."""
    params_end = text.find(b")", start, end)
    opening = text.find(b"{", params_end if params_end >= 0 else start, end)
    if opening < 0:
        return -1, -1
    return opening, text.rfind(b"\n}", opening, end)


_CHUNK = 4096  # bytes of a body scanned at a time when counting up to a limit


def _ptx_body_count_until(text: bytes, start: int, end: int, limit: int | None) -> int:
    """``_ptx_body_count`` of one body, scanning only that body, and with ``limit``
    only until more than ``limit`` working instructions are found (chunk by chunk,
    each ending at a line end; every no-work line holds its own ``;``, so the count
    only grows)."""
    opening, closing = _ptx_body(text, start, end)
    if opening < 0 or closing < 0:
        return _ptx_body_count(text, start, end, _not_work_lines(text, start, end))
    low, high = opening + 1, closing + 1
    working = -_line_does_no_work(text, low, high)
    position = low
    while position < high:
        stop = text.find(b"\n", min(high, position + _CHUNK), high)
        stop = high if stop < 0 else stop
        working += text.count(b";", position, stop) - len(_not_work_lines(text, position, stop))
        position = stop
        if limit is not None and working > limit:
            break
    return max(0, working)


def ptx_target(text: bytes) -> str | None:
    """The ``.target`` of a PTX module (``sm_100a``), or None."""
    match = PTX_TARGET.search(text, 0, 4096)
    if not match:
        return None
    return match.group(1).split(b",")[0].strip().decode("ascii")


# --- source files from mangled names ---------------------------------------------

# nvcc renames internal-linkage names after their translation unit:
# CUDA 13: _GLOBAL__N__<hash>_<len>_<file>_cu_<hash>; CUDA 12 and others:
# _INTERNAL_<hash>_<len>_<file>_cu_<hash>. <len> counts "<file>_cu".
# <len> has at most 9 digits: a longer run is not nvcc's (and int() of thousands of
# digits raises).
_TU_MARKER = re.compile(r"(?:_GLOBAL__N__|_INTERNAL_)[0-9a-f]+_([0-9]{1,9})_")
# Both spellings in one pass (a match of one cannot overlap one of the other: the
# hex digits are lowercase).
_TU_MARKER_BYTES = re.compile(rb"_(?:GLOBAL__N__|INTERNAL_)[0-9a-f]+_([0-9]{1,9})_")


def source_of(name: str) -> Iterator[str]:
    """Source files encoded in one (mangled) name.

    >>> list(source_of("_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"))
    ['nvfp4_quant_kernels.cu']
    >>> list(source_of("_ZN45_INTERNAL_8a3b4e3c_16_scaled_mm_c3x_cu_7e2e4e5f4vllm1xE"))
    ['scaled_mm_c3x.cu']
    >>> list(source_of("_Z6kernelPf"))
    []
    """
    for match in _TU_MARKER.finditer(name):
        yield from _decode(name, match.end(), int(match.group(1)))


def _decode(name: str, start: int, length: int) -> Iterator[str]:
    encoded = name[start : start + length]
    if len(encoded) != length or not name.startswith("_", start + length):
        return  # not the nvcc spelling after all
    stem, sep, extension = encoded.rpartition("_")
    if sep and stem and extension:
        yield f"{stem}.{extension}"


def sources_of(names: Iterable[str]) -> tuple[str, ...]:
    """Sorted source files that any of ``names`` carries."""
    found: set[str] = set()
    for name in names:
        if "_GLOBAL__N__" in name or "_INTERNAL_" in name:
            found.update(source_of(name))
    return tuple(sorted(found))


def sources_in(text: bytes) -> tuple[str, ...]:
    """Source files that the names in a PTX module or a cubin's string table carry
    (every name, not only kernels: internal variables carry the file too)."""
    found: set[str] = set()
    for match in _TU_MARKER_BYTES.finditer(text):
        length = int(match.group(1))
        start = match.end()
        encoded = text[start : start + length + 1]
        found.update(_decode(encoded.decode("latin-1"), 0, length))
    return tuple(sorted(found))
