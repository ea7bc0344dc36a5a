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
from bisect import bisect_left
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
    headers, not_work = _scan_lines(text)
    entries = []
    for index, (kind, name, _, end_of_header) in enumerate(headers):
        if kind != b"entry":
            continue
        end = headers[index + 1][2] if index + 1 < len(headers) else len(text)
        entries.append(
            PtxEntry(name.decode("ascii"), _ptx_body_count(text, end_of_header, end, not_work))
        )
    return entries


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
            continue
        newline = match.start()
        # Short and ended by a non-word character: what _PTX_NOT_WORK accepts on
        # the line's first _CANDIDATE_WINDOW characters. Anything else (rare) is
        # checked exactly so.
        plain = match.end() - newline - 1 <= _CANDIDATE_WINDOW and match.start("more") < 0
        if plain or _line_does_no_work(text, newline + 1, len(text)):
            not_work.append(newline)
    return headers, not_work


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
    params_end = text.find(b")", start, end)
    opening = text.find(b"{", params_end if params_end >= 0 else start, end)
    if opening < 0:
        return 0  # a declaration without a body
    closing = text.rfind(b"\n}", opening, end)
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
