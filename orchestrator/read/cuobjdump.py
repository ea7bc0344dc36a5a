"""The cuobjdump engine: the inventory from the real ``cuobjdump``'s output.

Two runs per library, both streamed line by line (a large library dumps gigabytes):

* ``cuobjdump -elf``: one block per fatbin entry, in fatbin order, headed by
  ``Fatbin elf code:`` / ``Fatbin ptx code:`` and ``arch = sm_100f`` (the a/f
  suffix is printed only here: the ELF line below it says ``sm=100``); for a cubin
  then its section table (sizes), its symbol table (``ENTRY`` marks kernels) and a
  hex dump of every section, ``.text.<kernel>`` included (four 32-bit words per
  128-bit instruction);
* ``cuobjdump -ptx``: the text of every PTX entry, in the same order;
* ``cuobjdump -sass -fun K1,K2...``, only when some kernel's code holds a trap: the
  disassembly of those kernels, from which their control flow is read (branch
  targets, guards, exits, traps, calls) by mnemonic, independently of the native
  engine's bit fields (``sass.sass_control_ops``); the walk over it is shared.

Working-instruction counts and source files come from :mod:`orchestrator.read.sass`,
:mod:`~orchestrator.read.ptx` and :mod:`~orchestrator.read.kernelcode`, as in the native engine; what differs is everything before: decompression, fatbin and
ELF parsing are cuobjdump's. ``tests/integration`` checks that both engines give
equal inventories on real libraries.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import IO, NamedTuple, TypeVar

from orchestrator.archs import Target
from orchestrator.common.errors import ArchSpecError, InputFileError, ToolError
from orchestrator.read.elf import BytesBlob, read_header
from orchestrator.read.fatbin import kernel_order
from orchestrator.read.inventory import CodeObject, Kernel, Library
from orchestrator.read.kernelcode import (
    arch_guard_messages,
    is_hollow,
    kernel_trap_evidence,
    sources_in,
)
from orchestrator.read.library import library_bytes
from orchestrator.read.sass import (
    CONSTANT_BANK_OF_STRINGS,
    CONSTANT_OPERAND,
    SASS_INSTRUCTION_BYTES,
    TENSOR_CORE_MNEMONIC,
    ControlOp,
    count_working_sass,
    has_trap,
)
from orchestrator.symbols import demangle
from orchestrator.toolchains.cuda import cuobjdump as find_cuobjdump
from orchestrator.toolchains.cuda import nvdisasm as find_nvdisasm

TIMEOUT_S = 3600
GLOBAL_INIT = ".nv.global.init"
POINTER_RELOCATIONS = (
    f".section .rela.nv.constant{CONSTANT_BANK_OF_STRINGS}\t",
    f".section .rel.nv.constant{CONSTANT_BANK_OF_STRINGS}\t",
)
NO_DEVICE_CODE = "does not contain device code"


def probe_file(path: Path, label: str, cuobjdump: Path | None = None) -> Library:
    """The inventory of one shared object on disk, read by cuobjdump."""
    blob = _check_elf(path)
    # cuobjdump prints no size: the entries' bytes come from the fatbin headers.
    sizes = None
    with contextlib.suppress(InputFileError):
        sizes = library_bytes(blob)
    del blob
    tool = find_cuobjdump(cuobjdump)
    objects = list(_run(tool, ["-elf"], path, _parse_elf_dump))
    _read_control_flow(tool, path, objects)
    ptx_texts = (
        iter(_run(tool, ["-ptx"], path, _parse_ptx_dump))
        if any(o.ptx for o in objects)
        else iter(())
    )
    cubins: list[CodeObject] = []
    ptx: list[CodeObject] = []
    for item in objects:
        if item.ptx:
            text = next(ptx_texts, None)
            if text is None:
                raise ToolError(f"{label}: cuobjdump -ptx printed fewer PTX entries than -elf")
            target, body = text
            if target != item.target:
                raise ToolError(
                    f"{label}: cuobjdump -ptx and -elf disagree ({target} vs {item.target})"
                )
            ptx.append(_ptx_object(body, target))
        else:
            cubins.append(item.code_object(label))
    return Library(label, tuple(cubins), tuple(ptx), sizes=sizes)


def _read_control_flow(tool: Path, path: Path, objects: list[_Object]) -> None:
    """Disassemble the kernels whose code holds a trap (one ``cuobjdump -sass -fun``
    run for all of them) and give each cubin their control flow."""
    cubins = [o for o in objects if not o.ptx]
    names = sorted({m for o in cubins for m, s in o.kernels if o.names.get(s) in o.trapping})
    if not names:
        return
    with tempfile.TemporaryDirectory(prefix="kernel-matrix-") as tmp:
        # Mangled CUTLASS names run to kilobytes: an options file, not argv.
        options = Path(tmp) / "functions.optf"
        options.write_text("-fun " + ",".join(names) + "\n")
        env = {"NVDISASM_PATH": str(find_nvdisasm().parent)}
        dumps = list(_run(tool, ["-sass", "-optf", str(options)], path, _sass_blocks, env))
    if len(dumps) != len(cubins):
        raise ToolError(
            f"{path}: cuobjdump -sass printed {len(dumps)} cubins, cuobjdump -elf {len(cubins)}"
        )
    for item, functions in zip(cubins, dumps, strict=True):
        item.flow = functions


def _sass_blocks(stream: IO[bytes], where: str) -> Iterator[dict[str, SassFunction]]:
    return parse_sass_dump(stream)


def probe_stream(stream: IO[bytes], label: str, cuobjdump: Path | None = None) -> Library:
    """A wheel member: cuobjdump needs a file, so it is copied to a private temp dir."""
    with tempfile.TemporaryDirectory(prefix="kernel-matrix-") as tmp:
        path = Path(tmp) / "member.so"
        with path.open("wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        return probe_file(path, label, cuobjdump)


def _check_elf(path: Path) -> BytesBlob:
    """Refuse a non-ELF or truncated file ourselves, with exit code 2, rather than
    let cuobjdump fail in a way that reads like a tool crash."""
    try:
        with path.open("rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from None
    blob = BytesBlob(str(path), data)
    read_header(blob)
    return blob


T = TypeVar("T")


def _run(
    tool: Path,
    options: list[str],
    path: Path,
    parse: Callable[[IO[bytes], str], Iterator[T]],
    extra_env: dict[str, str] | None = None,
) -> Iterator[T]:
    """Run cuobjdump and parse its stdout as it comes; a crash is a ToolError (exit 3),
    "does not contain device code" an empty result."""
    command = [str(tool), *options, str(path)]
    env = dict(os.environ)
    env.update(extra_env or {})
    env.setdefault("LC_ALL", "C")
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
        except OSError as exc:
            raise ToolError(f"cannot run {tool}: {exc.strerror or exc}") from None
        assert process.stdout is not None
        try:
            yield from parse(process.stdout, str(path))
            process.stdout.close()
            returncode = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ToolError(f"{' '.join(command)}: timed out after {TIMEOUT_S} s") from None
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip()
    if returncode == 0 or (returncode == 255 and NO_DEVICE_CODE in message):
        return
    last = message.splitlines()[-1] if message else "(no message)"
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    raise ToolError(f"{' '.join(command)} failed ({how}): {last}")


# --- parsing ------------------------------------------------------------------------


@dataclass
class _Object:
    """One fatbin entry as ``cuobjdump -elf`` prints it."""

    target: Target
    ptx: bool
    sizes: dict[int, int] = field(default_factory=dict)  # section index -> size
    names: dict[int, str] = field(default_factory=dict)  # section index -> name
    kernels: list[tuple[str, int]] = field(default_factory=list)  # (mangled, section)
    symbols: list[str] = field(default_factory=list)
    code: dict[str, int] = field(default_factory=dict)  # .text.<name> -> working instr.
    trapping: set[str] = field(default_factory=set)  # .text.<name> holding a trap
    flow: dict[str, SassFunction] = field(default_factory=dict)
    global_init: bytes = b""  # .nv.global.init: printf's strings
    # symbol -> (value, section index); pointer offset in constant bank 4 -> symbol
    # and addend (``.rel(a).nv.constant4``)
    values: dict[str, tuple[int, int]] = field(default_factory=dict)
    pointers: dict[int, tuple[str, int]] = field(default_factory=dict)
    sm: int = 0

    def guards(self) -> dict[int, str]:
        """The arch-guard messages whose pointers constant bank 4 holds, by offset."""
        strings_at = next((i for i, n in self.names.items() if n == GLOBAL_INIT), -1)
        strings = {}
        for offset, (symbol, addend) in self.pointers.items():
            value, section = self.values.get(symbol, (0, -1))
            start = value + addend
            if section == strings_at and 0 <= start < len(self.global_init):
                end = self.global_init.find(b"\0", start)
                strings[offset] = self.global_init[start : end if end >= 0 else None]
        return arch_guard_messages(strings)

    def code_object(self, label: str) -> CodeObject:
        kernels = []
        guards = cache(self.guards)  # read once per cubin, when a kernel needs them
        for mangled, section in self.kernels:
            name = self.names.get(section, "")
            if name not in self.code:
                raise ToolError(f"{label}: cuobjdump -elf printed no code for kernel {mangled}")
            instructions = self.code[name]
            evidence = None
            if name in self.trapping:
                if mangled not in self.flow:
                    raise ToolError(f"{label}: cuobjdump -sass printed no code for {mangled}")
                flow = self.flow[mangled]
                evidence = kernel_trap_evidence(
                    flow.ops,
                    flow.instructions,
                    flow.tensor_core,
                    partial(getattr, flow, "constant_loads"),
                    guards,
                )
            kernels.append(
                Kernel(
                    demangle(mangled),
                    mangled,
                    self.sizes.get(section, 0),
                    instructions,
                    is_hollow(instructions) or evidence is not None,
                    str(evidence) if evidence else "",
                )
            )
        sources = sources_in("\0".join(self.symbols).encode("utf-8", "replace"))
        return CodeObject(self.target, tuple(sorted(kernels, key=kernel_order)), sources)


def _target(arch: str, ptx: bool, where: str) -> Target:
    name = arch.replace("sm_", "compute_", 1) if ptx else arch
    try:
        return Target.parse(name)
    except ArchSpecError:
        raise ToolError(f"{where}: cuobjdump printed an unknown architecture '{arch}'") from None


def _parse_elf_dump(stream: IO[bytes], where: str) -> Iterator[_Object]:
    """``cuobjdump -elf`` output -> one _Object per fatbin entry, in order."""
    current: _Object | None = None
    header: str | None = None  # "elf" or "ptx" after a "Fatbin ... code:" line
    mode = ""  # "sections", "symbols", "text" or ""
    text_name = ""
    dumped = bytearray()  # the section's bytes, as dumped

    def finish_text() -> None:
        if current is not None and text_name == GLOBAL_INIT:
            current.global_init = bytes(dumped)
        elif current is not None and text_name:
            data = bytes(dumped)
            current.code[text_name] = count_working_sass(data, current.sm)
            if has_trap(data, 0, len(data), current.sm):
                current.trapping.add(text_name)

    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("Fatbin elf code:") or line.startswith("Fatbin ptx code:"):
            if mode == "text":
                finish_text()
            if current is not None:
                yield current
            current, mode, text_name, dumped = None, "", "", bytearray()
            header = "ptx" if "ptx" in line else "elf"
            continue
        if header and line.startswith("arch = "):
            current = _Object(_target(line[7:].strip(), header == "ptx", where), header == "ptx")
            current.sm = current.target.cc.sm
            header = None
            continue
        if current is None or current.ptx:
            continue
        if mode == "text":
            if line.startswith("0x"):
                dumped += dumped_bytes(line)
                continue
            # the header before the dumped: "lmem=0 smem=0" (CUDA 13 binaries) or
            # "bar = 0 reg = 0 lmem=0 smem=0" (CUDA 12.x binaries)
            if "lmem=" in line or (not line.strip() and not dumped):
                continue
            finish_text()
            mode, text_name, dumped = "", "", bytearray()
        stripped = line.strip()
        if line.startswith("Sections:"):
            mode = "sections"
            continue
        if line.startswith(".section .symtab"):
            mode = "symbols"
            continue
        if line.startswith(POINTER_RELOCATIONS):
            mode = "pointers"
            continue
        if mode == "pointers":
            fields = stripped.split()
            if len(fields) >= 3 and fields[0].startswith("0x"):
                addend = int(fields[3], 16) if len(fields) >= 4 else 0
                current.pointers[int(fields[0], 16)] = (fields[1], addend)
                continue
            mode = ""
        if mode == "sections":
            fields = stripped.split()
            if fields and fields[0] == "Index":
                continue
            if len(fields) >= 10:
                index = int(fields[0], 16)
                current.sizes[index] = int(fields[2], 16)
                current.names[index] = fields[-1]
                continue
            mode = ""
        if mode == "symbols":
            fields = stripped.split()
            if fields and fields[0] in ("Num", "index"):
                continue
            numeric = _numeric_symbol(fields)
            if numeric is not None:
                kind, entry, name = numeric
                if kind != "SECTION" and name != "(null)":
                    current.symbols.append(name)
                    current.values[name] = (int(fields[1], 16), int(fields[-2], 16))
                    if kind == "FUNC" and entry:
                        current.kernels.append((name, int(fields[-2], 16)))
                continue
            if len(fields) >= 9:
                kind, name = fields[3], fields[-1]
                if kind != "SECTION" and name != "(null)":
                    current.symbols.append(name)
                    current.values[name] = (int(fields[1], 16), int(fields[-2], 16))
                    if kind == "FUNC" and "ENTRY" in fields[6:-2]:
                        current.kernels.append((name, int(fields[-2], 16)))
                continue
            mode = ""
        if (
            stripped.startswith(".text.")
            and " " not in stripped
            and stripped in current.names.values()
        ) or stripped == GLOBAL_INIT:
            mode, text_name, dumped = "text", stripped, bytearray()
    if mode == "text":
        finish_text()
    if current is not None:
        yield current


# ELF symbol types (the low 4 bits of st_info) and CUDA's st_other flag of a kernel.
_SYMBOL_TYPES = {2: "FUNC", 3: "SECTION"}
_STO_CUDA_ENTRY = 0x10


def dumped_bytes(line: str) -> bytes:
    """The bytes of one line of cuobjdump's section dump: 32-bit little-endian words
    (``0x4c42414e``, eight digits), then, at the end of a section whose size is not a
    multiple of 4, its last bytes one by one (``0x45 0x44 0x00``).

    >>> dumped_bytes("0x4c42414e 0x45 0x44 0x00")
    b'NABLED\\x00'
    """
    out = bytearray()
    for token in line.split():
        value = int(token, 16)
        out += value.to_bytes(4 if len(token) > 4 else 1, "little")
    return bytes(out)


def _numeric_symbol(fields: list[str]) -> tuple[str, bool, str] | None:
    """(type, is a kernel entry, name) of a symbol row as some cuobjdump versions
    print it (13.2: ``index value size info other shndx name``, numbers in hex), or
    None for any other row. 13.5 prints names instead (``FUNC GLOBAL DEFAULT ENTRY``).

    >>> _numeric_symbol("0x25 0 0x1680 0x12 0x10 0x1b _Z6kernelv".split())
    ('FUNC', True, '_Z6kernelv')
    >>> _numeric_symbol("0x26 0 0 0x12 0 0 vprintf".split())
    ('FUNC', False, 'vprintf')
    """
    if len(fields) != 7:
        return None
    try:
        info, other = int(fields[3], 16), int(fields[4], 16)
        int(fields[1], 16), int(fields[2], 16), int(fields[5], 16)
    except ValueError:
        return None
    return _SYMBOL_TYPES.get(info & 0xF, "OTHER"), bool(other & _STO_CUDA_ENTRY), fields[6]


def _parse_ptx_dump(stream: IO[bytes], where: str) -> Iterator[tuple[Target, bytes]]:
    """``cuobjdump -ptx`` output -> (target, PTX text) per PTX entry, in order."""
    target: Target | None = None
    in_header = False
    kind = ""
    chunks: list[bytes] = []
    for raw in stream:
        if raw.startswith(b"Fatbin elf code:") or raw.startswith(b"Fatbin ptx code:"):
            if target is not None:
                yield target, b"".join(chunks)
            target, chunks = None, []
            kind = "ptx" if raw.startswith(b"Fatbin ptx") else "elf"
            in_header = True
            continue
        if in_header:
            if raw.startswith(b"arch = ") and kind == "ptx":
                target = _target(raw[7:].decode().strip(), True, where)
            elif not raw.strip() and (target is not None or kind == "elf"):
                in_header = False  # the header ends at its first blank line
            continue
        if target is not None:
            chunks.append(raw)
    if target is not None:
        yield target, b"".join(chunks)


def _ptx_object(text: bytes, target: Target) -> CodeObject:
    from orchestrator.read.fatbin import ptx_object

    return ptx_object(text, target)


# --- control flow from the disassembly ----------------------------------------------

_SASS_FUNCTION = re.compile(r"^\s*Function : (\S+)")
_SASS_LINE = re.compile(
    r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P(?:T|\d))?\s*([A-Z][A-Z0-9_.]*)\s*([^;]*);"
)
_HEX = re.compile(r"-?0x[0-9a-f]+")


def control_op_of(guard: str, mnemonic: str, operands: str) -> ControlOp | None:
    """The control meaning of one disassembled instruction (``@P0``, ``BRA``,
    ``0x1d0``), by mnemonic; None for one that does not steer control.

    >>> control_op_of("", "BRA", "0x1d0")
    ControlOp(kind='goto', target=29)
    >>> control_op_of("", "BRA.DIV", "~URZ, 0x60")
    ControlOp(kind='branch', target=6)
    >>> control_op_of("@P0", "BPT.TRAP", "0x1")
    ControlOp(kind='trap_if', target=-1)
    """
    if guard == "@!PT":
        return None
    always = guard in ("", "@PT")
    base = mnemonic.split(".", 1)[0]
    if base == "BRA":
        targets = _HEX.findall(operands)
        if not targets:
            return ControlOp("unknown")
        target = int(targets[-1], 16) // SASS_INSTRUCTION_BYTES
        plain = mnemonic == "BRA" and operands.strip() == targets[-1]
        return ControlOp("goto" if plain and always else "branch", target)
    if base == "EXIT":
        return ControlOp("exit")
    if base == "BPT":
        return ControlOp("trap" if always else "trap_if")
    if base == "CALL":
        return ControlOp("call_out" if mnemonic.startswith("CALL.ABS") else "call")
    if base in ("RET", "BRX", "BRXU", "JMP", "JMX", "JMXU", "KILL"):
        return ControlOp("unknown")
    return None


class SassFunction(NamedTuple):
    """A function as ``cuobjdump -sass`` prints it."""

    ops: dict[int, ControlOp]  # its control instructions, by instruction index
    instructions: int  # how many it has
    tensor_core: int  # its tensor-core instructions (*MMA*)
    constant_loads: frozenset[int]  # fixed offsets of constant bank 4 it reads


def parse_sass_dump(stream: IO[bytes]) -> Iterator[dict[str, SassFunction]]:
    """``cuobjdump -sass`` output -> per ELF entry (in fatbin order), each function's
    control instructions, instruction count and tensor-core instruction count."""
    functions: dict[str, SassFunction] | None = None
    ops: dict[int, ControlOp] = {}
    name = ""
    last = -1
    tensor_core = 0
    loads: set[int] = set()

    def finish() -> None:
        if functions is not None and name:
            functions[name] = SassFunction(ops, last + 1, tensor_core, frozenset(loads))

    for raw in stream:
        line = raw.decode("utf-8", "replace")
        if line.startswith("Fatbin elf code:") or line.startswith("Fatbin ptx code:"):
            finish()
            if functions is not None:
                yield functions
            functions, name, ops, last = ({} if "elf" in line else None), "", {}, -1
            tensor_core, loads = 0, set()
            continue
        match = _SASS_FUNCTION.match(line)
        if match:
            finish()
            name, ops, last, tensor_core, loads = match.group(1), {}, -1, 0, set()
            continue
        match = _SASS_LINE.match(line)
        if match and name:
            index = int(match.group(1), 16) // SASS_INSTRUCTION_BYTES
            last = max(last, index)
            tensor_core += bool(TENSOR_CORE_MNEMONIC.match(match.group(3)))
            for bank, offset in CONSTANT_OPERAND.findall(match.group(4)):
                if int(bank, 16) == CONSTANT_BANK_OF_STRINGS:
                    loads.add(int(offset, 16))
            op = control_op_of(match.group(2) or "", match.group(3), match.group(4))
            if op is not None:
                ops[index] = op
    finish()
    if functions is not None:
        yield functions
