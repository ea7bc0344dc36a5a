"""What ``kernel-matrix check`` prints: the families × devices table, the reason of every
missing or hollow pair, and the verdict line, last."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from orchestrator.common.words import counted
from orchestrator.judge.check import CheckResult
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    NOT_APPLICABLE,
    NOT_MATCHED,
    PRESENT,
    Verdict,
)
from orchestrator.reporting.console import console, mark, say
from orchestrator.reporting.device_view import DeviceReport, print_device_report
from orchestrator.reporting.summary import failure_lines
from orchestrator.reporting.tables import FamilyRow, family_device_view

ELAPSED = "{:.1f} s"  # how long the check took, in its verdict line


def verdict_line(result: CheckResult, report: DeviceReport | None = None) -> str:
    """The final line: ``kernel-matrix: FAILED — 24 family × device pairs missing ...``
    (and, with the driver's confirmation, how many families it disagrees with)."""
    count = result.counts()
    exit_code = report.exit_code if report else result.exit_code
    word = "FAILED" if exit_code else "OK"
    parts = [
        f"{count[PRESENT]} present",
        f"{count[MISSING]} missing",
        f"{count[HOLLOW]} hollow",
        f"{count[NOT_APPLICABLE]} not applicable",
    ]
    if count[NOT_MATCHED]:
        parts.insert(3, f"{count[NOT_MATCHED]} not matched (the profile may not fit)")
    if report and report.confirmation is not None:
        parts.append(f"the driver disagrees on {report.disagreements}")
    return (
        f"kernel-matrix: {word} — {counted(len(result.families), 'family', 'families')} × "
        f"{counted(len(result.devices), 'device')}: {', '.join(parts)} "
        f"({ELAPSED.format(result.seconds)}, exit {exit_code})"
    )


def _table_status(verdict: Verdict) -> str:
    """A verdict's status for a table's mark: ``present-jit`` (✅ᴶ) where it is
    present only through PTX JIT."""
    return "present-jit" if verdict.jit_only else verdict.status


def verdict_mark(verdict: Verdict) -> str:
    """A verdict's mark in a table: ✅ᴶ where it is present only through PTX JIT."""
    return mark(_table_status(verdict))


def print_check(result: CheckResult, report: DeviceReport | None = None) -> None:
    """The table (families × devices), the reason of every missing or hollow pair,
    what ``report`` adds for this machine's GPUs, and the verdict line, last."""
    out = console()
    title = ", ".join(Path(p).name for p in result.paths)
    rows = []
    for family in result.families:
        hollow, unjudged = result.hollow_in[family], result.not_judged.get(family, ())
        built = " ".join(
            name + ("°" if name in unjudged else "")
            for name in result.built_for[family]
            if name not in hollow
        )
        if hollow:
            built += ("; " if built else "") + "hollow in " + " ".join(hollow)
        if family in result.mismatch:
            built = "(rule does not fit: see warning)"
        statuses = tuple(_table_status(result.verdict(family, d)) for d in result.devices)
        rows.append(FamilyRow(family, built, statuses))
    family_device_view(
        out,
        f"{title}: kernel families × devices (code the driver loads)",
        rows,
        [str(d) for d in result.devices],
        code_header="built for",
    )
    if any(result.not_judged.values()):
        say(
            out,
            "° not judged: no requested device loads it, so its kernels were not analysed "
            "(`kernel-matrix probe` judges every code object)",
        )
    if result.unread:
        say(
            out,
            f"note: PTX not read ({' '.join(result.unread)}): in its fatbin a cubin serves "
            "every requested device it could JIT for, so the driver never loads it there",
        )
    for family, why in result.mismatch.items():
        say(out, f"warning: {family} not matched: {why}")
    failing = [v for v in result.failing if v.status != NOT_MATCHED]  # (warned above)
    for line in failure_lines(failing):
        say(out, line)
    if result.libraries_read == 0:
        say(out, "note: no library that a family can be in was found")
    if result.unclaimed:
        say(
            out,
            f"note: {counted(len(result.unclaimed), 'library', 'libraries')} no family claims, "
            "not read: " + ", ".join(PurePosixPath(name).name for name in result.unclaimed),
        )
    for path in result.outside_libraries:
        say(
            out,
            f"warning: {path} matches no family's `libraries` glob, so no family is looked "
            "for in it (a glob with / is anchored on the path's last components): give the "
            "file's path inside its package (…/vllm/_C.abi3.so) or check the wheel",
        )
    if report is not None:
        print_device_report(report)
    say(out, verdict_line(result, report))
