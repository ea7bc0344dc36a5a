"""Shared helpers, below every stage: every fatal error with its exit code (``errors``),
atomic writes and bounded reads (``fsutil``), YAML read with positions and checked by a
JSON Schema (``yamlfile``), users' regexes matched with bounds (``userregex``), the
progress lines of long work (``progress``) and counts in sentences (``words``).
Nothing here knows about CUDA."""

from orchestrator.common.errors import KernelMatrixError
from orchestrator.common.fsutil import write_atomic

__all__ = ["KernelMatrixError", "write_atomic"]
