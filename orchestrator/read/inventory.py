"""What a built library really contains: the records both probe engines produce.

An :class:`Inventory` lists, per shared object, every cubin (with its exact
architecture, ``a``/``f`` suffix included), every PTX entry, every kernel with its
code size and whether it is hollow, and the source files each cubin came from.
Two engines (native fatbin reader, real cuobjdump) must produce equal inventories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from orchestrator.archs import Target

INVENTORY_SCHEMA_VERSION = 1

# Instruction counts that are no count: a kernel the configure tier predicts from the
# sources (nothing compiled yet), and one a lazy read (check) listed without analysing
# its code because no requested device loads the code object that holds it.
PREDICTED = -1
NOT_JUDGED = -2


def _demangle(mangled: str) -> str:
    """``symbols.demangle``, imported on the first name asked for (it brings the YAML
    reader: a repeated check imports neither), then called directly (an import
    statement per name cost a fifth of demangling 300 000 names)."""
    global _demangle
    from orchestrator.symbols import demangle

    _demangle = demangle
    return demangle(mangled)


class Kernel:
    """One entry function (``__global__``) in a cubin or PTX module.

    Compared, ordered and hashed like a frozen dataclass of its fields, and never
    changed once made, but a plain class with slots: a PTX module may hold 300 000
    kernels, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per
    field) costs twice as much. ``name`` given as None is demangled from
    ``mangled`` when first asked (a probe table never asks)."""

    __slots__ = ("_name", "hollow", "instructions", "mangled", "size", "traps")

    mangled: str
    size: int  # bytes of its .text section (cubin); 0 for PTX
    instructions: int  # instructions that do work (not NOP/EXIT/BRA/trap...), or < 0
    hollow: bool  # body compiled out, or every path traps
    # Why it is hollow although it has working instructions: "every path traps: 61
    # traps, 58 printf/external calls, 4096 instructions" (a CUTLASS arch-guard stub).
    traps: str

    def __init__(
        self,
        name: str | None,
        mangled: str,
        size: int,
        instructions: int,
        hollow: bool,
        traps: str = "",
    ) -> None:
        self._name = name
        self.mangled = mangled
        self.size = size
        self.instructions = instructions
        self.hollow = hollow
        self.traps = traps

    @property
    def name(self) -> str:
        """The demangled name."""
        name: str | None = self._name
        if name is None:
            name = self._name = _demangle(self.mangled)
        return name

    def _fields(self) -> tuple[str, str, int, int, bool, str]:
        return (self.name, self.mangled, self.size, self.instructions, self.hollow, self.traps)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Kernel:
            return NotImplemented
        assert isinstance(other, Kernel)
        return self._fields() == other._fields()

    def __lt__(self, other: Kernel) -> bool:
        return self._fields() < other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Kernel(name={self.name!r}, mangled={self.mangled!r}, size={self.size!r}, "
            f"instructions={self.instructions!r}, hollow={self.hollow!r}, traps={self.traps!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # (to worker processes and back)
        return (Kernel, (self._name, *self._fields()[1:]))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "mangled": self.mangled,
            "size": self.size,
            "instructions": self.instructions,
            "hollow": self.hollow,
        }
        if self.traps:
            data["traps"] = self.traps
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Kernel:
        return cls(
            data["name"],
            data["mangled"],
            data["size"],
            data["instructions"],
            data["hollow"],
            data.get("traps", ""),
        )


@dataclass(frozen=True)
class CodeObject:
    """A cubin (``arch.ptx`` False) or a PTX module (``arch.ptx`` True) in a fatbin."""

    arch: Target
    kernels: tuple[Kernel, ...] = ()
    sources: tuple[str, ...] = ()  # e.g. ("nvfp4_quant_kernels.cu",)

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch.name,
            "kernels": [k.to_json() for k in self.kernels],
            "sources": list(self.sources),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeObject:
        return cls(
            Target.parse(data["arch"]),
            tuple(Kernel.from_json(k) for k in data["kernels"]),
            tuple(data["sources"]),
        )


@dataclass(frozen=True, order=True)
class CodeBytes:
    """The fatbin entries of one target (``sm_120a``, ``compute_90``) in one library,
    and their bytes, read from the entry headers alone (both engines: cuobjdump
    prints no size).

    ``size`` is the code uncompressed, as ``cuobjdump -xelf`` / ``-xptx`` extracts it
    (the header's uncompressed size of a compressed entry, else its payload size,
    which nvcc pads to 8 bytes; a PTX entry's text ends with a NUL that ``-xptx``
    leaves out);
    ``stored`` what it takes in the library's fatbin (compressed when the fatbin
    compresses it; the 64-112 bytes of each entry header not counted). Every entry
    counts: a cubin nvcc embeds twice in one library takes its bytes twice."""

    target: str
    entries: int
    size: int
    stored: int

    def to_json(self) -> dict[str, int]:
        return {"entries": self.entries, "bytes": self.size, "stored": self.stored}


def code_bytes(items: Iterable[tuple[str, int, int]]) -> tuple[CodeBytes, ...]:
    """(target, size, stored) of each entry, tallied per target in target order.

    >>> code_bytes([("sm_90a", 10, 10), ("sm_120a", 30, 12), ("sm_90a", 5, 5)])
    (CodeBytes(target='sm_90a', entries=2, size=15, stored=15), \
CodeBytes(target='sm_120a', entries=1, size=30, stored=12))
    """
    tally: dict[str, list[int]] = {}
    for target, size, stored in items:
        counts = tally.setdefault(target, [0, 0, 0])
        counts[0] += 1
        counts[1] += size
        counts[2] += stored
    return tuple(
        CodeBytes(target, *tally[target])
        for target in sorted(tally, key=lambda name: Target.parse(name).sort_key())
    )


WHEEL_MEMBER = ".whl!"  # a wheel's library is labelled WHEEL!MEMBER


def library_identity(path: str, cell_id: str | None = None) -> str:
    """Which library ``path`` is, whatever directory or runner built it: its path
    relative to its *artifact root* -- the member path inside a wheel (whose file
    name changes with every version), else the path below the cell's build
    directory, as ``run`` records it. Two runs of the same source in different
    directories have the same libraries; a library *moves* only when this changes
    (``_C.so`` -> ``_C_stable_libtorch.so``).

    Results and baselines written before library paths were recorded relative to
    the build directory hold absolute paths: the part below the cell's own
    directory (named by its id) is kept, else the file name.

    >>> library_identity("_C.so"), library_identity("dist/vllm-1.0-cp38.whl!vllm/_C.abi3.so")
    ('_C.so', 'vllm/_C.abi3.so')
    >>> library_identity("/ci/ws/build/cu13.0-12.0a/lib/_C.so", "cu13.0-12.0a")
    'lib/_C.so'
    >>> library_identity("/somewhere/else/_C.so")
    '_C.so'
    """
    if WHEEL_MEMBER in path:
        return path.rsplit(WHEEL_MEMBER, 1)[1]
    posix = PurePosixPath(path)
    if not posix.is_absolute():
        return posix.as_posix()
    parts = posix.parts
    if cell_id is not None and cell_id in parts[:-1]:
        below = len(parts) - parts[::-1].index(cell_id)
        return PurePosixPath(*parts[below:]).as_posix()
    return posix.name


@dataclass(frozen=True)
class Library:
    """One shared object (a file, or a member of a wheel: ``vllm/_C.abi3.so``).
    ``path`` is as the probe was given it; for a cell of ``run``, relative to the
    cell's build directory (see :func:`library_identity`)."""

    path: str
    cubins: tuple[CodeObject, ...] = ()
    ptx: tuple[CodeObject, ...] = ()
    # Code objects a lazy read (check: orchestrator.read.demand) left undecoded, by target;
    # the code objects it read then list only the kernels some family may count.
    unread: tuple[str, ...] = ()
    # Per target, the bytes of its fatbin entries (CodeBytes); None where not known:
    # a configure-tier prediction (nothing compiled), an inventory of an older version.
    sizes: tuple[CodeBytes, ...] | None = None

    @property
    def has_device_code(self) -> bool:
        return bool(self.cubins or self.ptx)

    def code_objects(self) -> Iterator[CodeObject]:
        yield from self.cubins
        yield from self.ptx

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "cubins": [c.to_json() for c in self.cubins],
            "ptx": [p.to_json() for p in self.ptx],
        }
        if self.unread:
            data["unread"] = list(self.unread)
        if self.sizes is not None:
            data["sizes"] = {entry.target: entry.to_json() for entry in self.sizes}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Library:
        sizes = data.get("sizes")
        return cls(
            data["path"],
            tuple(CodeObject.from_json(c) for c in data["cubins"]),
            tuple(CodeObject.from_json(p) for p in data["ptx"]),
            tuple(data.get("unread", ())),
            None
            if sizes is None
            else tuple(
                CodeBytes(target, int(s["entries"]), int(s["bytes"]), int(s["stored"]))
                for target, s in sizes.items()
            ),
        )


@dataclass(frozen=True)
class Inventory:
    libraries: tuple[Library, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": INVENTORY_SCHEMA_VERSION,
            "libraries": [lib.to_json() for lib in self.libraries],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        return cls(tuple(Library.from_json(lib) for lib in data["libraries"]))
