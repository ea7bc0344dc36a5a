"""Writing a run's reports from its cell results (possibly merged from many CI jobs).

One directory per run, every file written atomically::

    results.json   the merged run (schema: orchestrator/schemas/results.schema.json)
    junit.xml      one suite per cell, one case per family × device
    summary.md     for $GITHUB_STEP_SUMMARY and PR comments (under 1 MiB)
    index.html     self-contained report: heatmap, drill-down, diffs, history
    baseline.json  this run's kernel summary: next night's "previous", or a new baseline

With a history file (``reports/history.json``) the run is appended to it, and the
HTML report compares the kernels with the previous night's ``baseline.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.common.errors import KernelMatrixError
from orchestrator.common.fsutil import write_atomic, write_json
from orchestrator.judge.baseline import Baseline, load_baseline, save_baseline, summarize
from orchestrator.judge.compare import Diff, combined_exit_code, compare
from orchestrator.judge.results import RESULT_SCHEMA_VERSION, CellResult, exit_code
from orchestrator.reporting.cells import failing_pairs, status_counts
from orchestrator.reporting.history import (
    HistoryEntry,
    append_history,
    load_history,
    make_entry,
    previous_entry,
    relative,
)
from orchestrator.reporting.html import build_view, render_html
from orchestrator.reporting.junit import write_junit
from orchestrator.reporting.markdown import DEFAULT_LIMIT, render_markdown
from orchestrator.reporting.summary import verdict_line

RESULTS_JSON = "results.json"
JUNIT_XML = "junit.xml"
SUMMARY_MD = "summary.md"
INDEX_HTML = "index.html"
BASELINE_JSON = "baseline.json"


def merged_json(
    results: Sequence[CellResult], *, exit_code: int | None = None, diff: Diff | None = None
) -> dict[str, Any]:
    """The whole run as one document (``results.json``); ``kernel-matrix report``
    reads it back like the cell files it was merged from."""
    run: dict[str, Any] = {
        "tool_version": __version__,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cells": len(results),
        "status_counts": status_counts(results),
        "failing_pairs": failing_pairs(results),
    }
    if exit_code is not None:
        run["exit_code"] = exit_code
    data: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "run": run,
        "cells": [r.to_json() for r in results],
    }
    if diff is not None:
        data["baseline_diff"] = diff.to_json()
    return data


@dataclass
class Reports:
    """What :func:`write_all` wrote and found."""

    out_dir: Path
    paths: list[Path] = field(default_factory=list)
    exit_code: int = 0
    diff: Diff | None = None  # against the given baseline
    previous: Diff | None = None  # against the previous night in the history
    previous_run: str | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_all(
    results: Sequence[CellResult],
    out_dir: Path,
    *,
    baseline: Baseline | None = None,
    history_file: Path | None = None,
    run_label: str | None = None,
    strict: bool = False,
    title: str = "kernel-matrix",
    summary_limit: int = DEFAULT_LIMIT,
) -> Reports:
    """Write every report of a run into ``out_dir`` (see the module docstring)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = Reports(out_dir)
    summary = summarize(results)
    reports.diff = compare(baseline, summary) if baseline is not None else None
    reports.exit_code = combined_exit_code(exit_code(results, strict=strict), reports.diff)
    verdict = verdict_line(results, reports.exit_code, reports.diff)

    history: list[HistoryEntry] = []
    current_dir = ""
    history_href = ""
    if history_file is not None:
        history = load_history(history_file)
        current_dir = relative(out_dir, history_file)
        history_href = _href(history_file.resolve().parent, out_dir)
        previous = previous_entry(history, current_dir)
        if previous is not None:
            reports.previous_run = previous.run
            reports.previous = _previous_diff(history_file, previous, summary, reports.notes)

    def put(name: str, text: str) -> None:
        write_atomic(out_dir / name, text)
        reports.paths.append(out_dir / name)

    baseline_path = out_dir / BASELINE_JSON
    save_baseline(summary, baseline_path)
    reports.paths.append(baseline_path)
    write_json(
        out_dir / RESULTS_JSON, merged_json(results, exit_code=reports.exit_code, diff=reports.diff)
    )
    reports.paths.append(out_dir / RESULTS_JSON)
    reports.paths.append(write_junit(results, out_dir / JUNIT_XML))
    put(
        SUMMARY_MD,
        render_markdown(
            results, exit_code=reports.exit_code, diff=reports.diff, limit=summary_limit
        ),
    )

    if history_file is not None:
        entry = make_entry(
            results,
            run=run_label or out_dir.name,
            written=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            out_dir=out_dir,
            history_file=history_file,
            exit_code=reports.exit_code,
            regressions=len(reports.previous.regressions) if reports.previous else None,
            baseline_file=baseline_path,
        )
        history = append_history(history_file, entry)
        reports.history = history
        reports.paths.append(history_file)

    view = build_view(
        results,
        exit_code=reports.exit_code,
        verdict=verdict,
        title=title,
        previous=reports.previous,
        previous_label=reports.previous_run,
        baseline=reports.diff,
        history=history,
        current_dir=current_dir or None,
        history_href=history_href,
    )
    view.notes.extend(reports.notes)
    put(INDEX_HTML, render_html(view))
    return reports


def _href(folder: Path, out_dir: Path) -> str:
    """The URL prefix leading from ``out_dir``'s index.html to ``folder``."""
    rel = Path(os.path.relpath(folder, out_dir.resolve())).as_posix()
    return "" if rel == "." else rel + "/"


def _previous_diff(
    history_file: Path, previous: HistoryEntry, summary: Baseline, notes: list[str]
) -> Diff | None:
    """The kernel-level diff against the previous night, when its summary is still
    there (reports/ may have been pruned: that is a note, not an error)."""
    if previous.baseline is None:
        notes.append(f"The previous run {previous.run} has no kernel summary to compare with.")
        return None
    path = history_file.parent / previous.baseline
    try:
        return compare(load_baseline(path), summary)
    except KernelMatrixError as exc:
        notes.append(f"Could not compare with the previous run {previous.run}: {exc}")
        return None


def write_reports(
    results: Sequence[CellResult],
    out_dir: Path,
    *,
    baseline: Baseline | None = None,
    history_file: Path | None = None,
    strict: bool = False,
) -> list[Path]:
    """Write every report of a run into ``out_dir``; returns the paths written."""
    return write_all(
        results, out_dir, baseline=baseline, history_file=history_file, strict=strict
    ).paths
