"""The console summary of a run: one line per finished cell, a grid of cells ×
families, the failures with their causes, and one final verdict line."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from orchestrator.expect import NOT_APPLICABLE
from orchestrator.reporting.console import console, mark
from orchestrator.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult


def cell_line(result: CellResult) -> str:
    """``✅ cu13.0-9.0a passed in 12.3 s`` -- printed as each cell finishes."""
    took = f" in {result.duration_s:.1f} s" + (" (cached)" if result.cached else "")
    if result.status == PASSED:
        return f"{mark(PASSED)} {result.id} passed{took}"
    if result.status == FAILED:
        failing = result.failing_verdicts
        what = ", ".join(f"{v.family} {v.status} on {v.device}" for v in failing[:4])
        more = f" (+{len(failing) - 4} more)" if len(failing) > 4 else ""
        return f"{mark(FAILED)} {result.id} FAILED{took}: {what or result.reason}{more}"
    return f"{mark(result.status)} {result.id} {result.status}: {result.reason}"


def families_of(results: Sequence[CellResult]) -> list[str]:
    names: list[str] = []
    for result in results:
        for verdict in result.verdicts:
            if verdict.family not in names:
                names.append(verdict.family)
    return names


def grid_entry(result: CellResult, family: str) -> str:
    """What one cell says of one family: ``12.1 ❌``, ``9.0 ✅ 12.1 ✅``, or ``➖``."""
    if result.status not in (PASSED, FAILED):
        return mark(result.status if result.status in (ERROR, NOT_RUN) else SKIPPED)
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
        table.add_column(family, overflow="fold")
    for result in results:
        table.add_row(result.id, result.status, *(grid_entry(result, f) for f in families))
    out.print(table)
    failures = [(r, v) for r in results for v in r.failing_verdicts]
    for result, verdict in failures:
        out.print(f"{mark(verdict.status)} {result.id}: {verdict.reason}")
    for result in results:
        if result.status == FAILED and not result.failing_verdicts:
            out.print(f"{mark(FAILED)} {result.id}: {result.reason}")
        if result.status in (ERROR, NOT_RUN):
            out.print(f"{mark(result.status)} {result.id}: {result.reason}")
            if result.log:
                out.print(f"   log: {result.log}")


def verdict_line(results: Sequence[CellResult], code: int) -> str:
    """The final one-line verdict of a run."""
    count = {
        s: sum(r.status == s for r in results) for s in (PASSED, FAILED, ERROR, SKIPPED, NOT_RUN)
    }
    missing = sum(len(r.failing_verdicts) for r in results)
    word = {0: "OK", 1: "FAILED", 3: "ERROR"}.get(code, "ERROR")
    parts = [
        f"{count[PASSED]} passed",
        f"{count[FAILED]} failed ({missing} family × device missing or hollow)",
    ]
    parts += [f"{count[ERROR]} errors", f"{count[SKIPPED]} skipped"]
    if count[NOT_RUN]:
        parts.append(f"{count[NOT_RUN]} not run")
    return f"kernel-matrix: {word} — {', '.join(parts)} (exit {code})"
