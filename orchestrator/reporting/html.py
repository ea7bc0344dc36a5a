"""The HTML report (``index.html``): one self-contained page per run.

A heatmap of cells × families, a drill-down per cell (archs, the verdict of every
family on every device, kernels with their sizes per arch, libraries, log excerpts),
the kernel-level diff against the previous night and against a baseline, and the
trend over the nights in the history file.

Self-contained on purpose: CSS and JS are inline and nothing is fetched, so the page
works as a CI artifact, from a file share, or offline. Everything from a build
(kernel names such as ``foo<int, &bar>``, log lines) goes through Jinja2's
autoescaping; the Python side only prepares plain data for the template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from orchestrator import __version__
from orchestrator.judge.baseline import KernelCopy, kernel_copies
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
from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, NOT_MATCHED, PRESENT, Verdict
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult
from orchestrator.reporting.cells import (
    NO_FAMILY_CHECKED,
    cell_status,
    clean,
    devices_of,
    failing_pairs,
    families_of,
    family_status,
    predicted,
    status_counts,
    status_word,
)
from orchestrator.reporting.history import HistoryEntry

KERNELS_PER_FAMILY = 200
OTHER_KERNELS = 300
DIFF_ROWS = 300
TREND_RUNS = 60
LOG_LINES = 60

GLYPHS = {
    PRESENT: "✓",
    MISSING: "✗",
    HOLLOW: "◌",
    NOT_APPLICABLE: "·",
    NOT_MATCHED: "?",
    PASSED: "✓",
    FAILED: "✗",
    ERROR: "E",
    NOT_RUN: "…",
    SKIPPED: "–",
}
LEGEND = (
    (PRESENT, "present on every requested device"),
    (MISSING, "missing on a requested device"),
    (HOLLOW, "hollow: loaded, but compiled out or a trap"),
    (NOT_MATCHED, "not matched: the family's rule does not fit the build"),
    (NOT_APPLICABLE, "not applicable"),
    (ERROR, "build/probe error: not checked"),
    (NOT_RUN, "not run: not checked"),
    (SKIPPED, "cell skipped"),
)
TREND_ORDER = (PASSED, FAILED, ERROR, NOT_RUN, SKIPPED)


@dataclass(frozen=True)
class HeatCell:
    status: str
    glyph: str
    title: str


@dataclass(frozen=True)
class HeatRow:
    id: str
    anchor: str
    status: str
    glyph: str
    word: str  # the status as shown (cells.status_word)
    cells: tuple[HeatCell, ...]


@dataclass(frozen=True)
class KernelLine:
    name: str
    copies: tuple[KernelCopy, ...]
    served: bool = True  # served on some device (False: built, but for other archs)


@dataclass(frozen=True)
class FamilyView:
    name: str
    verdicts: tuple[Verdict, ...]
    kernels: tuple[KernelLine, ...]
    more: int  # kernels not listed


@dataclass(frozen=True)
class LibraryView:
    path: str
    cubins: tuple[str, ...]
    ptx: tuple[str, ...]
    kernels: int
    size: int


@dataclass
class CellView:
    id: str
    anchor: str
    status: str
    glyph: str
    word: str  # the status as shown: "passed", or "predicted to pass" (configure tier)
    reason: str
    meta: list[tuple[str, str]]
    families: list[FamilyView]
    other_kernels: list[KernelLine]
    more_kernels: int
    libraries: list[LibraryView]
    skip_lines: list[str]
    warnings: list[str]
    log_tail: list[str]
    archs_without_code: list[str]


@dataclass(frozen=True)
class DiffSection:
    title: str
    kind: str  # regression | unchecked | info
    findings: tuple[Finding, ...]
    more: int
    subject: str = "kernel"  # the column heading of Finding.subject
    sizes: bool = False  # show the size delta column


@dataclass(frozen=True)
class DiffView:
    title: str
    summary: str
    sections: tuple[DiffSection, ...]
    exit_code: int


@dataclass(frozen=True)
class TrendBar:
    x: float
    label: str
    title: str
    current: bool
    segments: tuple[tuple[str, float, float], ...]  # (status, y, height)


@dataclass
class TrendView:
    width: int
    height: int
    bars: list[TrendBar]
    failing_points: str  # SVG polyline points of missing/hollow pairs
    rows: list[tuple[HistoryEntry, str]]  # newest first, with a link to its report
    max_cells: int
    max_failing: int
    bar: int = 26  # bar width in px


@dataclass
class ReportView:
    title: str
    generated: str
    tool_version: str
    exit_code: int
    verdict: str
    counts: dict[str, int]
    failing: int
    families: list[str]
    heatmap: list[HeatRow]
    cells: list[CellView]
    legend: list[tuple[str, str, str]]
    previous: DiffView | None
    previous_label: str | None
    baseline: DiffView | None
    trend: TrendView | None
    notes: list[str] = field(default_factory=list)
    predicted: bool = False  # configure tier: the verdict is a prediction


def anchor(cell_id: str) -> str:
    """An HTML id for a cell (``cell-cu13.0-12.1a``); characters outside
    ``[A-Za-z0-9._-]`` become ``_``."""
    return "cell-" + re.sub(r"[^A-Za-z0-9._-]", "_", cell_id)


def _heat_row(result: CellResult, families: Sequence[str]) -> HeatRow:
    cells = []
    for family in families:
        status = family_status(result, family)
        if status.status in (MISSING, HOLLOW, NOT_MATCHED):
            title = f"{family}: {status.status} on {', '.join(status.devices)}"
            if status.jit_devices:
                title += f"; present only as PTX, JIT-compiled, on {', '.join(status.jit_devices)}"
        elif status.status == PRESENT:
            title = f"{family}: present on {', '.join(status.devices)}"
            if status.jit_devices:
                title += f" (only as PTX, JIT-compiled, on {', '.join(status.jit_devices)})"
        elif status.status == NOT_APPLICABLE:
            title = f"{family}: not applicable"
        else:
            title = f"{family}: not checked, the cell is {status.status}"
        cells.append(HeatCell(status.status, GLYPHS[status.status], title))
    overall = cell_status(result)
    return HeatRow(
        result.id, anchor(result.id), overall, GLYPHS[overall], status_word(result), tuple(cells)
    )


def _cell_view(result: CellResult, families: Sequence[str]) -> CellView:
    info = result.cell
    meta = [
        ("CUDA", str(info.get("cuda", ""))),
        ("arch list", str(info.get("archs", ""))),
        ("devices", ", ".join(devices_of(result))),
        ("backend", str(info.get("backend", ""))),
        ("toolchain", result.toolchain or "–"),
        ("tier", result.tier),
        ("duration", f"{result.duration_s:.1f} s (build {result.build_s:.1f} s)"),
        (
            "cached",
            "yes: not rebuilt, artifacts restored from the result cache" if result.cached else "no",
        ),
        ("build dir", result.build_dir or "–"),
        ("log", result.log or "–"),
    ]
    if info.get("gencode"):
        meta.append(("gencode", " ".join(str(g) for g in info["gencode"])))
    copies = kernel_copies(result.inventory, result.id) if result.inventory else {}
    listed: set[str] = set()
    family_views = []
    for family in families:
        verdicts = tuple(v for v in result.verdicts if v.family == family)
        if not verdicts:
            continue
        names = sorted({k for v in verdicts for k in v.kernels})
        listed.update(names)
        lines = tuple(KernelLine(n, copies.get(n, ())) for n in names[:KERNELS_PER_FAMILY])
        family_views.append(
            FamilyView(family, verdicts, lines, max(0, len(names) - KERNELS_PER_FAMILY))
        )
    others = [n for n in copies if n not in listed]
    libraries = []
    if result.inventory:
        for lib in result.inventory.libraries:
            kernels = {k.name for c in lib.code_objects() for k in c.kernels}
            size = sum(k.size for c in lib.cubins for k in c.kernels)
            libraries.append(
                LibraryView(
                    lib.path,
                    tuple(c.arch.name for c in lib.cubins),
                    tuple(p.arch.name for p in lib.ptx),
                    len(kernels),
                    size,
                )
            )
    return CellView(
        id=result.id,
        anchor=anchor(result.id),
        status=cell_status(result),
        word=status_word(result),
        glyph=GLYPHS[cell_status(result)],
        reason=clean(result.reason) or _failing_summary(result),
        meta=meta,
        families=family_views,
        other_kernels=[KernelLine(n, copies[n], False) for n in others[:OTHER_KERNELS]],
        more_kernels=max(0, len(others) - OTHER_KERNELS),
        libraries=libraries,
        skip_lines=[clean(s) for s in result.skip_lines],
        warnings=[clean(s) for s in result.warnings[-LOG_LINES:]],
        log_tail=[clean(s) for s in result.log_tail[-LOG_LINES:]],
        archs_without_code=list(result.archs_without_code),
    )


def _failing_summary(result: CellResult) -> str:
    """``nvfp4 missing on 12.1; mla hollow on 10.0``: why a failed cell failed."""
    return "; ".join(f"{v.family} {v.status} on {v.device}" for v in result.failing_verdicts)


def diff_view(diff: Diff, title: str) -> DiffView:
    sections = []
    for kinds, name, kind, subject in (
        (REGRESSION_KINDS, "Regressions", "regression", "family on device / kernel"),
        ((CELL_UNCHECKED,), "Cells not checked in this run", "unchecked", "cell"),
        ((KERNEL_MOVED,), "Kernels moved to another library (not regressions)", "info", "kernel"),
        ((KERNEL_NEW,), "New kernels", "info", "kernel"),
        ((SIZE_CHANGED,), "Size changes", "info", "kernel"),
        ((FAMILY_CHANGED, CELL_NEW), "Other changes", "info", "what"),
    ):
        found = diff.of(*kinds)
        if found:
            sections.append(
                DiffSection(
                    name,
                    kind,
                    tuple(found[:DIFF_ROWS]),
                    max(0, len(found) - DIFF_ROWS),
                    subject,
                    sizes=kinds == (SIZE_CHANGED,),
                )
            )
    return DiffView(title, diff.line(), tuple(sections), diff.exit_code)


def relative_href(path: str) -> str:
    """A link to another report, relative and percent-encoded: text from a history
    file can never become a ``javascript:`` or off-site URL (autoescaping stops
    markup, not a hostile URL scheme).

    >>> relative_href("../2026-01-02/index.html")
    '../2026-01-02/index.html'
    >>> relative_href("javascript:alert(1)//index.html")
    'javascript%3Aalert%281%29/index.html'
    >>> relative_href("//evil.example/x")
    './evil.example/x'
    """
    parts = [quote(part, safe="-._~") for part in path.split("/")]
    href = "/".join(parts)
    href = re.sub("/{2,}", "/", href)
    return "./" + href.lstrip("/") if href.startswith("/") else href


def trend_view(
    history: Sequence[HistoryEntry], current_dir: str | None, history_href: str = ""
) -> TrendView | None:
    """Stacked bars of cell statuses per run and a line of missing/hollow pairs, as
    plain SVG numbers (no charting library: the page must work offline).
    ``history_href`` leads from this report to the history file's folder."""
    runs = list(history)[-TREND_RUNS:]
    if not runs:
        return None
    bar, gap, height = 26, 16, 160
    max_cells = max(max(sum(e.counts.values()) for e in runs), 1)
    max_failing = max(max(e.failing for e in runs), 1)
    bars = []
    points = []
    for index, entry in enumerate(runs):
        x = 40 + index * (bar + gap)
        y = float(height)
        segments = []
        for status in TREND_ORDER:
            n = entry.counts.get(status, 0)
            if n:
                h = n / max_cells * (height - 10)
                y -= h
                segments.append((status, round(y, 1), round(h, 1)))
        parts = ", ".join(f"{entry.counts.get(s, 0)} {s}" for s in TREND_ORDER)
        title = f"{entry.run}: {parts}; {entry.failing} family × device missing/hollow"
        bars.append(
            TrendBar(float(x), entry.run[-5:], title, entry.dir == current_dir, tuple(segments))
        )
        fy = height - entry.failing / max_failing * (height - 10)
        points.append(f"{x + bar / 2:.1f},{fy:.1f}")
    return TrendView(
        width=40 + len(runs) * (bar + gap) + 20,
        height=height,
        bars=bars,
        failing_points=" ".join(points),
        rows=[(e, relative_href(f"{history_href}{e.dir}/index.html")) for e in reversed(runs)],
        max_cells=max_cells,
        max_failing=max_failing,
        bar=bar,
    )


def build_view(
    results: Sequence[CellResult],
    *,
    exit_code: int,
    verdict: str,
    title: str = "kernel-matrix",
    previous: Diff | None = None,
    previous_label: str | None = None,
    baseline: Diff | None = None,
    history: Sequence[HistoryEntry] = (),
    current_dir: str | None = None,
    history_href: str = "",
) -> ReportView:
    families = families_of(results)
    notes = [] if families else [f"{NO_FAMILY_CHECKED.capitalize()}."]
    if previous is None and history:
        notes.append("No previous night with a kernel summary to compare with.")
    return ReportView(
        title=title,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        tool_version=__version__,
        exit_code=exit_code,
        verdict=verdict,
        predicted=predicted(results),
        counts=status_counts(results),
        failing=failing_pairs(results),
        families=families,
        heatmap=[_heat_row(r, families) for r in results],
        cells=[_cell_view(r, families) for r in results],
        legend=[(s, GLYPHS[s], text) for s, text in LEGEND],
        previous=diff_view(previous, f"Against the previous night ({previous_label})")
        if previous
        else None,
        previous_label=previous_label,
        baseline=diff_view(baseline, "Against the baseline") if baseline else None,
        trend=trend_view(history, current_dir, history_href),
        notes=notes,
    )


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("orchestrator.reporting", "templates"),
        # Every template is HTML: escape by default, whatever the file name.
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["size"] = human_size
    env.filters["anchor"] = anchor
    return env


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``.

    >>> human_size(512), human_size(1536), human_size(3 * 1024 * 1024)
    ('512 B', '1.5 KiB', '3.0 MiB')
    """
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def render_html(view: ReportView) -> str:
    return _environment().get_template("report.html.j2").render(view=view)
