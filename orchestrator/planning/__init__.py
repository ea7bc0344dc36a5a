"""What to build: the matrix file (``matrix``), its cells each runnable or skipped with
its reason (``plan``), and the pipelines that fan cells out on a CI engine (``ci``).
Contract: a cell is never silently dropped; one the CUDA version cannot compile is
*unsupported*, one without a toolchain here *toolchain unavailable*, with the remedy."""

from __future__ import annotations

from typing import Any

from orchestrator.planning.matrix import Matrix, load_matrix

__all__ = ["Cell", "Matrix", "load_matrix"]


def __getattr__(name: str) -> Any:
    # ``plan`` asks the toolchains what is available (filelock, the Debian provider):
    # imported when a cell is wanted, not by every verb that reads a families file.
    if name == "Cell":
        from orchestrator.planning.plan import Cell

        return Cell
    raise AttributeError(name)
