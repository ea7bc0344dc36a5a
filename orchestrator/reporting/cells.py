"""What one cell says of one family, in one word, shared by every writer.

The console, Markdown, HTML and JUnit writers all ask this module, so they can never
disagree, and in particular a cell that did not build (error), was interrupted
(not-run) or was skipped can never show as a pass in one format and not another.

>>> from orchestrator.judge.results import CellResult
>>> family_status(CellResult(cell={"id": "c"}, status="error"), "nvfp4").status
'error'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.judge.expect import HOLLOW, MISSING, NOT_APPLICABLE, NOT_MATCHED, PRESENT
from orchestrator.judge.results import ERROR, FAILED, NOT_RUN, PASSED, SKIPPED, CellResult

# Worst first: the status a family shows in a grid is the worst over its devices.
_FAMILY_ORDER = (MISSING, NOT_MATCHED, HOLLOW, PRESENT, NOT_APPLICABLE)
CELL_STATUSES = (FAILED, ERROR, NOT_RUN, PASSED, SKIPPED)


@dataclass(frozen=True)
class FamilyStatus:
    """A family in a cell: ``missing`` on ``("12.1",)``; or the cell's own status
    (``error``, ``not-run``, ``skipped``) when the cell was never checked."""

    status: str
    devices: tuple[str, ...] = ()  # the devices where ``status`` holds
    jit_devices: tuple[str, ...] = ()  # present devices that only JIT it from PTX

    @property
    def checked(self) -> bool:
        return self.status in _FAMILY_ORDER


def cell_status(result: CellResult) -> str:
    """The status a report shows for a cell. Normally ``result.status``; but a merged,
    possibly hand-edited input cannot make a cell look better than its verdicts: a
    "passed" cell with a failing verdict shows as failed, an unknown status as error.
    """
    if result.status == PASSED and (result.failing_verdicts or result.archs_without_code):
        return FAILED
    if result.status not in CELL_STATUSES:
        return ERROR
    return result.status


def family_status(result: CellResult, family: str) -> FamilyStatus:
    """The worst verdict of ``family`` over the cell's devices. A cell that was not
    checked (error, not-run, skipped) gives its own status for every family."""
    status = cell_status(result)
    if status not in (PASSED, FAILED):
        return FamilyStatus(status)
    verdicts = [v for v in result.verdicts if v.family == family]
    for status in _FAMILY_ORDER:
        devices = tuple(v.device for v in verdicts if v.status == status)
        if devices:
            jit = tuple(v.device for v in verdicts if v.jit_only)
            return FamilyStatus(status, devices, jit)
    return FamilyStatus(NOT_APPLICABLE)


# What every report says instead of a cells × families table without a family column.
NO_FAMILY_CHECKED = "no family was checked: every cell errored, was skipped or did not run"


def families_of(results: Sequence[CellResult]) -> list[str]:
    """Every family named by any cell, in first-seen order (none when no cell was
    checked: the reports then say :data:`NO_FAMILY_CHECKED`)."""
    seen: dict[str, None] = {}
    for result in results:
        for verdict in result.verdicts:
            seen.setdefault(verdict.family, None)
    return list(seen)


def devices_of(result: CellResult) -> list[str]:
    """The devices the cell asked for (from the plan, else from its verdicts)."""
    devices = [str(d) for d in result.cell.get("devices") or ()]
    if not devices:
        devices = list(dict.fromkeys(v.device for v in result.verdicts))
    return devices


# The two kinds of skipped cell, as plan and run both name them (plan.py's statuses).
SKIP_WORDS = {"unsupported": "unsupported", "toolchain-unavailable": "toolchain unavailable"}


def skip_word(result: CellResult) -> str:
    """Why a skipped cell was skipped, in the plan's word: ``unsupported`` (the CUDA
    version cannot compile a target) or ``toolchain unavailable``."""
    return SKIP_WORDS.get(str(result.cell.get("status")), SKIPPED)


def skip_reason(result: CellResult) -> str:
    """The skip reason without the word ``skip_word`` already says."""
    reason = result.reason or ""
    word = skip_word(result)
    return reason[len(word) + 1 :].strip() if reason.startswith(word + ":") else reason


def status_word(result: CellResult) -> str:
    """The cell's status as a report shows it: a configure-tier verdict is a
    prediction (nothing was compiled), so it reads ``predicted to pass``, never
    ``passed``.

    >>> from orchestrator.judge.results import CellResult
    >>> guess = CellResult(cell={"id": "c"}, status=PASSED, tier="configure")
    >>> status_word(guess), status_word(CellResult(cell={"id": "c"}, status=PASSED))
    ('predicted to pass', 'passed')
    """
    status = cell_status(result)
    if result.tier == "configure" and status in (PASSED, FAILED):
        return "predicted to pass" if status == PASSED else "predicted to fail"
    return status


def predicted(results: Sequence[CellResult]) -> bool:
    """Whether the verdicts are predictions (configure tier: nothing was compiled)."""
    checked = [r for r in results if r.status in (PASSED, FAILED)]
    return bool(checked) and all(r.tier == "configure" for r in checked)


PREDICTED_NOTE = (
    "configure tier: every verdict is predicted from CMake configure (each source's "
    "-gencode flags); nothing was compiled"
)


def status_counts(results: Sequence[CellResult]) -> dict[str, int]:
    counts = dict.fromkeys(CELL_STATUSES, 0)
    for result in results:
        counts[cell_status(result)] += 1
    return counts


def failing_pairs(results: Sequence[CellResult]) -> int:
    return sum(len(r.failing_verdicts) for r in results)


# --- text that comes from build logs --------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
# Characters XML 1.0 cannot carry at all (and that no report reader wants).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def clean(text: str | None) -> str:
    """Log text made safe for every format: ANSI colour codes dropped, control
    characters (illegal in XML 1.0, so fatal in junit.xml) replaced.

    >>> clean("\\x1b[31merror\\x1b[0m: bad\\x07 byte")
    'error: bad\\ufffd byte'
    """
    if not text:
        return ""
    return _NOT_XML.sub("\ufffd", _ANSI.sub("", text))
