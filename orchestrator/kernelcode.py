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

**PTX.** An instruction is a ``;``-terminated statement in an ``.entry`` body that
is not a declaration (``.reg``, ``.local``, ``.shared``, ``.param``, ``.pragma``);
control flow (``ret``, ``exit``, ``trap``, ``brkpt``, ``bra``) does no work. A
body compiled out by ``#if __CUDA_ARCH__`` is just ``ret;``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

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
    data = bytes(code)
    if sm < FIRST_128_BIT_SM:
        return len(data) // 8 - len(data) // 32  # one scheduling word per 3 instructions
    count = len(data) // SASS_INSTRUCTION_BYTES
    if count == 0:
        return 0
    data = data[: count * SASS_INSTRUCTION_BYTES]
    low = int.from_bytes(data[0::SASS_INSTRUCTION_BYTES].translate(_LOW_TABLE), "little")
    high = int.from_bytes(data[1::SASS_INSTRUCTION_BYTES].translate(_HIGH_TABLE), "little")
    matches = (low & high).to_bytes(count, "little")
    return matches.count(0)


def is_hollow(instructions: int, threshold: int = DEFAULT_HOLLOW_MAX_INSTRUCTIONS) -> bool:
    """A kernel with at most ``threshold`` working instructions does nothing useful:
    its body was compiled out (``#if __CUDA_ARCH__``) or replaced by a trap."""
    return instructions <= threshold


# --- PTX ----------------------------------------------------------------------------

# A function header: .entry / .func, a return value list for .func, then the name.
_PTX_FUNCTION = re.compile(rb"\.(entry|func)[ \t]+(?:\([^)]*\)[ \t]*)?([A-Za-z_$%][\w$%]*)")
_LINKAGE = re.compile(rb"[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*")
# Statements that are no instruction (declarations) or do no work (control flow),
# matched at the start of a line. Lines are pre-selected by their first character
# with one fast scan (most PTX lines start with other letters: mov, ld, st, add...).
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


def ptx_entries(text: bytes) -> list[PtxEntry]:
    """The kernels of a PTX module with their working-instruction counts.

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
    headers = _function_headers(text)
    entries = []
    for index, header in enumerate(headers):
        if header.group(1) != b"entry":
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        entries.append(
            PtxEntry(header.group(2).decode("ascii"), _ptx_body_count(text, header.end(), end))
        )
    return entries


def _function_headers(text: bytes) -> list[re.Match[bytes]]:
    """Function headers in order: ``.entry``/``.func`` found with fast substring
    search, kept only where the line before them holds nothing but linkage."""
    found = []
    for keyword in (b".entry", b".func"):
        position = text.find(keyword)
        while position >= 0:
            line_start = text.rfind(b"\n", 0, position) + 1
            if _LINKAGE.fullmatch(text, line_start, position):
                match = _PTX_FUNCTION.match(text, position)
                if match:
                    found.append(match)
            position = text.find(keyword, position + len(keyword))
    return sorted(found, key=lambda m: m.start())


def _ptx_body_count(text: bytes, start: int, end: int) -> int:
    """Working instructions between a function header and the next one (or EOF).

    The body runs from the first ``{`` after the parameter list to the last ``}``
    at the start of a line before the next function (embedded PTX is compacted,
    inner blocks also close at column 0, so the last one is the body's)."""
    params_end = text.find(b")", start, end)
    opening = text.find(b"{", params_end if params_end >= 0 else start, end)
    if opening < 0:
        return 0  # a declaration without a body
    closing = text.rfind(b"\n}", opening, end)
    if closing < 0:
        closing = end
    body = text[opening + 1 : closing + 1]
    statements = body.count(b";")
    not_work = sum(
        1 for line in _PTX_LINE_CANDIDATE.findall(b"\n" + body) if _PTX_NOT_WORK.match(line)
    )
    return max(0, statements - not_work)


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
_TU_MARKER = re.compile(r"(?:_GLOBAL__N__|_INTERNAL_)[0-9a-f]+_(\d+)_")
# One pattern per spelling: a literal prefix lets the regex engine skip ahead fast.
_TU_MARKERS_BYTES = (
    re.compile(rb"_GLOBAL__N__[0-9a-f]+_(\d+)_"),
    re.compile(rb"_INTERNAL_[0-9a-f]+_(\d+)_"),
)


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
    for marker in _TU_MARKERS_BYTES:
        for match in marker.finditer(text):
            length = int(match.group(1))
            start = match.end()
            encoded = text[start : start + length + 1]
            found.update(_decode(encoded.decode("latin-1"), 0, length))
    return tuple(sorted(found))
