"""A small, strict ELF64 reader: host shared objects (to find ``.nv_fatbin``) and
cubins (symbols and ``.text`` sections).

Every offset and count read from a file is checked against the file's size before
it is used, so a truncated or hostile file ends in one :class:`InputFileError`
naming the file -- never an IndexError, a huge allocation or a long loop.

Host objects are read through a :class:`Blob` (an mmap of a file, or a member of
a wheel streamed by ``zipfile``), so a 300 MB library is never loaded whole.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Protocol

from orchestrator.common.errors import InputFileError

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_CUDA = 190
SHT_NOBITS = 8
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_REL = 9
STT_FUNC = 2
STO_CUDA_ENTRY = 0x10  # st_other bit of a kernel (cuobjdump prints "ENTRY")

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")  # r_offset, r_info (symbol << 32 | type)
_RELA = struct.Struct("<QQq")  # ... and r_addend
MAX_SECTIONS = 1 << 20  # far above any real object; bounds the header loop


class Blob(Protocol):
    """Random access to the bytes of one object, whatever holds them."""

    name: str
    size: int

    def read(self, offset: int, length: int) -> bytes | memoryview: ...


class BytesBlob:
    """A blob held in memory or mapped from a file (``mmap`` slices are copies, so
    no view outlives the mapping)."""

    def __init__(self, name: str, data: bytes | mmap.mmap) -> None:
        self.name = name
        self.data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes | memoryview:
        return self.data[offset : offset + length]


class FileBlob:
    """A blob read from an open file with ``pread``: nothing is mapped, so this
    process's memory holds only what is being read (a mapping's pages would count
    in its resident size as they are touched). Worker processes read by ``path``."""

    def __init__(self, name: str, fd: int, size: int, path: str) -> None:
        self.name = name
        self.fd = fd
        self.size = size
        self.path = path

    def read(self, offset: int, length: int) -> bytes | memoryview:
        return self.pread(self.fd, offset, length)

    @staticmethod
    def pread(fd: int, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        data = os.pread(fd, length, offset)
        if len(data) == length or not data:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            more = os.pread(fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)


def read_exact(blob: Blob, offset: int, length: int, what: str) -> bytes | memoryview:
    """``length`` bytes at ``offset``, or an InputFileError saying what is cut off."""
    if offset < 0 or length < 0 or offset + length > blob.size:
        raise InputFileError(
            f"{blob.name}: truncated or corrupt: {what} at offset {offset} "
            f"(+{length} bytes) lies outside the file ({blob.size} bytes)"
        )
    data = blob.read(offset, length)
    if len(data) != length:
        raise InputFileError(f"{blob.name}: truncated: could not read {what} at offset {offset}")
    return data


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    align: int = 0  # sh_addralign: 0 or 1 mean none


@dataclass(frozen=True)
class ElfHeader:
    machine: int
    flags: int
    sections: tuple[Section, ...]

    def named(self, name: str) -> list[Section]:
        return [s for s in self.sections if s.name == name]


def is_elf(head: bytes | memoryview) -> bool:
    return bytes(head[:4]) == ELF_MAGIC


def sections_named(blob: Blob, name: str) -> list[Section]:
    """The sections of ``blob`` called ``name``, as ``read_header(blob).named(name)``
    gives them (the same checks of the file), without decoding every section's name:
    a library without one is answered from its section name table at once (a wheel
    may hold 100 000 host-only shared objects)."""
    _, _, raw, table = _section_table(blob, names=True)
    wanted = name.encode() + b"\0"
    found = []
    for index, row in enumerate(raw):
        if row[0] >= len(table) and row[0]:
            raise InputFileError(
                f"{blob.name}: corrupt ELF: name offset {row[0]} outside its table"
            )
        if table.startswith(wanted, row[0]):
            found.append(_section(index, row, name))
    return found


def read_header(blob: Blob, *, names: bool = True) -> ElfHeader:
    """The ELF header and section table of ``blob`` (ELF64 little-endian only);
    ``names=False`` skips decoding section names (a cubin needs none)."""
    machine, flags, raw, table_names = _section_table(blob, names=names)
    sections = [
        _section(index, row, _cstr(table_names, row[0], blob.name) if names else "")
        for index, row in enumerate(raw)
    ]
    return ElfHeader(machine, flags, tuple(sections))


_RawSection = tuple[int, int, int, int, int, int, int, int, int, int]


def _section_table(blob: Blob, *, names: bool) -> tuple[int, int, list[_RawSection], bytes]:
    """(machine, e_flags, raw section headers, section name table) of ``blob``, every
    section checked to lie inside the file."""
    if bytes(blob.read(0, min(4, blob.size))) != ELF_MAGIC:
        raise InputFileError(f"{blob.name}: not an ELF file (no ELF magic)")
    ident = read_exact(blob, 0, _EHDR.size, "the ELF header")
    if ident[4] != ELFCLASS64 or ident[5] != ELFDATA2LSB:
        raise InputFileError(
            f"{blob.name}: unsupported ELF class/encoding ({ident[4]}/{ident[5]}); "
            "only 64-bit little-endian objects carry CUDA device code"
        )
    (_, _, machine, _, _, _, shoff, flags, _, _, _, shentsize, shnum, shstrndx) = _EHDR.unpack(
        bytes(ident)
    )
    if shnum == 0 and shoff:
        # More than 0xff00 sections: the real count is in section 0's sh_size.
        first = _SHDR.unpack(bytes(read_exact(blob, shoff, _SHDR.size, "section header 0")))
        shnum = first[5]
        if shstrndx == 0xFFFF:
            shstrndx = first[6]
    if shnum == 0:
        return machine, flags, [], b""
    if shentsize != _SHDR.size:
        raise InputFileError(f"{blob.name}: corrupt ELF: section header size {shentsize}")
    if shnum > MAX_SECTIONS or shnum * shentsize > blob.size:
        raise InputFileError(f"{blob.name}: corrupt ELF: {shnum} section headers")
    table = bytes(read_exact(blob, shoff, shnum * shentsize, "the section header table"))
    raw: list[_RawSection] = list(_SHDR.iter_unpack(table))
    if shstrndx >= shnum:
        raise InputFileError(f"{blob.name}: corrupt ELF: section name table index {shstrndx}")
    names_hdr = raw[shstrndx]
    table_names = (
        bytes(read_exact(blob, names_hdr[4], names_hdr[5], "the section name table"))
        if names
        else b""
    )
    size = blob.size
    for index, (_, typ, _, _, offset, length, _, _, _, _) in enumerate(raw):
        if offset + length > size and typ != SHT_NOBITS and index:
            raise InputFileError(
                f"{blob.name}: truncated or corrupt: section {index} ends at {offset + length}, "
                f"after the end of the file ({blob.size} bytes)"
            )
    return machine, flags, raw, table_names


def _cstr(table: bytes, offset: int, where: str) -> str:
    if offset >= len(table) and offset:
        raise InputFileError(f"{where}: corrupt ELF: name offset {offset} outside its table")
    end = table.find(b"\0", offset)
    if end < 0:
        end = len(table)
    return table[offset:end].decode("utf-8", "replace")


@dataclass(frozen=True)
class Kernel:
    """A kernel symbol of a cubin and its code section."""

    name: str
    section: Section


@dataclass(frozen=True)
class Cubin:
    """The parts of a cubin that the probe needs."""

    kernels: tuple[Kernel, ...]
    strings: bytes  # the symbol string table(s): every symbol's name is in them
    data: bytes

    def code(self, kernel: Kernel) -> bytes:
        return self.data[kernel.section.offset : kernel.section.offset + kernel.section.size]


def read_cubin(data: bytes, name: str) -> Cubin:
    """Parse a (decompressed) cubin held in memory: its kernels (``STT_FUNC`` symbols
    with the CUDA entry bit in ``st_other``) and its symbol names. Only the sections
    that hold kernels become :class:`Section` records (a cubin has several sections
    per kernel)."""
    machine, _, raw, _ = _section_table(BytesBlob(name, data), names=False)
    if machine != EM_CUDA:
        raise InputFileError(f"{name}: not a CUDA cubin (ELF machine {machine})")
    kernels: list[Kernel] = []
    strings: list[bytes] = []
    count = len(raw)
    sections: dict[int, Section] = {}
    for index, (_, typ, _, _, offset, size, link, _, _, entsize) in enumerate(raw):
        if typ != SHT_SYMTAB:
            continue
        if entsize != _SYM.size or not 0 < link < count:
            raise InputFileError(f"{name}: corrupt cubin: bad symbol table {index}")
        strtab = raw[link]
        names = data[strtab[4] : strtab[4] + strtab[5]]
        strings.append(names)
        table = data[offset : offset + size - size % _SYM.size]
        for name_off, info, other, shndx, _, _ in _SYM.iter_unpack(table):
            if info & 0xF != STT_FUNC or not other & STO_CUDA_ENTRY:
                continue
            if not 0 < shndx < count:
                raise InputFileError(f"{name}: corrupt cubin: kernel in section {shndx}")
            section = sections.get(shndx)
            if section is None:
                section = sections[shndx] = _section(shndx, raw[shndx])
            kernels.append(Kernel(_cstr(names, name_off, name), section))
    return Cubin(tuple(kernels), b"\0".join(strings), data)


def constant_bank_strings(data: bytes, name: str, bank: int) -> dict[int, bytes]:
    """The strings the pointers in a cubin's constant bank ``bank`` point at: offset of
    the pointer in ``.nv.constant<bank>`` -> the NUL-terminated string in
    ``.nv.global.init`` (printf's format strings), read through the relocations
    ``.rel(a).nv.constant<bank>`` (a ``.rel`` one's addend, kept in the bank, is taken
    as 0: each string has a symbol of its own)."""
    _, _, raw, names = _section_table(BytesBlob(name, data), names=True)

    def named(section: bytes) -> int:
        for index, header in enumerate(raw):
            if header[1] != SHT_NOBITS and names.startswith(section + b"\0", header[0]):
                return index
        return -1

    strings_at = named(b".nv.global.init")
    relocations = [named(b".rela.nv.constant%d" % bank), named(b".rel.nv.constant%d" % bank)]
    if strings_at < 0 or max(relocations) < 0:
        return {}
    strings = data[raw[strings_at][4] : raw[strings_at][4] + raw[strings_at][5]]
    found: dict[int, bytes] = {}
    for index, layout in zip(relocations, (_RELA, _REL), strict=True):
        if index < 0:
            continue
        _, typ, _, _, offset, size, link, _, _, _ = raw[index]
        if typ not in (SHT_RELA, SHT_REL) or not 0 < link < len(raw):
            continue
        symtab = raw[link]
        table = data[symtab[4] : symtab[4] + symtab[5] - symtab[5] % _SYM.size]
        for entry in layout.iter_unpack(data[offset : offset + size - size % layout.size]):
            symbol = entry[1] >> 32
            if (symbol + 1) * _SYM.size > len(table):
                continue
            _, _, _, shndx, value, _ = _SYM.unpack_from(table, symbol * _SYM.size)
            if shndx != strings_at:
                continue
            start = value + (entry[2] if layout is _RELA else 0)
            if 0 <= start < len(strings):
                end = strings.find(b"\0", start)
                found[entry[0]] = strings[start : end if end >= 0 else len(strings)]
    return found


def _section(index: int, raw: _RawSection, name: str = "") -> Section:
    _, typ, flags, _, offset, size, link, info, align, entsize = raw
    return Section(index, name, typ, flags, offset, size, link, info, entsize, align)
