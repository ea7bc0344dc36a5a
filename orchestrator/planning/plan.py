"""Planning: expand a matrix into cells, each runnable or skipped with its reason.

A cell is never silently dropped: a target the CUDA version cannot compile makes
the cell *unsupported*; a CUDA version without a toolchain here makes it
*toolchain-unavailable* (with the remedy). Both are listed, neither is run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.archs import (
    ArchSpec,
    CudaVersion,
    cmake_architectures,
    format_arch_list,
    gencode_flags,
    requested_devices,
    unsupported_reason,
)
from orchestrator.common.errors import UsageError
from orchestrator.planning.matrix import CellSpec, Matrix
from orchestrator.toolchains.cuda import local_availability

PLANNED = "planned"
UNSUPPORTED = "unsupported"
TOOLCHAIN_UNAVAILABLE = "toolchain-unavailable"
PLAN_SCHEMA_VERSION = 1  # of ``plan --format json`` (orchestrator/schemas/plan.schema.json)


@dataclass(frozen=True)
class Cell:
    spec: CellSpec
    backend: str
    status: str = PLANNED
    reason: str | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def cuda(self) -> CudaVersion:
        return self.spec.cuda

    @property
    def archs(self) -> tuple[ArchSpec, ...]:
        return self.spec.archs

    @property
    def runnable(self) -> bool:
        return self.status == PLANNED

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cuda": str(self.cuda),
            "archs": format_arch_list(self.archs),
            "gencode": gencode_flags(self.archs),
            "cmake_architectures": cmake_architectures(self.archs),
            "devices": [str(d) for d in requested_devices(self.archs)],
            "backend": self.backend,
            "cmake_options": dict(self.spec.cmake_options),
            "env": dict(self.spec.env),
            "status": self.status,
            "reason": self.reason,
        }


def plan_cell(spec: CellSpec, backend: str, cuda_homes: Sequence[Path] = ()) -> Cell:
    reasons = [
        r
        for arch in spec.archs
        for target in arch.targets
        if (r := unsupported_reason(spec.cuda, target)) is not None
    ]
    if reasons:
        return Cell(spec, backend, UNSUPPORTED, "; ".join(reasons))
    if backend == "local":
        remedy = local_availability(spec.cuda, cuda_homes)
        if remedy:
            return Cell(spec, backend, TOOLCHAIN_UNAVAILABLE, remedy)
    return Cell(spec, backend)


def plan(
    matrix: Matrix,
    *,
    backend: str | None = None,
    cuda_homes: Sequence[Path] = (),
    only: Sequence[str] = (),
) -> list[Cell]:
    """All cells of ``matrix`` (or those named in ``only``), in file order."""
    chosen = backend or matrix.backend
    cells = [plan_cell(spec, chosen, cuda_homes) for spec in matrix.cells]
    if not only:
        return cells
    known = {c.id for c in cells}
    unknown = [o for o in only if o not in known]
    if unknown:
        near = near_cell_ids(unknown[0], known)
        hint = f"did you mean {', '.join(near)}?" if near else f"cells: {', '.join(sorted(known))}"
        raise UsageError(f"{matrix.path}: no cell '{unknown[0]}' ({hint})")
    return [c for c in cells if c.id in only]


def near_cell_ids(wanted: str, known: Iterable[str]) -> list[str]:
    """The cell ids a mistyped ``wanted`` may have meant: those it begins (an arch
    without its suffix), else the closest spellings.

    >>> near_cell_ids("cu13.0-12.1", ["cu13.0-12.1f", "cu13.0-12.1a", "cu13.0-9.0a"])
    ['cu13.0-12.1a', 'cu13.0-12.1f']
    >>> near_cell_ids("cu13.0-9.0", ["cu12.9-9.0a", "cu13.0-9.0a", "cu13.0-9.0a_10.0f"])
    ['cu13.0-9.0a', 'cu13.0-9.0a_10.0f']
    >>> near_cell_ids("cu13-9.0a", ["cu13.0-9.0a", "cu13.0-12.1a"])
    ['cu13.0-9.0a']
    >>> near_cell_ids("nonsense", ["cu13.0-9.0a"])
    []
    """
    ids = sorted(known)
    close = difflib.get_close_matches(wanted, ids, n=3, cutoff=0.8)
    return [i for i in ids if i.startswith(wanted)] or close


def plan_json(matrix: Matrix, cells: Sequence[Cell]) -> dict[str, Any]:
    """The ``plan --format json`` document."""
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "matrix": str(matrix.path),
        "cells": [c.to_json() for c in cells],
    }


def used_cuda_versions(cells: Sequence[Cell]) -> set[CudaVersion]:
    """The CUDA versions these cells would build with (unsupported cells build with none)."""
    return {c.cuda for c in cells if c.status != UNSUPPORTED}


def github_matrix(cells: Sequence[Cell]) -> dict[str, Any]:
    """A GitHub Actions ``strategy.matrix`` object: one entry per runnable cell."""
    return {
        "include": [
            {"cell": c.id, "cuda": str(c.cuda), "archs": format_arch_list(c.archs)}
            for c in cells
            if c.runnable
        ]
    }
