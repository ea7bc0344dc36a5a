"""The terminal: rich output that stays readable in CI logs (no colour, no TTY)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

CI_WIDTH = 160


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (looked up at call time, so that
    redirected streams are honoured). Rich honours NO_COLOR itself; without a terminal we
    widen the default 80 columns so tables do not wrap in CI logs."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", CI_WIDTH))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


# --- run output -----------------------------------------------------------------------

MARKS = {
    "present": "✅",
    "present-jit": "✅ᴶ",  # present only as PTX, JIT-compiled at first launch
    "missing": "❌",
    "hollow": "⚠️",
    "not-applicable": "➖",
    "not-matched": "❓",
    "passed": "✅",
    "failed": "❌",
    "error": "💥",
    "skipped": "➖",
    "not-run": "⏸",
}
ASCII_MARKS = {
    "present": "ok",
    "present-jit": "ok(jit)",
    "missing": "MISSING",
    "hollow": "HOLLOW",
    "not-applicable": "-",
    "not-matched": "NOT-MATCHED",
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "not-run": "NOT-RUN",
}


def mark(status: str) -> str:
    """A status as an emoji, or as ASCII where the terminal cannot show emoji."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    table = MARKS if "utf" in encoding else ASCII_MARKS
    return table.get(status, status)
