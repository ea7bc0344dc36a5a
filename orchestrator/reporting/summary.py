"""The console summary of a run: one line per finished cell, a grid of cells ×
families, the failures with their causes, the baseline diff, and one final verdict
line. Everything must read well in a CI log: no colour needed (``NO_COLOR``), no
terminal, and the verdict is always the last line, so ``tail -1`` tells the story."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from orchestrator.baseline import (
    CELL_UNCHECKED,
    KERNEL_MOVED,
    KERNEL_NEW,
    REGRESSION_KINDS,
    SIZE_CHANGED,
    Diff,
)
from orchestrator.expect import NOT_APPLICABLE
from orchestrator.reporting.cells import (
    cell_status,
    clean,
    families_of,
    family_status,
    status_counts,
)
from orchestrator.reporting.console import console, mark
from orchestrator.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult

__all__ = [
    "cell_line",
    "families_of",
    "grid_entry",
    "print_diff",
    "print_summary",
    "verdict_line",
]

DIFF_LINES = 40  # per kind; the rest is in the reports


def cell_line(result: CellResult) -> str:
    """``✅ cu13.0-9.0a passed in 12.3 s`` -- printed as each cell finishes. A cell
    answered from the result cache says so, and where its artifacts now are."""
    took = f" in {result.duration_s:.1f} s"
    if result.cached:
        where = f" into {result.build_dir}" if result.build_dir else ""
        took += f" (cached: not rebuilt, artifacts restored{where})"
    if result.status == PASSED:
        return f"{mark(PASSED)} {result.id} passed{took}"
    if result.status == FAILED:
        failing = result.failing_verdicts
        what = ", ".join(f"{v.family} {v.status} on {v.device}" for v in failing[:4])
        more = f" (+{len(failing) - 4} more)" if len(failing) > 4 else ""
        return f"{mark(FAILED)} {result.id} FAILED{took}: {what or result.reason}{more}"
    return f"{mark(result.status)} {result.id} {result.status}: {result.reason}"


def grid_entry(result: CellResult, family: str) -> str:
    """What one cell says of one family: ``12.1 ❌``, ``9.0 ✅ 12.1 ✅``, or ``➖``."""
    status = family_status(result, family)
    if not status.checked:
        return mark(status.status)
    verdicts = [v for v in result.verdicts if v.family == family]
    applicable = [v for v in verdicts if v.status != NOT_APPLICABLE]
    if not applicable:
        return mark(NOT_APPLICABLE)
    return " ".join(f"{v.device} {mark(v.status)}" for v in applicable)


def print_summary(results: Sequence[CellResult], *, title: str = "kernel-matrix") -> None:
    out = console()
    families = families_of(results)
    table = Table(title=f"{title}: cells × families (device verdicts)")
    table.add_column("cell", no_wrap=True)
    table.add_column("status")
    for family in families:
        table.add_column(Text(family), overflow="fold")
    for result in results:
        cells = [Text(grid_entry(result, f)) for f in families]
        table.add_row(Text(result.id), Text(cell_status(result)), *cells)
    out.print(table)
    # Build output is printed as text, never as rich markup ("[sm_90a]" is not a tag).
    for result in results:
        for verdict in result.failing_verdicts:
            line = f"{mark(verdict.status)} {result.id}: {verdict.reason}"
            out.print(line, markup=False, soft_wrap=True)
    for result in results:
        status = cell_status(result)
        if status == FAILED and not result.failing_verdicts:
            out.print(f"{mark(FAILED)} {result.id}: {result.reason}", markup=False, soft_wrap=True)
        if status in (ERROR, NOT_RUN):
            line = f"{mark(status)} {result.id}: {result.reason or f'status {result.status!r}'}"
            out.print(line, markup=False, soft_wrap=True)
            if result.log:
                out.print(f"   log: {result.log}", markup=False)
            for tail in result.log_tail[-5:]:
                out.print(f"   | {clean(tail)}", markup=False, soft_wrap=True)


def print_diff(diff: Diff, *, against: str = "the baseline") -> None:
    """The regressions first (all of them), then moves, new kernels and size
    changes (the first few of each; the reports have the rest)."""
    out = console()
    out.print(f"Against {against}: {diff.line()}", markup=False, soft_wrap=True)
    for kinds, title, limit in (
        (REGRESSION_KINDS, "REGRESSION", None),
        ((CELL_UNCHECKED,), "UNCHECKED", None),
        ((KERNEL_MOVED,), "moved", DIFF_LINES),
        ((KERNEL_NEW,), "new", DIFF_LINES),
        ((SIZE_CHANGED,), "size", DIFF_LINES),
    ):
        found = diff.of(*kinds)
        for finding in found[:limit]:
            out.print(f"  {title}: {finding.describe()}", markup=False, soft_wrap=True)
        if limit is not None and len(found) > limit:
            out.print(f"  {title}: … and {len(found) - limit} more")


def verdict_line(results: Sequence[CellResult], code: int, diff: Diff | None = None) -> str:
    """The final one-line verdict of a run."""
    count = status_counts(results)
    missing = sum(len(r.failing_verdicts) for r in results)
    word = {0: "OK", 1: "FAILED", 3: "ERROR"}.get(code, "ERROR")
    parts = [
        f"{count[PASSED]} passed",
        f"{count[FAILED]} failed ({missing} family × device missing or hollow)",
    ]
    parts += [f"{count[ERROR]} errors", f"{count[SKIPPED]} skipped"]
    if count[NOT_RUN]:
        parts.append(f"{count[NOT_RUN]} not run")
    if diff is not None:
        parts.append(f"{len(diff.regressions)} regressions vs baseline")
        if diff.unchecked:
            parts.append(f"{len(diff.unchecked)} baseline cells unchecked")
    return f"kernel-matrix: {word} — {', '.join(parts)} (exit {code})"
