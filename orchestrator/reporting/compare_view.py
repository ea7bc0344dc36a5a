"""What ``kernel-matrix compare`` prints: per cell, the family × device pairs that
regressed (with the head's cause, and the line that governed the family on the base)
and that got fixed, and how many did not change;
then the kernel details, what the code weighs (bytes per target and per family that
changed, and the total; or why that is not known), and one verdict line, last. ``--markdown`` gives the same
as a block for a step summary or a pull-request comment."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from orchestrator.common.words import counted, format_size, signed_size
from orchestrator.judge.compare import (
    CELL_UNCHECKED,
    FAMILY_DOWNGRADED,
    KERNEL_REGRESSION_KINDS,
    Diff,
)
from orchestrator.reporting.console import console, say

KERNEL_LINES = 20  # kernel details shown on the console; --json has them all
FAMILY_SIZE_LINES = 20  # families whose size changed, shown per cell; --json has them all


def _by_cell(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        out[entry["cell"]].append(entry)
    return out


def _pair_line(entry: dict[str, Any]) -> str:
    line = f"{entry['family']} on {entry['device']}: {entry['base']} -> {entry['head']}"
    if entry["kind"] == FAMILY_DOWNGRADED:
        line += " (downgrade: reached only by PTX JIT now)"
    if entry.get("cause"):
        line += f"; cause: {entry['cause']}"
    if entry.get("base_cause"):
        line += f"; on the base: {entry['base_cause']}"
    return line


def _causes(entry: dict[str, Any]) -> str:
    """The Markdown cause cell: the head's cause, and what governed the family on the
    base where that is known (``CMakeLists.txt:366: …; on the base: CMakeLists.txt:675: …``)."""
    on_base = f"on the base: {entry['base_cause']}" if entry.get("base_cause") else ""
    return "; ".join(text for text in (entry.get("cause", ""), on_base) if text)


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
    for line in size_lines(data):
        say(out, line)
    say(out, verdict_line(diff, data))


def _change(row: dict[str, Any]) -> str:
    """``0 B -> 27.8 KiB (+27.8 KiB)``, with the stored bytes where they differ."""
    text = f"{format_size(row['base'])} -> {format_size(row['head'])} ({signed_size(row['delta'])}"
    if "stored_delta" in row and (row["base_stored"], row["head_stored"]) != (
        row["base"],
        row["head"],
    ):
        text += f"; stored {signed_size(row['stored_delta'])}"
    return text + ")"


def _family_change(row: dict[str, Any]) -> str:
    by_target = ", ".join(f"{t} {signed_size(d)}" for t, d in row["targets"].items())
    return f"{_change(row)[:-1]}: {by_target})"


def size_lines(data: dict[str, Any]) -> list[str]:
    """The size table for the console: per cell, the total, the targets and families
    whose bytes changed; one line for cells whose sizes are not known."""
    cells = data.get("sizes", [])
    if not cells:
        return []
    whys = {entry["why"] for entry in cells if not entry["known"]}
    if all(not entry["known"] for entry in cells) and len(whys) == 1:
        return [f"sizes: {whys.pop()}"]
    lines = ["sizes (code bytes, uncompressed; stored: as in the fatbin), base -> head:"]
    for entry in cells:
        if not entry["known"]:
            lines.append(f"  {entry['cell']}: sizes {entry['why']}")
            continue
        unchanged = not entry["targets"] and not entry["families"]
        lines.append(
            f"  {entry['cell']}: total {_change(entry['total'])}"
            + (", unchanged" if unchanged else "")
        )
        lines += [f"    {row['target']}: {_change(row)}" for row in entry["targets"]]
        families = entry["families"]
        lines += [
            f"    family {row['family']}: {_family_change(row)}"
            for row in families[:FAMILY_SIZE_LINES]
        ]
        if len(families) > FAMILY_SIZE_LINES:
            lines.append(
                f"    … and {len(families) - FAMILY_SIZE_LINES} more families (--json lists them)"
            )
    files = data.get("files")
    if files:
        changed = files.get("libraries", [])
        lines.append(
            f"files: {format_size(files['base'])} -> {format_size(files['head'])} "
            f"({signed_size(files['delta'])})"
            + ("; the libraries in them that changed, as stored there:" if changed else "")
        )
        lines += [f"  {row['library']}: {_change(row)}" for row in changed[:FAMILY_SIZE_LINES]]
        if len(changed) > FAMILY_SIZE_LINES:
            lines.append(f"  … and {len(changed) - FAMILY_SIZE_LINES} more (--json lists them)")
    return lines


def size_markdown(data: dict[str, Any]) -> list[str]:
    """The size table as Markdown: one row per cell total, changed target and
    changed family (families: the bytes of their kernels' code)."""
    cells = data.get("sizes", [])
    if not cells:
        return []
    whys = {entry["why"] for entry in cells if not entry["known"]}
    if all(not entry["known"] for entry in cells) and len(whys) == 1:
        return [f"Sizes: {whys.pop()}.", ""]
    lines = [
        "**Sizes** (code bytes, uncompressed; stored: as in the fatbin)",
        "",
        "| cell | code | base | head | change |",
        "| --- | --- | --- | --- | --- |",
    ]

    def row(cell: str, what: str, entry: dict[str, Any]) -> str:
        change = _change(entry).split(" (", 1)[1][:-1]
        cells_ = (cell, what, format_size(entry["base"]), format_size(entry["head"]), change)
        return "| " + " | ".join(_md(c) for c in cells_) + " |"

    for entry in cells:
        if not entry["known"]:
            lines.append(f"| {_md(entry['cell'])} | — | — | — | {_md(entry['why'])} |")
            continue
        lines.append(row(entry["cell"], "total", entry["total"]))
        lines += [row(entry["cell"], r["target"], r) for r in entry["targets"]]
        for r in entry["families"][:FAMILY_SIZE_LINES]:
            by_target = ", ".join(f"{t} {signed_size(d)}" for t, d in r["targets"].items())
            lines.append(row(entry["cell"], f"family {r['family']} ({by_target})", r))
        if len(entry["families"]) > FAMILY_SIZE_LINES:
            more = len(entry["families"]) - FAMILY_SIZE_LINES
            lines.append(f"| {_md(entry['cell'])} | … {more} more families (--json) | | | |")
    files = data.get("files")
    if files:
        lines.append(row("", "files", files))
        for r in files.get("libraries", [])[:FAMILY_SIZE_LINES]:
            lines.append(row("", f"file {r['library']}", r))
    return [*lines, ""]


def compare_markdown(diff: Diff, data: dict[str, Any]) -> str:
    """Regressions and fixes only, as a step summary or a PR comment."""
    lines = [f"### kernel-matrix compare: {verdict_line(diff, data).split(': ', 1)[1]}", ""]
    for title, entries in (("Regressions", data["regressions"]), ("Fixed", data["fixed"])):
        if not entries:
            continue
        lines += [f"**{title}**", "", "| cell | family | device | base | head | cause |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for e in entries:
            cells = (e["cell"], e["family"], e["device"], e["base"], e["head"], _causes(e))
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")
    if not data["regressions"] and not data["fixed"]:
        lines += ["No family × device changed on any requested device.", ""]
    lines += size_markdown(data)
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else "—"
