"""The native engine: read the ``.nv_fatbin`` section of a shared object ourselves,
with no CUDA installation.

Layout, worked out on real binaries (nvcc 13.0 / 13.5, vLLM 0.33.0 wheels) and
checked against cuobjdump by ``tests/integration``:

``.nv_fatbin`` is a sequence of fatbin containers (each translation unit's fatbin,
and with ``nvcc -shared`` a device-link one as well). On x86-64 they are back to
back. On aarch64 each starts on a boundary of the section's alignment
(``sh_addralign`` 256, measured on vLLM 0.33.0 and sgl-kernel 0.3.21 wheels: nvcc's
``.align 8`` means 2^8 bytes to the GNU assembler there), with zero bytes between
them: 0 to 248 bytes, none after the last. Zero bytes up to the next such boundary
are padding; anything else where a container should start is corrupt. A container:

====== ====  ============================================================
offset size  field
====== ====  ============================================================
0      u32   magic ``0xBA55ED50``
4      u16   version (1)
6      u16   header size (16)
8      u64   size of the entries that follow the header
====== ====  ============================================================

then entries, each an entry header followed by its payload:

====== ====  ============================================================
0      u16   kind: 1 PTX, 2 ELF (cubin)
2      u16   entry version (``0x0101``)
4      u32   header size (64, 80, 96, 112: extensions follow the 64 bytes)
8      u64   payload size (padded to 8)
16     u32   compressed size (0 when not compressed)
20     u32   offset of the header extension (64, or 0 without one)
24     u16   code version minor  (ELF ``[1,8]``, PTX ``[9,0]``)
26     u16   code version major
28     u32   SM number (``100`` for sm_100f)
32     u32   offset of an object name (0: none)
36     u32   its length
40     u64   flags, below
48     u64   (0)
56     u64   uncompressed size (0 when not compressed)
====== ====  ============================================================

Flags: ``0x1`` 64-bit, ``0x10`` Linux host, ``0x2000`` payload is an LZ4 block
(``--compress-mode=speed``, CUDA 12 default), ``0x8000`` payload is a zstd frame
(CUDA 13 default for PTX, ``size``/``balance`` modes), ``0x100000`` arch-specific
(``sm_90a``), ``0x200000`` family (``sm_100f``), ``0x1000000`` set for sm_100+.
The a/f suffix lives **only** here: a cubin's e_flags are the same for sm_100,
sm_100a and sm_100f (``0x6006402``) and ``.nv.compat`` marks only ``a``.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import lz4.block
import zstandard

from orchestrator.archs import KNOWN_CCS, ComputeCapability, Target, Variant
from orchestrator.common.errors import InputFileError
from orchestrator.read.demand import Demand, KernelFilter
from orchestrator.read.elf import (
    Blob,
    constant_bank_strings,
    read_cubin,
    read_exact,
)
from orchestrator.read.inventory import NOT_JUDGED, CodeObject, Kernel
from orchestrator.read.kernelcode import (
    arch_guard_messages,
    is_hollow,
    sass_trap_evidence,
    sources_in,
)
from orchestrator.read.ptx import ptx_entries
from orchestrator.read.sass import CONSTANT_BANK_OF_STRINGS, count_working_sass_in
from orchestrator.symbols import demangle

FATBIN_MAGIC = 0xBA55ED50
MAX_PADDING_UNIT = 4096  # the largest section alignment taken as container padding
FATBIN_SECTION = ".nv_fatbin"
KNOWN_CONTAINER_VERSIONS = frozenset({1})
KNOWN_ENTRY_VERSIONS = frozenset({0x0101})
KIND_PTX = 1
KIND_ELF = 2

FLAG_LZ4 = 0x2000
FLAG_ZSTD = 0x8000
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_FAMILY = 0x200000

ENTRY_HEADER_MIN = 64
MAX_ENTRY_HEADER = 4096
# zstd takes at most a signed 32-bit output size; no real entry comes near it.
MAX_UNCOMPRESSED = (1 << 31) - 1
# The most either format can expand: an LZ4 block at most 255:1 (a match grows by
# 255 bytes per length byte), a zstd frame at most 32768:1 (an RLE block of 128 KiB
# costs 4 bytes). A header claiming more than its payload can hold is corrupt, and
# this bounds what a hostile header can make us allocate by the file's own size.
# (Real cubins do reach thousands to one: a 16 MiB initialised __device__ array
# compresses about 7800:1, so the bound must be the format's, not a guess.)
MAX_RATIO = {FLAG_LZ4: 255, FLAG_ZSTD: 1 << 15}
RATIO_SLACK = 4096  # frame and block headers of a tiny payload


_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")


@dataclass(frozen=True)
class Entry:
    """One fatbin entry's header, and where its payload is."""

    kind: int
    target: Target
    flags: int
    payload_offset: int
    payload_size: int
    compressed_size: int
    uncompressed_size: int
    container: int = 0  # offset of its fatbin container (one per translation unit)


def entry_target(sm: int, flags: int, kind: int, where: str) -> Target:
    """The exact target of an entry: SM number plus the a/f bits of its flags.

    >>> entry_target(100, 0x01200011, KIND_ELF, "x").name
    'sm_100f'
    >>> entry_target(90, 0x00100011, KIND_ELF, "x").name
    'sm_90a'
    >>> entry_target(120, 0x8011, KIND_PTX, "x").name
    'compute_120'
    """
    cc = ComputeCapability.from_sm(sm)
    if cc not in KNOWN_CCS:
        raise InputFileError(f"{where}: fatbin entry for unknown architecture sm_{sm}")
    arch_specific, family = bool(flags & FLAG_ARCH_SPECIFIC), bool(flags & FLAG_FAMILY)
    if arch_specific and family:
        raise InputFileError(f"{where}: fatbin entry for sm_{sm} is marked both 'a' and 'f'")
    variant = (
        Variant.ARCH_SPECIFIC if arch_specific else Variant.FAMILY if family else Variant.PLAIN
    )
    try:
        return Target.parse(f"{'compute' if kind == KIND_PTX else 'sm'}_{sm}{variant.value}")
    except Exception:  # an 'a'/'f' on an arch that has none: the file is corrupt
        raise InputFileError(
            f"{where}: fatbin entry sm_{sm} has variant '{variant.value}' that this arch lacks"
        ) from None


def padding_unit(align: int) -> int:
    """The boundary containers may be padded to, from the section's ``sh_addralign``:
    itself when it is a power of two from 8 to 4096 (aarch64: 256), else 8 (the
    alignment of every entry), so a hostile alignment cannot make megabytes of
    zeros padding.

    >>> padding_unit(256), padding_unit(1), padding_unit(0), padding_unit(1 << 20), padding_unit(24)
    (256, 8, 8, 8, 8)
    """
    return align if 8 <= align <= MAX_PADDING_UNIT and align & (align - 1) == 0 else 8


def iter_entries(blob: Blob, offset: int, size: int, align: int = 8) -> Iterator[Entry]:
    """Every entry of the fatbin containers in ``blob[offset:offset+size]``, in order;
    zero bytes up to the next boundary of ``padding_unit(align)`` (counted from the
    section's start) between containers are padding.

    Each step moves forward by at least a header's size or to the next boundary, so
    the loop is bounded by the section size whatever the bytes say."""
    end = offset + size
    position = offset
    unit = padding_unit(align)
    while position < end:
        gap = min(-(position - offset) % unit, end - position)
        if gap and not any(bytes(read_exact(blob, position, gap, "fatbin padding"))):
            position += gap  # alignment padding before the next container (or the end)
            continue
        if end - position < _CONTAINER.size:
            if not any(bytes(read_exact(blob, position, end - position, "fatbin padding"))):
                return  # zero padding at the end of the section
            raise InputFileError(f"{blob.name}: truncated fatbin container at offset {position}")
        magic, version, header_size, entries_size = _CONTAINER.unpack(
            bytes(read_exact(blob, position, _CONTAINER.size, "a fatbin header"))
        )
        if magic != FATBIN_MAGIC:
            if magic == 0 and not any(bytes(read_exact(blob, position, end - position, "padding"))):
                return
            raise InputFileError(
                f"{blob.name}: corrupt fatbin: bad magic {magic:#010x} at offset {position}"
            )
        if version not in KNOWN_CONTAINER_VERSIONS:
            raise InputFileError(
                f"{blob.name}: fatbin container version {version} at offset {position} is "
                "unknown (this probe knows version 1); use --engine cuobjdump"
            )
        if header_size < _CONTAINER.size or position + header_size + entries_size > end:
            raise InputFileError(
                f"{blob.name}: truncated or corrupt fatbin container at offset {position} "
                f"(header {header_size} bytes, {entries_size} bytes of entries, section ends at {end})"
            )
        entry_pos = position + header_size
        container_end = entry_pos + entries_size
        while entry_pos < container_end:
            entry = _read_entry(blob, entry_pos, container_end, position)
            yield entry
            entry_pos = entry.payload_offset + entry.payload_size
        position = container_end


def _read_entry(blob: Blob, position: int, container_end: int, container: int) -> Entry:
    where = f"{blob.name}: fatbin entry at offset {position}"
    if container_end - position < ENTRY_HEADER_MIN:
        raise InputFileError(f"{where}: truncated entry header")
    (
        kind,
        version,
        header_size,
        payload_size,
        compressed,
        _,
        _,
        _,
        sm,
        _,
        _,
        flags,
        _,
        uncompressed,
    ) = _ENTRY.unpack(bytes(read_exact(blob, position, _ENTRY.size, "a fatbin entry header")))
    if kind not in (KIND_PTX, KIND_ELF):
        raise InputFileError(f"{where}: unknown entry kind {kind} (1 is PTX, 2 is a cubin)")
    if version not in KNOWN_ENTRY_VERSIONS:
        raise InputFileError(
            f"{where}: unknown entry version {version:#06x} (this probe knows 0x0101); "
            "use --engine cuobjdump"
        )
    if header_size < ENTRY_HEADER_MIN or header_size > MAX_ENTRY_HEADER or header_size % 8:
        raise InputFileError(f"{where}: corrupt entry header size {header_size}")
    payload_offset = position + header_size
    if payload_offset + payload_size > container_end:
        raise InputFileError(
            f"{where}: truncated or corrupt: payload of {payload_size} bytes overruns its container"
        )
    if flags & (FLAG_LZ4 | FLAG_ZSTD):
        if flags & FLAG_LZ4 and flags & FLAG_ZSTD:
            raise InputFileError(f"{where}: entry marked both LZ4 and zstd compressed")
        ratio = MAX_RATIO[flags & (FLAG_LZ4 | FLAG_ZSTD)]
        if (
            not 0 < compressed <= payload_size
            or not 0 < uncompressed <= MAX_UNCOMPRESSED
            or uncompressed > compressed * ratio + RATIO_SLACK
        ):
            raise InputFileError(
                f"{where}: corrupt compressed sizes ({compressed} of {payload_size} bytes, "
                f"{uncompressed} uncompressed)"
            )
    target = entry_target(sm, flags, kind, where)
    return Entry(
        kind, target, flags, payload_offset, payload_size, compressed, uncompressed, container
    )


def payload(blob: Blob, entry: Entry) -> bytes:
    """The entry's cubin or PTX, decompressed; its size is checked against the header."""
    return decompress(raw_payload(blob, entry), entry, blob.name)


def raw_payload(blob: Blob, entry: Entry) -> bytes:
    """The payload as stored (compressed or not), read from the blob."""
    compressed = entry.flags & (FLAG_ZSTD | FLAG_LZ4)
    length = entry.compressed_size if compressed else entry.payload_size
    return bytes(read_exact(blob, entry.payload_offset, length, "a payload"))


_THIS_THREADS = threading.local()


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    """One decompressor a thread (one is not thread-safe; a new one per entry costs
    its context's allocation each time, about a tenth of the zstd time)."""
    found: zstandard.ZstdDecompressor | None = getattr(_THIS_THREADS, "zstd", None)
    if found is None:
        found = _THIS_THREADS.zstd = zstandard.ZstdDecompressor()
    return found


def decompress(raw: bytes, entry: Entry, name: str) -> bytes:
    """Decompress a stored payload (thread-safe: no blob access, the GIL is released
    while zstd/LZ4 work)."""
    where = f"{name}: {entry.target.name} entry at offset {entry.payload_offset}"
    if entry.flags & FLAG_ZSTD:
        try:
            # The frame's own content size, when it has one, is what the decompressor
            # allocates (max_output_size does not bound it): it must be the header's.
            # (Found by fuzz/fuzz_fatbin.py: a frame claiming 9e18 bytes, MemoryError.)
            claimed = zstandard.get_frame_parameters(raw).content_size
            if claimed not in (zstandard.CONTENTSIZE_UNKNOWN, entry.uncompressed_size):
                raise InputFileError(
                    f"{where}: corrupt zstd payload: the frame says {claimed} bytes, "
                    f"the entry header {entry.uncompressed_size}"
                )
            data = _zstd_decompressor().decompress(raw, max_output_size=entry.uncompressed_size)
        except zstandard.ZstdError as exc:
            raise InputFileError(f"{where}: corrupt zstd payload: {exc}") from None
    elif entry.flags & FLAG_LZ4:
        try:
            data = lz4.block.decompress(raw, uncompressed_size=entry.uncompressed_size)
        except (lz4.block.LZ4BlockError, ValueError) as exc:
            raise InputFileError(f"{where}: corrupt LZ4 payload: {exc}") from None
    else:
        return raw
    if len(data) != entry.uncompressed_size:
        raise InputFileError(
            f"{where}: corrupt payload: {len(data)} bytes decompressed, header says "
            f"{entry.uncompressed_size}"
        )
    return data


def cubin_object(
    data: bytes,
    target: Target,
    where: str,
    keep: KernelFilter | None = None,
    judge: bool = True,
) -> CodeObject:
    """A cubin's kernels (size and working instructions of their ``.text``, whether
    every path of it traps) and sources; with ``keep``, only the kernels it keeps
    (the others are neither listed nor analysed); without ``judge``, the kernels'
    code is not analysed (``NOT_JUDGED``)."""
    cubin = read_cubin(data, where)
    sources = sources_in(cubin.strings)
    kernels = []
    sm = target.cc.sm

    @cache
    def guards() -> dict[int, str]:
        strings = constant_bank_strings(cubin.data, where, CONSTANT_BANK_OF_STRINGS)
        return arch_guard_messages(strings)

    for symbol in cubin.kernels:
        name = None  # (demangled when first asked: a probe table never asks)
        if keep is not None:
            name = demangle(symbol.name)
            if not keep(name, sources):
                continue
        section = symbol.section
        if not judge:
            kernels.append(Kernel(name, symbol.name, section.size, NOT_JUDGED, False))
            continue
        end = section.offset + section.size
        instructions = count_working_sass_in(cubin.data, section.offset, end, sm)
        evidence = sass_trap_evidence(cubin.data, section.offset, end, sm, guards)
        kernels.append(
            Kernel(
                name,
                symbol.name,
                section.size,
                instructions,
                is_hollow(instructions) or evidence is not None,
                str(evidence) if evidence else "",
            )
        )
    return CodeObject(target, tuple(sorted(kernels, key=kernel_order)), sources)


def ptx_object(
    text: bytes, target: Target, keep: KernelFilter | None = None, limit: int | None = None
) -> CodeObject:
    """A PTX module's entries (instruction counts from the text) and sources; with
    ``keep``, only the entries it keeps, counted up to ``limit``."""
    sources = sources_in(text)
    wanted = None if keep is None else (lambda mangled: keep(demangle(mangled), sources))
    kernels = [
        Kernel(None, e.mangled, 0, e.instructions, is_hollow(e.instructions))
        for e in ptx_entries(text, wanted, limit)
    ]
    return CodeObject(target, tuple(sorted(kernels, key=kernel_order)), sources)


def kernel_order(kernel: Kernel) -> tuple[str, int]:
    """Kernels are listed by mangled name: both engines agree on it, whatever order
    a symbol table or a dump has."""
    return (kernel.mangled, kernel.size)


def code_object(
    entry: Entry, stored: bytes, name: str, demand: Demand | None = None, library: str = ""
) -> CodeObject:
    """One entry's code object, from its payload as stored in the fatbin; with a
    demand, read as lazily as it allows (``orchestrator.read.demand``)."""
    return decoded_object(entry, decompress(stored, entry, name), name, demand, library)


def decoded_object(
    entry: Entry, data: bytes, name: str, demand: Demand | None = None, library: str = ""
) -> CodeObject:
    """``code_object`` of an entry whose payload is already decompressed."""
    keep = None
    if demand is not None:
        keep = demand.kernel_filter(library) or (lambda _name, _sources: False)
    if entry.kind == KIND_ELF:
        where = f"{name}: {entry.target.name} cubin at offset {entry.payload_offset}"
        judge = demand is None or demand.judges(entry.target)
        return cubin_object(data, entry.target, where, keep, judge)
    return ptx_object(data, entry.target, keep, demand.hollow_limit if demand else None)


def stored_length(entry: Entry) -> int:
    """Bytes of the payload as stored (its compressed size when compressed)."""
    return entry.compressed_size if entry.flags & (FLAG_ZSTD | FLAG_LZ4) else entry.payload_size
