"""Baselines and regressions: what a known-good run had, and what a new run lost.

A baseline is a *summary*, small enough to commit next to the code: per cell, the
status of every applicable family on every requested device (and the code objects
serving it), and per kernel the (library, arch, size, hollow) of each copy -- never
full inventories. ``orchestrator/schemas/baseline.schema.json`` documents and validates it.

A library is named by its path relative to its artifact root
(:func:`~orchestrator.read.inventory.library_identity`: below the cell's build
directory, or inside the wheel), so a baseline made on one runner compares
cleanly with a run on another whose workspace is elsewhere.

A **regression** is a (family, device) pair, or a kernel at an arch, that the
baseline had and the new run lacks, cell by cell (cells matched by id). A kernel
found at the same arch in *another library of the same build* has **moved**, which
is not a regression (vLLM moved its FP4 kernels from ``_C`` to
``_C_stable_libtorch``). New kernels, size changes and changes of the serving code
object are information. A baseline cell that the new run did not check (absent,
crashed, interrupted, skipped) is **unchecked**: no regression can be ruled out.

>>> old = CellSummary("c", "passed", kernels={"k": (KernelCopy("_C.so", "sm_120a", 100),)})
>>> new = CellSummary(
...     "c", "passed", kernels={"k": (KernelCopy("_C_stable.so", "sm_120a", 100),)}
... )
>>> [(f.kind, f.subject) for f in compare(Baseline({"c": old}), Baseline({"c": new})).findings]
[('kernel-moved', 'k')]
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
    EXIT_INFRA,
    EXIT_KERNEL_MISSING,
    EXIT_OK,
    InputFileError,
)
from orchestrator.common.fsutil import load_json_file, write_atomic
from orchestrator.common.yamlfile import check_artifact
from orchestrator.judge.expect import NOT_APPLICABLE, PRESENT
from orchestrator.judge.results import ERROR, NOT_RUN, SKIPPED, CellResult
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

    @property
    def checked(self) -> bool:
        return self.status not in (ERROR, NOT_RUN, SKIPPED)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "cuda": self.cuda,
            "archs": self.archs,
            "families": [
                {"family": f, "device": d, "status": s.status, "served_by": list(s.served_by)}
                for (f, d), s in self.families.items()
            ],
            "kernels": None
            if self.kernels is None
            else {name: [c.to_json() for c in copies] for name, copies in self.kernels.items()},
        }

    @classmethod
    def from_json(cls, cell_id: str, data: dict[str, Any]) -> CellSummary:
        kernels = data.get("kernels")
        return cls(
            id=cell_id,
            status=data["status"],
            cuda=data.get("cuda"),
            archs=data.get("archs"),
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
        # Not-applicable pairs say nothing a baseline needs; leaving them out keeps it small.
        families={
            (v.family, v.device): FamilyState(v.status, tuple(v.served_by))
            for v in result.verdicts
            if v.status != NOT_APPLICABLE
        },
        kernels=kernel_copies(result.inventory, result.id)
        if result.inventory is not None
        else None,
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


# --- the comparison -------------------------------------------------------------------

FAMILY_LOST = "family-lost"
KERNEL_LOST = "kernel-lost"
KERNEL_HOLLOW = "kernel-hollow"
CELL_UNCHECKED = "cell-unchecked"
KERNEL_MOVED = "kernel-moved"
KERNEL_NEW = "kernel-new"
SIZE_CHANGED = "size-changed"
FAMILY_CHANGED = "family-changed"
CELL_NEW = "cell-new"

REGRESSION_KINDS = (FAMILY_LOST, KERNEL_LOST, KERNEL_HOLLOW)
KIND_TITLES = {
    FAMILY_LOST: "family lost on a device",
    KERNEL_LOST: "kernel lost",
    KERNEL_HOLLOW: "kernel hollowed out",
    CELL_UNCHECKED: "cell not checked in this run",
    KERNEL_MOVED: "kernel moved to another library",
    KERNEL_NEW: "new kernel",
    SIZE_CHANGED: "size changed",
    FAMILY_CHANGED: "family verdict changed",
    CELL_NEW: "new cell",
}


@dataclass(frozen=True)
class Finding:
    """One difference between a baseline and a run, in one cell."""

    kind: str
    cell: str
    subject: str  # "nvfp4 on 12.1", a kernel's name, or the cell id
    before: str = ""
    after: str = ""
    archs: tuple[str, ...] = ()
    delta: int = 0  # bytes, for size changes

    @property
    def regression(self) -> bool:
        return self.kind in REGRESSION_KINDS

    def describe(self) -> str:
        """One line: ``cu13.0-12.1a: nvfp4 on 12.1: present (sm_121a) -> missing``."""
        at = f" [{', '.join(self.archs)}]" if self.archs else ""
        change = (
            f"{self.before} -> {self.after}"
            if self.before and self.after
            else self.before or self.after
        )
        return (
            f"{self.cell}: {self.subject}{at}: {change}"
            if change
            else f"{self.cell}: {self.subject}{at}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cell": self.cell,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "archs": list(self.archs),
            "delta": self.delta,
        }


@dataclass
class Diff:
    findings: list[Finding] = field(default_factory=list)

    def of(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind in kinds]

    @property
    def regressions(self) -> list[Finding]:
        return self.of(*REGRESSION_KINDS)

    @property
    def unchecked(self) -> list[Finding]:
        return self.of(CELL_UNCHECKED)

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.findings)

    @property
    def exit_code(self) -> int:
        """1 on a regression; 3 when a baseline cell went unchecked (a regression
        cannot be ruled out there); else 0."""
        if self.regressions:
            return EXIT_KERNEL_MISSING
        if self.unchecked:
            return EXIT_INFRA
        return EXIT_OK

    def line(self) -> str:
        """``3 regressions (1 family × device, 2 kernels), 1 move, 4 new kernels, ...``"""
        families = self.count(FAMILY_LOST)
        kernels = self.count(KERNEL_LOST) + self.count(KERNEL_HOLLOW)
        parts = [
            f"{len(self.regressions)} regressions ({families} family × device, {kernels} kernels)",
            f"{self.count(KERNEL_MOVED)} moved",
            f"{self.count(KERNEL_NEW)} new kernels",
            f"{self.count(SIZE_CHANGED)} size changes",
        ]
        if self.unchecked:
            parts.append(f"{len(self.unchecked)} cells unchecked")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "regressions": len(self.regressions),
            "exit_code": self.exit_code,
            "findings": [f.to_json() for f in self.findings],
        }


def compare(old: Baseline, new: Baseline) -> Diff:
    """Everything ``new`` lost, moved, gained or resized relative to ``old``."""
    diff = Diff()
    for cell_id, before in old.cells.items():
        after = new.cells.get(cell_id)
        if after is None:
            if before.checked:
                diff.findings.append(
                    Finding(CELL_UNCHECKED, cell_id, cell_id, before.status, "absent from this run")
                )
            continue
        if before.checked and not after.checked:
            diff.findings.append(
                Finding(CELL_UNCHECKED, cell_id, cell_id, before.status, after.status)
            )
            continue
        diff.findings.extend(_compare_families(cell_id, before, after))
        if before.kernels is not None and after.kernels is not None:
            diff.findings.extend(_compare_kernels(cell_id, before.kernels, after.kernels))
    diff.findings.extend(
        Finding(CELL_NEW, cell_id, cell_id, "", cell.status)
        for cell_id, cell in new.cells.items()
        if cell_id not in old.cells
    )
    return diff


def diff_results(baseline: Baseline, results: Iterable[CellResult]) -> Diff:
    return compare(baseline, summarize(results))


def _compare_families(cell: str, before: CellSummary, after: CellSummary) -> list[Finding]:
    out: list[Finding] = []
    for (family, device), was in before.families.items():
        subject = f"{family} on {device}"
        now = after.families.get((family, device))
        if was.status == PRESENT:
            if now is None:
                out.append(Finding(FAMILY_LOST, cell, subject, was.describe(), "no longer checked"))
            elif now.status not in (PRESENT, NOT_APPLICABLE):
                out.append(Finding(FAMILY_LOST, cell, subject, was.describe(), now.describe()))
            elif now != was:
                out.append(Finding(FAMILY_CHANGED, cell, subject, was.describe(), now.describe()))
        elif now is not None and now != was:
            out.append(Finding(FAMILY_CHANGED, cell, subject, was.describe(), now.describe()))
    for key, now in after.families.items():
        if key not in before.families:
            out.append(Finding(FAMILY_CHANGED, cell, f"{key[0]} on {key[1]}", "", now.describe()))
    return out


def _compare_kernels(
    cell: str,
    before: dict[str, tuple[KernelCopy, ...]],
    after: dict[str, tuple[KernelCopy, ...]],
) -> list[Finding]:
    out: list[Finding] = []
    for name, old_copies in before.items():
        old_by_arch = _by_arch(old_copies)
        new_by_arch = _by_arch(after.get(name, ()))
        lost: list[str] = []
        hollowed: list[str] = []
        moves: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
        for arch, old in old_by_arch.items():
            new = new_by_arch.get(arch)
            if not new:
                lost.append(arch)
                continue
            # Left a library but still built at this arch elsewhere: moved, not lost.
            if {c.library for c in old} - {c.library for c in new}:
                moves[(_libraries(old), _libraries(new))].append(arch)
            if _has_body(old) and not _has_body(new):
                hollowed.append(arch)
            old_size, new_size = _size(old), _size(new)
            if old_size != new_size:
                out.append(
                    Finding(
                        SIZE_CHANGED,
                        cell,
                        name,
                        f"{old_size} B",
                        f"{new_size} B",
                        (arch,),
                        new_size - old_size,
                    )
                )
        if lost:
            where = ", ".join(sorted({c.library for c in old_copies if c.arch in lost}))
            out.append(Finding(KERNEL_LOST, cell, name, f"in {where}", "gone", tuple(lost)))
        if hollowed:
            out.append(Finding(KERNEL_HOLLOW, cell, name, "has a body", "hollow", tuple(hollowed)))
        for (old_libs, new_libs), archs in moves.items():
            out.append(Finding(KERNEL_MOVED, cell, name, old_libs, new_libs, tuple(archs)))
        gained = [arch for arch in new_by_arch if arch not in old_by_arch]
        if gained:
            out.append(Finding(KERNEL_NEW, cell, name, "", _libraries(after[name]), tuple(gained)))
    for name, copies in after.items():
        if name not in before:
            out.append(
                Finding(
                    KERNEL_NEW,
                    cell,
                    name,
                    "",
                    _libraries(copies),
                    tuple(_by_arch(copies)),
                )
            )
    return out


def _by_arch(copies: Iterable[KernelCopy]) -> dict[str, list[KernelCopy]]:
    out: dict[str, list[KernelCopy]] = {}
    for copy in copies:
        out.setdefault(copy.arch, []).append(copy)
    return out


def _libraries(copies: Iterable[KernelCopy]) -> str:
    return ", ".join(sorted({c.library for c in copies}))


def _has_body(copies: Iterable[KernelCopy]) -> bool:
    return any(not c.hollow for c in copies)


def _size(copies: Iterable[KernelCopy]) -> int:
    return max((c.size for c in copies), default=0)


def combined_exit_code(results_code: int, diff: Diff | None) -> int:
    """A run's exit code with its baseline comparison: a missing kernel or a
    regression (1) wins over an infrastructure failure or an unchecked cell (3),
    because it is a finding about the code."""
    codes = {results_code, diff.exit_code if diff else EXIT_OK}
    for code in (EXIT_KERNEL_MISSING, EXIT_INFRA):
        if code in codes:
            return code
    return max(codes)
