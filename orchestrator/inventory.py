"""What a built library really contains: the records both probe engines produce.

An :class:`Inventory` lists, per shared object, every cubin (with its exact
architecture, ``a``/``f`` suffix included), every PTX entry, every kernel with its
code size and whether it is hollow, and the source files each cubin came from.
Two engines (native fatbin reader, real cuobjdump) must produce equal inventories.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from orchestrator.archs import Target

INVENTORY_SCHEMA_VERSION = 1


@dataclass(frozen=True, order=True)
class Kernel:
    """One entry function (``__global__``) in a cubin or PTX module."""

    name: str  # demangled
    mangled: str
    size: int  # bytes of its .text section (cubin); 0 for PTX
    instructions: int  # instructions that do work (not NOP/EXIT/BRA/trap...)
    hollow: bool  # body compiled out, or every path traps
    # Why it is hollow although it has working instructions: "every path traps: 61
    # traps, 58 printf/external calls, 4096 instructions" (a CUTLASS arch-guard stub).
    traps: str = ""

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


@dataclass(frozen=True)
class Library:
    """One shared object (a file, or a member of a wheel: ``vllm/_C.abi3.so``)."""

    path: str
    cubins: tuple[CodeObject, ...] = ()
    ptx: tuple[CodeObject, ...] = ()

    @property
    def has_device_code(self) -> bool:
        return bool(self.cubins or self.ptx)

    def code_objects(self) -> Iterator[CodeObject]:
        yield from self.cubins
        yield from self.ptx

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "cubins": [c.to_json() for c in self.cubins],
            "ptx": [p.to_json() for p in self.ptx],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Library:
        return cls(
            data["path"],
            tuple(CodeObject.from_json(c) for c in data["cubins"]),
            tuple(CodeObject.from_json(p) for p in data["ptx"]),
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
