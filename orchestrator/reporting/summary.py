"""The console summary of a run: one line per finished cell, a grid of cells ×
families, the failures with their causes, the baseline diff, and one final verdict
line. Everything must read well in a CI log: no colour needed (``NO_COLOR``), no
terminal, and the verdict is always the last line, so ``tail -1`` tells the story."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.text import Text

from orchestrator.archs import ComputeCapability, device_name
from orchestrator.common.errors import KernelMatrixError
from orchestrator.common.words import counted
from orchestrator.judge.compare import (
    CELL_UNCHECKED,
    KERNEL_MOVED,
    KERNEL_NEW,
    REGRESSION_KINDS,
    SIZE_CHANGED,
    Diff,
)
from orchestrator.judge.expect import NOT_APPLICABLE, Verdict
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult
from orchestrator.reporting.cells import (
    NO_FAMILY_CHECKED,
    PREDICTED_NOTE,
    SKIP_WORDS,
    cell_status,
    clean,
    devices_of,
    families_of,
    family_status,
    predicted,
    skip_reason,
    skip_word,
    status_counts,
)
from orchestrator.reporting.console import Message, console, mark, say
from orchestrator.reporting.tables import grid, show

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
    """``✅ cu13.0-9.0a passed in 12.3 s`` -- printed as each cell finishes (the
    configure tier says ``predicted to pass``: it compiled nothing). A cell answered
    from the result cache says so, and where its artifacts now are."""
    took = f" in {result.duration_s:.1f} s"
    if result.cached:
        where = f" into {result.build_dir}" if result.build_dir else ""
        took += f" (cached: not rebuilt, artifacts restored{where})"
    guess = "predicted to " if result.tier == "configure" else ""
    if result.status == PASSED:
        return f"{mark(PASSED)} {result.id} {guess}pass{'' if guess else 'ed'}{took}"
    if result.status == FAILED:
        failing = result.failing_verdicts
        what = ", ".join(
            f"{family} {status} on {', '.join(devices)}"
            for family, status, devices, _ in group_failures(failing)[:4]
        )
        more = f" (+{len(failing) - 4} more)" if len(failing) > 4 else ""
        word = f"{guess}FAIL" if guess else "FAILED"
        return f"{mark(FAILED)} {result.id} {word}{took}: {what or result.reason}{more}"
    if result.status == SKIPPED:
        return f"{mark(SKIPPED)} {result.id} {skip_word(result)}: {skip_reason(result)}"
    return f"{mark(result.status)} {result.id} {result.status}: {result.reason}"


def group_failures(verdicts: Sequence[Verdict]) -> list[tuple[str, str, list[str], str]]:
    """Failing verdicts as (family, status, devices, reason): one entry per family,
    status and cause for all the devices that fail the same way, so a family missing
    on four devices is one line naming the four. A reason that names its device
    (``… none of which runs on 10.3 (B300, GB300)``) is merged with the others that
    differ only by the device: the devices are then named in the first part."""
    groups: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for v in verdicts:
        reason, name = _without_device(v)
        groups.setdefault((v.family, v.status, reason), []).append((v.device, name))
    found = []
    for (family, status, reason), devices in groups.items():
        if _HERE in reason:
            labels = [name for _, name in devices]
            reason = reason.replace(_HERE, labels[0] if len(labels) == 1 else "these devices")
        else:
            labels = [device for device, _ in devices]
        found.append((family, status, labels, reason))
    return found


_HERE = "\0"


def _without_device(verdict: Verdict) -> tuple[str, str]:
    """(the reason with the device's name replaced by a marker, that name)."""
    try:
        name = device_name(ComputeCapability.parse(verdict.device))
    except KernelMatrixError:  # a hand-edited result: keep its words as they are
        return verdict.reason, verdict.device
    reason = verdict.reason.removeprefix(f"{verdict.family} is ")
    return reason.replace(name, _HERE) if name in reason else reason, name


def failure_lines(verdicts: Sequence[Verdict], prefix: str = "") -> list[str]:
    """``❌ cu13.0-12.1a-bug: nvfp4 missing on 10.0, 12.1: no kernel of nvfp4 …``."""
    return [
        f"{mark(status)} {prefix}{family} {status} on {', '.join(devices)}: {reason}"
        for family, status, devices, reason in group_failures(verdicts)
    ]


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
    grid_view(out, results, title=title)
    # Build output is printed as text, never as rich markup ("[sm_90a]" is not a tag).
    for result in results:
        for line in failure_lines(result.failing_verdicts, prefix=f"{result.id}: "):
            say(out, line)
    for result in results:
        status = cell_status(result)
        if status == FAILED and not result.failing_verdicts:
            say(out, f"{mark(FAILED)} {result.id}: {result.reason}")
        if status in (ERROR, NOT_RUN):
            line = f"{mark(status)} {result.id}: {result.reason or f'status {result.status!r}'}"
            say(out, line)
            if result.log:
                say(out, f"   log: {result.log}")
            for tail in result.log_tail[-5:]:
                say(out, f"   | {clean(tail)}")


def grid_view(out: Console, results: Sequence[CellResult], *, title: str) -> None:
    """Cells × families when that fits the terminal; else cells × devices, each entry
    naming the families that fail there; else one line per cell."""
    families = families_of(results)
    devices = sorted({d for r in results for d in devices_of(r)}, key=_device_order)

    def by_family() -> RenderableType:
        table = grid(f"{title}: cells × families (device verdicts)")
        table.add_column("cell", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for family in families:
            table.add_column(Text(family), no_wrap=True)
        for result in results:
            cells = [Text(grid_entry(result, f)) for f in families]
            table.add_row(Text(result.id), Text(cell_status(result)), *cells)
        return table

    def by_device() -> RenderableType:
        meaning = "✅ every family meant for it is there" if families else "cell status"
        table = grid(f"{title}: cells × devices ({meaning})")
        table.add_column("cell", no_wrap=True)
        table.add_column("status", no_wrap=True)
        for device in devices:
            table.add_column(device, no_wrap=True)
        for result in results:
            table.add_row(
                Text(result.id),
                Text(cell_status(result)),
                *(Text(device_entry(result, d)) for d in devices),
            )
        return table

    def lines() -> RenderableType:
        said = [Message(f"{title}: one line per cell")]
        for result in results:
            entries = [f"{d} {device_entry(result, d)}" for d in devices_of(result)]
            detail = " · ".join(entries) if cell_status(result) in (PASSED, FAILED) else ""
            said.append(Message(f"{result.id}  {cell_status(result)}  {detail}".rstrip()))
        return Group(*said)

    if not families:  # a cells × families table without a family column says nothing
        say(out, f"{title}: {NO_FAMILY_CHECKED}")
        show(out, by_device, lines)
        return
    show(out, by_family, by_device, lines)


def _device_order(device: str) -> tuple[int, tuple[int, ...], str]:
    """``9.0`` before ``12.1``; a spelling that is not a number (a hand-edited
    result) last, as it is."""
    try:
        return (0, tuple(int(part) for part in device.split(".")), "")
    except ValueError:
        return (1, (), device)


def device_entry(result: CellResult, device: str) -> str:
    """What a cell says of one device: ``✅``, ``❌ nvfp4`` (one failing family a
    line), ``➖`` (no family meant for it); empty if the cell did not ask for it."""
    status = cell_status(result)
    if status not in (PASSED, FAILED):
        return mark(status) if device in devices_of(result) else ""
    verdicts = [v for v in result.verdicts if v.device == device]
    if not verdicts:
        return ""
    failing = [v for v in verdicts if v.failing]
    if failing:
        return "\n".join(f"{mark(v.status)} {v.family}" for v in failing)
    if all(v.status == NOT_APPLICABLE for v in verdicts):
        return mark(NOT_APPLICABLE)
    return mark(PASSED)


def print_diff(diff: Diff, *, against: str = "the baseline") -> None:
    """The regressions first (all of them), then moves, new kernels and size
    changes (the first few of each; the reports have the rest)."""
    out = console()
    say(out, f"Against {against}: {diff.line()}")
    for kinds, title, limit in (
        (REGRESSION_KINDS, "REGRESSION", None),
        ((CELL_UNCHECKED,), "UNCHECKED", None),
        ((KERNEL_MOVED,), "moved", DIFF_LINES),
        ((KERNEL_NEW,), "new", DIFF_LINES),
        ((SIZE_CHANGED,), "size", DIFF_LINES),
    ):
        found = diff.of(*kinds)
        for finding in found[:limit]:
            say(out, f"  {title}: {finding.describe()}")
        if limit is not None and len(found) > limit:
            say(out, f"  {title}: … and {len(found) - limit} more")


def verdict_line(results: Sequence[CellResult], code: int, diff: Diff | None = None) -> str:
    """The final one-line verdict of a run."""
    count = status_counts(results)
    missing = sum(len(r.failing_verdicts) for r in results)
    word = {0: "OK", 1: "FAILED", 3: "ERROR"}.get(code, "ERROR")
    parts = [
        f"{count[PASSED]} passed",
        f"{count[FAILED]} failed ({missing} family × device missing or hollow)",
    ]
    skips = [skip_word(r) for r in results if cell_status(r) == SKIPPED]
    kinds = [f"{skips.count(w)} {w}" for w in SKIP_WORDS.values() if w in skips]
    parts += [counted(count[ERROR], "error"), f"{count[SKIPPED]} skipped"]
    if kinds:
        parts[-1] += f" ({', '.join(kinds)})"
    if count[NOT_RUN]:
        parts.append(f"{count[NOT_RUN]} not run")
    if diff is not None:
        parts.append(f"{counted(len(diff.regressions), 'regression')} vs baseline")
        if diff.unchecked:
            parts.append(f"{counted(len(diff.unchecked), 'baseline cell')} unchecked")
    if predicted(results):
        word += f" (predicted; {PREDICTED_NOTE})"
    return f"kernel-matrix: {word} — {', '.join(parts)} (exit {code})"
