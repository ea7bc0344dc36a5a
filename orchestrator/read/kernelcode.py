"""What a kernel's code says, whichever engine read it: whether it can do its work
(hollow: compiled out, every path traps, or a CUTLASS arch-guard stub) and the source
files that mangled names carry. The bytes are decoded by :mod:`orchestrator.read.sass`
and :mod:`orchestrator.read.ptx`.

Both probe engines (native fatbin reader, real cuobjdump) hand the same bytes to
these functions, so that their inventories are equal by construction where they
share a definition, and differ only where they really read different data.

**Control flow.** A kernel is hollow when it can do nothing but trap; the
instructions that steer control are decoded by :func:`orchestrator.read.sass.sass_control_ops`,
and :func:`traps_on_every_path` walks the graph they form.

ptxas does not treat a trap as the end of a path (code follows it), so the walk
does: a trap without a guard ends the path. A call returns (callees are not
walked: a callee that always traps leaves the kernel judged not hollow, the safe
side); an indirect branch, a return or the end of the code ends the walk with "an
exit may be reached". Only kernels that contain a trap are walked at all.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from orchestrator.common.bytesearch import positions
from orchestrator.common.words import counted
from orchestrator.read.sass import (
    CONSTANT_BANK_OF_STRINGS,
    FIRST_128_BIT_SM,
    SASS_INSTRUCTION_BYTES,
    ControlOp,
    constant_loads,
    count_tensor_core,
    has_trap,
    sass_control_ops,
)
from orchestrator.symbols import DEFAULT_HOLLOW_MAX_INSTRUCTIONS


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
                f"CUTLASS arch-guard stub: {counted(self.traps, 'trap')}, "
                f"{counted(self.calls_out, 'printf/external call')}, "
                f"{counted(self.tensor_core, 'tensor-core instruction')} of {self.instructions}; "
                f'it prints "{self.guard}"{more}'
            )
        return (
            f"every path traps: {counted(self.traps, 'trap')}, "
            f"{counted(self.calls_out, 'printf/external call')}, "
            f"{counted(self.instructions, 'instruction')}"
        )


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


# --- source files from mangled names ---------------------------------------------

# nvcc renames internal-linkage names after their translation unit:
# CUDA 13: _GLOBAL__N__<hash>_<len>_<file>_cu_<hash>; CUDA 12 and others:
# _INTERNAL_<hash>_<len>_<file>_cu_<hash>. <len> counts "<file>_cu".
# <len> has at most 9 digits: a longer run is not nvcc's (and int() of thousands of
# digits raises).
_TU_MARKER = re.compile(r"(?:_GLOBAL__N__|_INTERNAL_)[0-9a-f]+_([0-9]{1,9})_")
_TU_SPELLINGS = (b"_GLOBAL__N__", b"_INTERNAL_")
_TU_MARKER_REST = re.compile(rb"[0-9a-f]+_([0-9]{1,9})_")  # after a spelling
# Both spellings in one pass, at every position (a lookahead: a marker may begin with
# the underscore that ends the one before).
_TU_MARKER_BYTES = re.compile(
    rb"(?=((?:%s)%s))" % (b"|".join(_TU_SPELLINGS), _TU_MARKER_REST.pattern)
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
    (every name, not only kernels: internal variables carry the file too).

    ``sources_in_each``, its two spellings found by the C library's memmem (``_`` is
    everywhere in names: a regex that starts with it tries every one), the rest
    matched there, and the thousands of names of one translation unit decoded once."""
    found: set[str] = set()
    decoded: set[bytes] = set()
    for spelling in _TU_SPELLINGS:
        for at in positions(text, spelling):
            rest = _TU_MARKER_REST.match(text, at + len(spelling))
            if rest is None:
                continue
            length, start = int(rest[1]), rest.end()
            marker = text[at : start + length + 1]
            if marker not in decoded:
                decoded.add(marker)
                found.update(_decode(marker[start - at :].decode("latin-1"), 0, length))
    return tuple(sorted(found))


def sources_in_each(text: bytes) -> tuple[str, ...]:
    """``sources_in``, match by match (its definition)."""
    found: set[str] = set()
    for match in _TU_MARKER_BYTES.finditer(text):
        length = int(match.group(2))
        start = match.end(1)
        encoded = text[start : start + length + 1]
        found.update(_decode(encoded.decode("latin-1"), 0, length))
    return tuple(sorted(found))
