"""``summary.md``: the run for ``$GITHUB_STEP_SUMMARY`` and PR comments.

A verdict line, the failures with their causes, the regressions against a baseline,
then a grid of cells × families. GitHub refuses a step summary over 1 MiB, and a
large matrix (thousands of cells × dozens of families) can exceed it, so the
document is built within a byte budget, most important first: the verdict, the
failures, the regressions, then grid rows (failing cells before passing ones). What
does not fit is dropped with a note saying how much and where to find it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.common.words import counted
from orchestrator.judge.compare import (
    CELL_NEW,
    CELL_UNCHECKED,
    FAMILY_CHANGED,
    KERNEL_MOVED,
    KERNEL_NEW,
    REGRESSION_KINDS,
    SIZE_CHANGED,
    Diff,
    Finding,
)
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, NOT_MATCHED, PRESENT
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult
from orchestrator.reporting.cells import (
    NO_FAMILY_CHECKED,
    PREDICTED_NOTE,
    cell_status,
    clean,
    families_of,
    family_status,
    predicted,
    status_counts,
)

GITHUB_SUMMARY_LIMIT = 1024 * 1024  # bytes; GitHub rejects a larger step summary
DEFAULT_LIMIT = GITHUB_SUMMARY_LIMIT - 48 * 1024  # room for what else the job appends
FAILURE_ITEMS = 50
DIFF_ITEMS = 50
LOG_TAIL_LINES = 15

ICONS = {
    PRESENT: "✅",
    MISSING: "❌",
    HOLLOW: "⚠️",
    NOT_APPLICABLE: "➖",
    NOT_MATCHED: "❓",
    PASSED: "✅",
    FAILED: "❌",
    ERROR: "💥",
    NOT_RUN: "⏸️",
    SKIPPED: "➖",
}
WORDS = {0: "OK", 1: "FAILED", 2: "USAGE ERROR", 3: "ERROR"}
LEGEND = (
    "✅ present on every requested device · ❌ missing (on the devices named) · "
    "⚠️ hollow: loaded but compiled out or a trap · ✅ᴶ present only as PTX, JIT-compiled "
    "at first launch (on the devices named) · ❓ not matched: the family's rule does not fit "
    "the build (see the warning) · ➖ not applicable, or cell skipped · "
    "💥 build or probe error: not checked · ⏸️ not run: not checked"
)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!])")


def text(value: str) -> str:
    """Inline Markdown text: every character Markdown or HTML could act on escaped
    (kernel names are full of ``<``, ``>``, ``&``, ``*`` and ``|``)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(clean(value).split())).replace("&", "&amp;")


def code(value: str) -> str:
    """An inline code span that survives backticks inside ``value`` (not for tables:
    GitHub splits table cells at ``|`` even inside code)."""
    value = " ".join(clean(value).split())
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def fenced(lines: Sequence[str]) -> str:
    body = "\n".join(clean(line) for line in lines)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}"


@dataclass
class _Budget:
    """Markdown under a byte limit. ``reserve`` keeps room for the closing notes."""

    limit: int
    reserve: int = 4096
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: list[str] = field(default_factory=list)

    def fits(self, chunk: str) -> bool:
        return self.size + len(chunk.encode("utf-8")) + 1 + self.reserve <= self.limit

    def add(self, chunk: str, *, force: bool = False) -> bool:
        if not force and not self.fits(chunk):
            return False
        self.parts.append(chunk)
        self.size += len(chunk.encode("utf-8")) + 1
        return True

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


def headline(results: Sequence[CellResult], code_: int, diff: Diff | None) -> list[str]:
    counts = status_counts(results)
    missing = sum(len(r.failing_verdicts) for r in results)
    icon = "✅" if code_ == 0 else ("❌" if code_ == 1 else "💥")
    parts = [
        f"✅ {counts[PASSED]} passed",
        f"❌ {counts[FAILED]} failed ({missing} family × device missing or hollow)",
        f"💥 {counted(counts[ERROR], 'error')}",
    ]
    if counts[NOT_RUN]:
        parts.append(f"⏸️ {counts[NOT_RUN]} not run")
    parts.append(f"➖ {counts[SKIPPED]} skipped")
    lines = [f"## kernel-matrix: {icon} {WORDS.get(code_, 'ERROR')} (exit {code_})", ""]
    lines.append(f"**{counted(len(results), 'cell')}:** " + " · ".join(parts))
    cached = sum(r.cached for r in results)
    if cached:
        lines.append("")
        lines.append(
            f"{cached} of {counted(len(results), 'cell')} answered from the result cache "
            "(not rebuilt; their artifacts restored into this run's build directories)."
        )
    if predicted(results):
        lines += ["", f"_{PREDICTED_NOTE[0].upper()}{PREDICTED_NOTE[1:]}._"]
    if diff is not None:
        lines.append("")
        lines.append(f"**Against the baseline:** {text(diff.line())}")
    return lines


def failure_items(results: Sequence[CellResult]) -> list[str]:
    """One list item per failing family × device, per crashed or unrun cell."""
    items: list[str] = []
    for result in results:
        for verdict in result.failing_verdicts:
            item = (
                f"- {ICONS[verdict.status]} **{text(result.id)}** · {code(verdict.family)} "
                f"**{verdict.status}** on {text(verdict.device)}: {text(verdict.reason)}"
            )
            if verdict.cause and verdict.cause not in verdict.reason:
                item += f"\n  cause: {code(verdict.cause)}"
            items.append(item)
        status = cell_status(result)
        if status == FAILED and not result.failing_verdicts:
            items.append(f"- ❌ **{text(result.id)}** failed: {text(result.reason or '')}")
        if status in (ERROR, NOT_RUN):
            what = "build or probe error" if status == ERROR else "not run"
            reason = text(result.reason or f"status {result.status!r}")
            item = f"- {ICONS[status]} **{text(result.id)}** {what}: {reason}"
            if result.log:
                item += f" (log: {code(result.log)})"
            if result.log_tail:
                tail = result.log_tail[-LOG_TAIL_LINES:]
                block = "\n".join("  " + line for line in fenced(tail).splitlines())
                item += f"\n  <details><summary>last lines of the build log</summary>\n\n{block}\n\n  </details>"
            items.append(item)
    return items


def grid_row(result: CellResult, families: Sequence[str]) -> str:
    entries = []
    for family in families:
        shown = family_status(result, family)
        entry = ICONS.get(shown.status, shown.status)
        if shown.status in (MISSING, HOLLOW, NOT_MATCHED):
            entry += " " + text(", ".join(shown.devices))
            if shown.jit_devices:  # present elsewhere, only through JIT: say so too
                entry += " · ✅ᴶ " + text(", ".join(shown.jit_devices))
        elif shown.status == PRESENT and shown.jit_devices:
            entry += "ᴶ " + text(", ".join(shown.jit_devices))
        entries.append(entry)
    status = cell_status(result)
    return f"| {text(result.id)} | {ICONS[status]} {status} | " + " | ".join(entries) + " |"


def _finding_item(finding: Finding) -> str:
    icon = "❌" if finding.regression else ("💥" if finding.kind == CELL_UNCHECKED else "ℹ️")
    archs = f" [{text(', '.join(finding.archs))}]" if finding.archs else ""
    change = " → ".join(text(p) for p in (finding.before, finding.after) if p)
    subject = text(finding.subject) if finding.kind == CELL_UNCHECKED else code(finding.subject)
    return f"- {icon} **{text(finding.cell)}** · {subject}{archs}: {change}"


def _add_list(doc: _Budget, items: Sequence[str], limit: int, what: str) -> None:
    shown = 0
    for item in items[:limit]:
        if not doc.add(item):
            break
        shown += 1
    if shown < len(items):
        note = f"- … and {len(items) - shown} more {what} (see results.json / junit.xml)"
        doc.add(note, force=True)
        if shown < min(limit, len(items)):
            doc.truncated.append(what)


def render_markdown(
    results: Sequence[CellResult],
    *,
    exit_code: int,
    diff: Diff | None = None,
    limit: int = DEFAULT_LIMIT,
) -> str:
    doc = _Budget(limit)
    for line in headline(results, exit_code, diff):
        doc.add(line, force=True)

    failures = failure_items(results)
    if failures:
        doc.add("\n### Failures\n")
        _add_list(doc, failures, FAILURE_ITEMS, "failures")

    if diff is not None and diff.findings:
        doc.add("\n### Against the baseline\n")
        for kinds, title in (
            (REGRESSION_KINDS, "Regressions"),
            ((CELL_UNCHECKED,), "Not checked in this run"),
            ((KERNEL_MOVED,), "Moved (not regressions)"),
            ((KERNEL_NEW,), "New kernels"),
            ((SIZE_CHANGED,), "Size changes"),
            ((FAMILY_CHANGED, CELL_NEW), "Other changes"),
        ):
            found = diff.of(*kinds)
            if found:
                doc.add(f"**{title}** ({len(found)})\n")
                _add_list(doc, [_finding_item(f) for f in found], DIFF_ITEMS, title.lower())
                doc.add("")

    skipped = [r for r in results if cell_status(r) == SKIPPED]
    if skipped:
        doc.add("\n### Skipped cells\n")
        items = [
            f"- ➖ **{text(r.id)}** ({text(str(r.cell.get('status') or 'skipped'))}): "
            f"{text(r.reason or '')}"
            for r in skipped
        ]
        _add_list(doc, items, FAILURE_ITEMS, "skipped cells")

    families = families_of(results)
    doc.add("\n### Cells × families\n" if families else "\n### Cells\n")
    if not families:
        doc.add(f"_{NO_FAMILY_CHECKED.capitalize()}._\n", force=True)
    doc.add(
        "| cell | status | "
        + " | ".join(text(f) for f in families)
        + " |\n|---|---|"
        + "---|" * len(families),
        force=True,
    )
    rows = [grid_row(r, families) for r in results]
    # Failing, crashed and unrun cells first, then the rest, in matrix order.
    shown = [cell_status(r) for r in results]
    order = sorted(range(len(results)), key=lambda i: (shown[i] in (PASSED, SKIPPED), i))
    chosen: set[int] = set()
    for index in order:
        if not doc.fits(rows[index]):
            break
        chosen.add(index)
        doc.size += len(rows[index].encode("utf-8")) + 1
    doc.parts.extend(rows[i] for i in sorted(chosen))
    omitted = len(rows) - len(chosen)
    doc.add("")
    doc.add(LEGEND, force=True)
    if omitted:
        doc.truncated.append("grid rows")
        left_out = [shown[i] for i in range(len(rows)) if i not in chosen]
        what = ", ".join(
            f"{left_out.count(s)} {s}"
            for s in (FAILED, ERROR, NOT_RUN, PASSED, SKIPPED)
            if left_out.count(s)
        )
        doc.add(
            f"\n> **Truncated** to stay under GitHub's 1 MiB summary limit: {omitted} of "
            f"{len(rows)} grid rows omitted ({what}). Every cell is in results.json, "
            "junit.xml and the HTML report.",
            force=True,
        )
    elif doc.truncated:
        doc.add(
            "\n> **Truncated** to stay under GitHub's 1 MiB summary limit: "
            f"{', '.join(doc.truncated)} shortened. Everything is in results.json.",
            force=True,
        )
    return doc.text()
