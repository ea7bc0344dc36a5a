"""Comparing two runs (a baseline and a run, a pull request's base and head).

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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.common.errors import EXIT_INFRA, EXIT_KERNEL_MISSING, EXIT_OK
from orchestrator.judge.baseline import Baseline, CellSummary, KernelCopy, summarize
from orchestrator.judge.expect import NOT_APPLICABLE, PRESENT
from orchestrator.judge.results import CellResult

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
