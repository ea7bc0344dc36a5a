"""What to build: the matrix file (``matrix``), its cells each runnable or skipped with
its reason (``plan``), and the pipelines that fan cells out on a CI engine (``ci``).
Contract: a cell is never silently dropped; one the CUDA version cannot compile is
*unsupported*, one without a toolchain here *toolchain unavailable*, with the remedy."""

from orchestrator.planning.matrix import Matrix, load_matrix
from orchestrator.planning.plan import Cell

__all__ = ["Cell", "Matrix", "load_matrix"]
