"""Hand-made binaries for unit tests: cubins, fatbin containers and host shared
objects, byte by byte, so that parser tests need no compiler.

The layouts follow what real nvcc 13 output looks like (see orchestrator/read/fatbin.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import lz4.block
import zstandard

EM_CUDA = 190
EM_X86_64 = 62
EM_AARCH64 = 183

NOP = (0x7918, 0x000FC00000000000)
EXIT = (0x794D, 0x03800000 << 32)
BRA_SELF = (0xFFFFFFF000007947, 0x000FC0000383FFFF)
TRAP = (0x000000040000795C, 0x000FEA0000300000)
LDC_R1 = (0x00000A00FF017B82, 0x000FE20000000800)  # stack pointer set-up
FFMA = (0x3F8000000D067823, 0x001FE20000000002)  # opcode 0x823


def sass(*instructions: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<QQ", lo, hi) for lo, hi in instructions)


def working_body(n: int) -> bytes:
    """A kernel body with ``n`` working instructions, then EXIT, BRA and NOP padding."""
    return sass(*([FFMA] * n), EXIT, BRA_SELF, NOP, NOP)


def hollow_body() -> bytes:
    return sass(LDC_R1, EXIT, BRA_SELF, *([NOP] * 13))


def trap_body() -> bytes:
    return sass(LDC_R1, TRAP, BRA_SELF, *([NOP] * 13))


@dataclass
class ElfSection:
    name: str
    type: int
    data: bytes
    link: int = 0
    info: int = 0
    entsize: int = 0
    flags: int = 0
    align: int = 8


def build_elf(machine: int, sections: list[ElfSection], flags: int = 0) -> bytes:
    """An ELF64 little-endian file: header, section contents, section header table."""
    names = b"\0"
    name_offsets = []
    for section in sections:
        name_offsets.append(len(names))
        names += section.name.encode() + b"\0"
    shstrtab_name = len(names)
    names += b".shstrtab\0"
    all_sections = [*sections, ElfSection(".shstrtab", 3, names, align=1)]
    name_offsets.append(shstrtab_name)
    body = bytearray(b"\0" * 64)
    offsets = []
    for section in all_sections:
        while len(body) % max(section.align, 1):
            body.append(0)
        offsets.append(len(body))
        body += section.data
    while len(body) % 8:
        body.append(0)
    shoff = len(body)
    table = bytearray(b"\0" * 64)  # the null section
    for section, offset, name in zip(all_sections, offsets, name_offsets, strict=True):
        table += struct.pack(
            "<IIQQQQIIQQ",
            name,
            section.type,
            section.flags,
            0,
            offset,
            len(section.data),
            section.link,
            section.info,
            section.align,
            section.entsize,
        )
    ident = b"\x7fELF" + bytes([2, 1, 1, 0x41, 8]) + bytes(7)
    header = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        2,
        machine,
        1,
        0,
        0,
        shoff,
        flags,
        64,
        0,
        0,
        64,
        len(all_sections) + 1,
        len(all_sections),  # .shstrtab is the last one
    )
    body[:64] = header
    return bytes(body + table)


@dataclass
class KernelSpec:
    mangled: str
    code: bytes
    entry: bool = True


@dataclass
class CubinSpec:
    kernels: list[KernelSpec] = field(default_factory=list)
    other_symbols: list[str] = field(default_factory=list)  # OBJECT symbols
    data: bytes = b""  # contents of an initialised-data section (.nv.global.init)


def build_cubin(spec: CubinSpec, sm: int = 100) -> bytes:
    """A cubin: .strtab, .symtab, one .text.<name> per kernel (section indices from 1)."""
    strtab = b"\0"
    symbols = [bytes(24)]
    sections: list[ElfSection] = []
    # indices: 1 .strtab, 2 .symtab, 3.. text sections
    text_index = 3
    for kernel in spec.kernels:
        offset = len(strtab)
        strtab += kernel.mangled.encode() + b"\0"
        other = 0x10 if kernel.entry else 0
        symbols.append(struct.pack("<IBBHQQ", offset, 0x02, other, text_index, 0, len(kernel.code)))
        # a section symbol, as real cubins have: must be ignored
        symbols.append(struct.pack("<IBBHQQ", 0, 0x03, 0, text_index, 0, 0))
        text_index += 1
    for name in spec.other_symbols:
        offset = len(strtab)
        strtab += name.encode() + b"\0"
        symbols.append(struct.pack("<IBBHQQ", offset, 0x11, 0, 0, 0, 4))
    sections.append(ElfSection(".strtab", 3, strtab, align=1))
    sections.append(ElfSection(".symtab", 2, b"".join(symbols), link=1, entsize=24))
    for kernel in spec.kernels:
        sections.append(ElfSection(".text." + kernel.mangled, 1, kernel.code, flags=6, align=128))
    if spec.data:
        sections.append(ElfSection(".nv.global.init", 1, spec.data, flags=3))
    return build_elf(EM_CUDA, sections, flags=0x6000002 | (sm << 8))


KIND_PTX = 1
KIND_ELF = 2


@dataclass
class EntrySpec:
    kind: int
    sm: int
    payload: bytes
    variant: str = ""  # "", "a", "f"
    compression: str = "none"  # none, zstd, lz4
    header_size: int = 64
    version: int = 0x0101


def build_entry(spec: EntrySpec) -> bytes:
    flags = 0x11
    if spec.variant == "a":
        flags |= 0x100000
    elif spec.variant == "f":
        flags |= 0x200000
    if spec.sm >= 100:
        flags |= 0x1000000
    data = spec.payload
    compressed = uncompressed = 0
    if spec.compression == "zstd":
        flags |= 0x8000
        data = zstandard.ZstdCompressor().compress(spec.payload)
        compressed, uncompressed = len(data), len(spec.payload)
    elif spec.compression == "lz4":
        flags |= 0x2000
        data = lz4.block.compress(spec.payload, store_size=False)
        compressed, uncompressed = len(data), len(spec.payload)
    padded = data + bytes(-len(data) % 8)
    major, minor = (9, 0) if spec.kind == KIND_PTX else (1, 8)
    header = struct.pack(
        "<HHIQIIHHIIIQQQ",
        spec.kind,
        spec.version,
        spec.header_size,
        len(padded),
        compressed,
        64 if spec.header_size > 64 else 0,
        minor,
        major,
        spec.sm,
        0,
        0,
        flags,
        0,
        uncompressed,
    )
    return header + bytes(spec.header_size - 64) + padded


def build_container(entries: list[EntrySpec], version: int = 1) -> bytes:
    body = b"".join(build_entry(e) for e in entries)
    return struct.pack("<IHHQ", 0xBA55ED50, version, 16, len(body)) + body


def padded(containers: list[bytes], unit: int) -> bytes:
    """Containers as an aarch64 linker lays them out: each starting on a boundary of
    ``unit`` bytes, zeros between them, none after the last."""
    out = bytearray()
    for container in containers:
        out += bytes(-len(out) % unit) + container
    return bytes(out)


def build_shared_object(
    containers: list[bytes], with_fatbin: bool = True, align: int = 8, machine: int = EM_X86_64
) -> bytes:
    """A host ELF with ``.nv_fatbin`` holding the containers: back to back (x86-64's
    layout), or padded to ``align`` (aarch64's: ``align=256, machine=EM_AARCH64``)."""
    sections = [ElfSection(".text", 1, b"\xc3" * 16, flags=6)]
    if with_fatbin:
        data = padded(containers, align) if align > 8 else b"".join(containers)
        sections.append(ElfSection(".nv_fatbin", 1, data, flags=2, align=align))
    return build_elf(machine, sections)


def ptx_module(target: str, entries: dict[str, str]) -> bytes:
    """A PTX module with the given ``.entry`` bodies (one statement per line)."""
    text = f"\n.version 9.0\n.target {target}\n.address_size 64\n\n"
    for name, body in entries.items():
        text += f".visible .entry {name}(\n.param .u64 {name}_param_0\n)\n{{\n{body}\n}}\n\n"
    return text.encode()


MANGLED_WORK = "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"
MANGLED_HOLLOW = "_ZN55_GLOBAL__N__1234abcd_22_fp8_guarded_kernels_cu_0badf00d6hollowEPf"


def two_kernel_cubin(sm: int) -> bytes:
    """A cubin with one working kernel (MANGLED_WORK) and one hollow (MANGLED_HOLLOW)."""
    return build_cubin(
        CubinSpec(
            [KernelSpec(MANGLED_WORK, working_body(40)), KernelSpec(MANGLED_HOLLOW, hollow_body())]
        ),
        sm,
    )
