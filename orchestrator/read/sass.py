"""Decoding SASS (the machine code of cubins) from its bytes: working-instruction
counts, the instructions that steer control, tensor-core instructions and
constant-bank loads. What they mean for a kernel is :mod:`orchestrator.read.kernelcode`'s.

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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

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
