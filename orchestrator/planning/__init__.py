"""What to build: the matrix file (``matrix``), its cells each runnable or skipped with
its reason (``plan``), and the pipelines that fan cells out on a CI engine (``ci``).
Contract: a cell is never silently dropped; one the CUDA version cannot compile is
*unsupported*, one without a toolchain here *toolchain unavailable*, with the remedy."""

from __future__ import annotations

from typing import Any

__all__ = ["Cell", "Matrix", "load_matrix"]


def __getattr__(name: str) -> Any:
    # Imported when wanted: the command line reads only ``choices`` to build its parser,
    # and ``plan`` asks the toolchains what is available (filelock, the Debian provider).
    if name == "Cell":
        from orchestrator.planning.plan import Cell

        return Cell
    if name in ("Matrix", "load_matrix"):
        from orchestrator.planning import matrix

        return getattr(matrix, name)
    raise AttributeError(name)
