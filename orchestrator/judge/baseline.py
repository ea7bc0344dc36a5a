"""Baselines and regressions: what a known-good run had, and what a new run lost.

A baseline is a *summary*, small enough to commit next to the code: per cell, the
status of every applicable family on every requested device (and the code objects
serving it), per kernel the (library, arch, size, hollow) of each copy, and what the
build weighed (``orchestrator.judge.sizes``: bytes per target and per family, build
tier only) -- never full inventories. ``orchestrator/schemas/baseline.schema.json`` documents and validates it.

A library is named by its path relative to its artifact root
(:func:`~orchestrator.read.inventory.library_identity`: below the cell's build
directory, or inside the wheel), so a baseline made on one runner compares
cleanly with a run on another whose workspace is elsewhere.

The comparison of two summaries is :mod:`orchestrator.judge.compare`'s.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.common.errors import (
    InputFileError,
)
from orchestrator.common.fsutil import load_json_file, write_atomic
from orchestrator.common.yamlfile import check_artifact
from orchestrator.judge.expect import NOT_APPLICABLE
from orchestrator.judge.results import ERROR, NOT_RUN, SKIPPED, CellResult
from orchestrator.judge.sizes import Sizes
from orchestrator.read.inventory import Inventory, library_identity

BASELINE_SCHEMA_VERSION = 1
BASELINE_KIND = "kernel-matrix-baseline"

# --- the summary ----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class KernelCopy:
    """One kernel at one arch in one library: what a baseline keeps of it."""

    library: str  # its identity: the path relative to the artifact root
    arch: str  # sm_120a, compute_120 ...
    size: int
    hollow: bool = False

    def to_json(self) -> list[Any]:
        return [self.library, self.arch, self.size, self.hollow]

    @classmethod
    def from_json(cls, data: Sequence[Any], cell_id: str | None = None) -> KernelCopy:
        # (Baselines of older versions hold absolute paths: read as their identity.)
        library = library_identity(str(data[0]), cell_id)
        return cls(library, str(data[1]), int(data[2]), bool(data[3]))


@dataclass(frozen=True)
class FamilyState:
    status: str  # present | missing | hollow | not-applicable
    served_by: tuple[str, ...] = ()

    def describe(self) -> str:
        by = f" ({', '.join(self.served_by)})" if self.served_by else ""
        return f"{self.status}{by}"


@dataclass
class CellSummary:
    """One cell of a baseline. ``kernels`` is None when the cell was never probed
    (skipped, crashed): it then says nothing about kernels."""

    id: str
    status: str
    cuda: str | None = None
    archs: str | None = None
    families: dict[tuple[str, str], FamilyState] = field(default_factory=dict)
    kernels: dict[str, tuple[KernelCopy, ...]] | None = None
    tier: str = "build"  # configure: kernels predicted by source file, none read
    sizes: Sizes | None = None  # bytes per target and family (build tier)

    @property
    def checked(self) -> bool:
        return self.status not in (ERROR, NOT_RUN, SKIPPED)

    def to_json(self) -> dict[str, Any]:
        data = {
            "status": self.status,
            "cuda": self.cuda,
            "archs": self.archs,
            "tier": self.tier,
            "families": [
                {"family": f, "device": d, "status": s.status, "served_by": list(s.served_by)}
                for (f, d), s in self.families.items()
            ],
            "kernels": None
            if self.kernels is None
            else {name: [c.to_json() for c in copies] for name, copies in self.kernels.items()},
        }
        if self.sizes is not None:
            data["sizes"] = self.sizes.to_json()
        return data

    @classmethod
    def from_json(cls, cell_id: str, data: dict[str, Any]) -> CellSummary:
        kernels = data.get("kernels")
        return cls(
            id=cell_id,
            status=data["status"],
            cuda=data.get("cuda"),
            archs=data.get("archs"),
            tier=data.get("tier", "build"),  # (baselines before the key were all built)
            families={
                (f["family"], f["device"]): FamilyState(f["status"], tuple(f["served_by"]))
                for f in data.get("families", [])
            },
            kernels=None
            if kernels is None
            else {
                name: _merged(KernelCopy.from_json(c, cell_id) for c in copies)
                for name, copies in kernels.items()
            },
            sizes=Sizes.from_json(data["sizes"]) if data.get("sizes") else None,
        )


@dataclass
class Baseline:
    cells: dict[str, CellSummary]
    written: str = ""
    tool_version: str = __version__

    @property
    def kernel_count(self) -> int:
        return sum(len(c.kernels or {}) for c in self.cells.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": BASELINE_SCHEMA_VERSION,
            "kind": BASELINE_KIND,
            "tool_version": self.tool_version,
            "written": self.written,
            "cells": {cid: c.to_json() for cid, c in self.cells.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        return cls(
            cells={cid: CellSummary.from_json(cid, c) for cid, c in data["cells"].items()},
            written=data.get("written", ""),
            tool_version=data.get("tool_version", ""),
        )


def kernel_copies(
    inventory: Inventory, cell_id: str | None = None
) -> dict[str, tuple[KernelCopy, ...]]:
    """Every kernel (by demangled name) and its copies, one per (library, arch),
    each library named by its identity (``cell_id`` places the artifact root in
    the absolute paths of results written by older versions).

    nvcc may embed a cubin twice in one library; such copies count once, with a
    real body if either has one.
    """
    found: defaultdict[str, list[KernelCopy]] = defaultdict(list)
    for library in inventory.libraries:
        name = library_identity(library.path, cell_id)
        for code in library.code_objects():
            for kernel in code.kernels:
                copy = KernelCopy(name, code.arch.name, kernel.size, kernel.hollow)
                found[kernel.name or kernel.mangled].append(copy)
    return {name: _merged(copies) for name, copies in sorted(found.items())}


def _merged(copies: Iterable[KernelCopy]) -> tuple[KernelCopy, ...]:
    """One copy per (library, arch): the largest size, hollow only if all are."""
    merged: dict[tuple[str, str], KernelCopy] = {}
    for copy in copies:
        previous = merged.get((copy.library, copy.arch))
        if previous is not None:
            copy = KernelCopy(
                copy.library,
                copy.arch,
                max(previous.size, copy.size),
                previous.hollow and copy.hollow,
            )
        merged[(copy.library, copy.arch)] = copy
    return tuple(sorted(merged.values()))


def summarize_cell(result: CellResult) -> CellSummary:
    return CellSummary(
        id=result.id,
        status=result.status,
        cuda=result.cell.get("cuda"),
        archs=result.cell.get("archs"),
        tier=result.tier,
        # Not-applicable pairs say nothing a baseline needs; leaving them out keeps it small.
        families={
            (v.family, v.device): FamilyState(v.status, tuple(v.served_by))
            for v in result.verdicts
            if v.status != NOT_APPLICABLE
        },
        kernels=kernel_copies(result.inventory, result.id)
        if result.inventory is not None
        else None,
        sizes=result.sizes,
    )


def summarize(results: Iterable[CellResult]) -> Baseline:
    """The baseline of a run."""
    return Baseline(
        cells={r.id: summarize_cell(r) for r in results},
        written=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def dumps_shallow(data: Any, depth: int = 4, _indent: str = "") -> str:
    """JSON indented down to ``depth`` levels and compact below: one family verdict or
    one kernel per line. Git diffs of a committed baseline stay readable, and the
    file is several times smaller than fully indented JSON.

    >>> print(dumps_shallow({"a": {"b": [1, 2]}}, depth=1))
    {
      "a": {"b": [1, 2]}
    }
    """
    if depth <= 0 or not isinstance(data, dict | list) or not data:
        return json.dumps(data, ensure_ascii=False)
    inner = _indent + "  "
    if isinstance(data, dict):
        items = [
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps_shallow(v, depth - 1, inner)}"
            for k, v in data.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{_indent}}}"
    items = [f"{inner}{dumps_shallow(v, depth - 1, inner)}" for v in data]
    return "[\n" + ",\n".join(items) + f"\n{_indent}]"


def save_baseline(baseline: Baseline, path: Path) -> None:
    write_atomic(path, dumps_shallow(baseline.to_json()) + "\n")


def load_baseline(path: Path) -> Baseline:
    """Read and validate a baseline file; anything else is the user's error (exit 2)."""
    try:
        data = load_json_file(Path(path), InputFileError, what="kernel-matrix baseline")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such baseline file") from None
    if isinstance(data, dict) and data.get("kind") != BASELINE_KIND and "cells" in data:
        raise InputFileError(
            f"{path}: this is a results file, not a baseline; "
            f"make one with: kernel-matrix baseline save {path} --out baseline.json"
        )
    check_artifact(data, "baseline.schema.json", path=Path(path), what="baseline")
    try:
        return Baseline.from_json(data)
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # what the schema cannot say
        raise InputFileError(f"{path}: not a kernel-matrix baseline ({exc})") from None
