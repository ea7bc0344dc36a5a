"""The nightly history: one small entry per run, appended to ``reports/history.json``.

It feeds the trend in the HTML report and finds "the previous night" for the
kernel-level diff: each entry points at that run's ``baseline.json`` (a kernel
summary, see :mod:`orchestrator.judge.baseline`), so the history itself stays small.

Appends are atomic (temp file + rename) and serialised by a lock file, so two CI
jobs reporting at once cannot lose each other's entry; reporting the same run
directory again replaces its entry instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from orchestrator.common.errors import InputFileError
from orchestrator.common.fsutil import cache_root, load_json_file, write_json
from orchestrator.common.yamlfile import check_artifact, shorten
from orchestrator.judge.expect import FAILING
from orchestrator.judge.results import CellResult
from orchestrator.reporting.cells import status_counts

HISTORY_SCHEMA_VERSION = 1
MAX_ENTRIES = 1000  # about three years of nights; older entries are dropped


@dataclass
class HistoryEntry:
    run: str  # a label: the date of a nightly, or the run id
    written: str  # UTC, ISO 8601
    dir: str  # the run's report directory, relative to the history file's folder
    counts: dict[str, int]  # cells per status
    failing: int  # family × device pairs missing or hollow
    families: dict[str, dict[str, int]] = field(default_factory=dict)  # family -> status -> n
    kernels: int = 0  # distinct (cell, kernel) pairs probed
    exit_code: int = 0
    regressions: int | None = None  # against the previous entry, when it could be compared
    baseline: str | None = None  # that run's baseline.json, relative like ``dir``

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEntry:
        return cls(
            run=str(data["run"]),
            written=str(data["written"]),
            dir=str(data["dir"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            failing=int(data["failing"]),
            families={
                str(f): {str(s): int(n) for s, n in v.items()}
                for f, v in data.get("families", {}).items()
            },
            kernels=int(data.get("kernels", 0)),
            exit_code=int(data.get("exit_code", 0)),
            regressions=data.get("regressions"),
            baseline=data.get("baseline"),
        )


def relative(path: Path, history_file: Path) -> str:
    """``path`` as the history file refers to it (relative to its folder, POSIX)."""
    return Path(os.path.relpath(path.resolve(), history_file.resolve().parent)).as_posix()


def make_entry(
    results: Sequence[CellResult],
    *,
    run: str,
    written: str,
    out_dir: Path,
    history_file: Path,
    exit_code: int,
    regressions: int | None,
    baseline_file: Path | None,
) -> HistoryEntry:
    families: dict[str, dict[str, int]] = {}
    for result in results:
        for verdict in result.verdicts:
            by_status = families.setdefault(verdict.family, {})
            by_status[verdict.status] = by_status.get(verdict.status, 0) + 1
    kernels = sum(
        len(
            {k.name for lib in r.inventory.libraries for c in lib.code_objects() for k in c.kernels}
        )
        for r in results
        if r.inventory is not None
    )
    return HistoryEntry(
        run=run,
        written=written,
        dir=relative(out_dir, history_file),
        counts=status_counts(results),
        failing=sum(1 for r in results for v in r.verdicts if v.status in FAILING),
        families=families,
        kernels=kernels,
        exit_code=exit_code,
        regressions=regressions,
        baseline=relative(baseline_file, history_file) if baseline_file else None,
    )


def load_history(path: Path) -> list[HistoryEntry]:
    """The entries of a history file, oldest first; none if it does not exist yet."""
    try:
        data = load_json_file(path, InputFileError, what="kernel-matrix history file")
    except FileNotFoundError:
        return []
    if isinstance(data, dict) and data.get("schema_version") != HISTORY_SCHEMA_VERSION:
        raise InputFileError(
            f"{path}: not a kernel-matrix history file: unsupported schema_version "
            f"{shorten(data.get('schema_version'))} (this kernel-matrix reads {HISTORY_SCHEMA_VERSION})"
        )
    check_artifact(data, "history.schema.json", path=path, what="history file")
    try:
        return [HistoryEntry.from_json(e) for e in data["runs"]]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path}: not a kernel-matrix history file ({exc})") from None


def previous_entry(entries: Sequence[HistoryEntry], current_dir: str) -> HistoryEntry | None:
    """The previous night: the entry before ``current_dir``'s own (when the run is
    reported again), else the latest entry."""
    for index, entry in enumerate(entries):
        if entry.dir == current_dir:
            return entries[index - 1] if index else None
    return entries[-1] if entries else None


def lock_file(path: Path) -> Path:
    """The lock serialising appends to the history file ``path``: in the cache, not
    next to the history (a lock file stays behind after its last use, and a reports
    folder is published as is)."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"history-{key}.lock"


def append_history(path: Path, entry: HistoryEntry) -> list[HistoryEntry]:
    """Append ``entry`` (or replace, in place, the entry of the same directory) and
    return the whole history, oldest first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file(path)), timeout=120):
        entries = load_history(path)
        same = [i for i, e in enumerate(entries) if e.dir == entry.dir]
        if same:  # the same run reported again: keep its place in the history
            entries[same[0]] = entry
            entries = [e for i, e in enumerate(entries) if i not in same[1:]]
        else:
            entries.append(entry)
        entries = entries[-MAX_ENTRIES:]
        write_json(
            path,
            {"schema_version": HISTORY_SCHEMA_VERSION, "runs": [e.to_json() for e in entries]},
        )
    return entries
