"""What ``kernel-matrix compare`` prints: per cell, the family × device pairs that
regressed (with the head's cause) and that got fixed, and how many did not change;
then the kernel details, and one verdict line, last. ``--markdown`` gives the same
as a block for a step summary or a pull-request comment."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from orchestrator.common.words import counted
from orchestrator.judge.compare import (
    CELL_UNCHECKED,
    FAMILY_DOWNGRADED,
    KERNEL_REGRESSION_KINDS,
    Diff,
)
from orchestrator.reporting.console import console, say

KERNEL_LINES = 20  # kernel details shown on the console; --json has them all


def _by_cell(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        out[entry["cell"]].append(entry)
    return out


def _pair_line(entry: dict[str, Any]) -> str:
    line = f"{entry['family']} on {entry['device']}: {entry['base']} -> {entry['head']}"
    if entry["kind"] == FAMILY_DOWNGRADED:
        line += " (downgrade: reached only by PTX JIT now)"
    return line + (f"; cause: {entry['cause']}" if entry.get("cause") else "")


def verdict_line(diff: Diff, data: dict[str, Any]) -> str:
    word = "FAILED" if diff.exit_code == 1 else "ERROR" if diff.exit_code else "OK"
    kernels = len(diff.of(*KERNEL_REGRESSION_KINDS))
    return (
        f"kernel-matrix compare: {word} — "
        f"{counted(len(data['regressions']), 'family × device regression')}, "
        f"{len(data['fixed'])} fixed, {sum(data['unchanged'].values())} "
        f"unchanged, {counted(kernels, 'kernel regression')}"
        + (" (not failing without --strict-kernels)" if kernels and not diff.strict else "")
        + f" (exit {diff.exit_code})"
    )


def print_compare(diff: Diff, data: dict[str, Any]) -> None:
    out = console()
    regressions, fixed = _by_cell(data["regressions"]), _by_cell(data["fixed"])
    say(out, f"kernel-matrix compare: {data['base']} -> {data['head']}")
    for cell, unchanged in data["unchanged"].items():
        say(
            out,
            f"{cell}: {len(regressions[cell])} regressed, {len(fixed[cell])} fixed, "
            f"{unchanged} unchanged",
        )
        for entry in regressions[cell]:
            say(out, f"  REGRESSION: {_pair_line(entry)}")
        for entry in fixed[cell]:
            say(out, f"  fixed: {_pair_line(entry)}")
    for finding in diff.of(CELL_UNCHECKED):
        say(out, f"UNCHECKED: {finding.describe()}")
    kernel = diff.of(*KERNEL_REGRESSION_KINDS)
    for finding in kernel[:KERNEL_LINES]:
        say(out, f"  kernel: {finding.describe()}")
    if len(kernel) > KERNEL_LINES:
        say(out, f"  kernel: … and {len(kernel) - KERNEL_LINES} more (--json lists them)")
    say(out, verdict_line(diff, data))


def compare_markdown(diff: Diff, data: dict[str, Any]) -> str:
    """Regressions and fixes only, as a step summary or a PR comment."""
    lines = [f"### kernel-matrix compare: {verdict_line(diff, data).split(': ', 1)[1]}", ""]
    for title, entries in (("Regressions", data["regressions"]), ("Fixed", data["fixed"])):
        if not entries:
            continue
        lines += [f"**{title}**", "", "| cell | family | device | base | head | cause |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for e in entries:
            cells = (e["cell"], e["family"], e["device"], e["base"], e["head"], e["cause"])
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")
    if not data["regressions"] and not data["fixed"]:
        lines += ["No family × device changed on any requested device.", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else "—"
