"""Reading built libraries: what device code a shared object really contains.

Two engines give the same :class:`Inventory`: the native reader (``elf`` finds
``.nv_fatbin``, ``fatbin`` knows its containers and entries, ``library`` reads a
library's with bounds and worker processes, ``sass``/``ptx`` decode the code,
``kernelcode`` judges what it can do) and ``cuobjdump`` (NVIDIA's tool, parsed).
``demand`` reads only what a verdict needs and ``checkcache`` keeps that by content.
The face of this stage is :mod:`orchestrator.probe` (paths, wheels, directories in;
one inventory out)."""

from __future__ import annotations

from typing import Any

__all__ = ["CodeObject", "Inventory", "Kernel", "Library"]


def __getattr__(name: str) -> Any:
    # (imported when wanted: a repeated ``check`` answered from its cache reads none)
    if name in __all__:
        from orchestrator.read import inventory

        return getattr(inventory, name)
    raise AttributeError(name)
