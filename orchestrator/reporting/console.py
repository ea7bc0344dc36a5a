"""The terminal: rich output that stays readable in CI logs (no colour, no TTY).

Two rules hold for everything printed through :func:`console`: no line ends in
blanks (rich pads table cells to the width; a log, a diff or a copy-paste should not
carry them), and a message -- a verdict, a reason, a skipped cell's why -- is printed
with :func:`say`: on a terminal it wraps between words with a hanging indent, in a
log or a pipe it stays one line whatever the width, so that grep finds it whole."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from typing import IO, Any, cast

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment

CI_WIDTH = 160
HANGING_INDENT = 4
# A line's end: blanks mixed with the style codes that close its cells.
_LINE_END = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+(?=\n)")
_STYLE_CODE = re.compile(r"\x1b\[[0-9;]*m")


def _without_blanks(end: re.Match[str]) -> str:
    return "".join(_STYLE_CODE.findall(end[0]))


class _TrimmedStream:
    """A text stream that drops the blanks at the end of each line written to it
    (rich writes each print whole, so a line's end is always in the same write)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_LINE_END.sub(_without_blanks, text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, flush ...
        return getattr(self._stream, name)


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr (looked up at call time, so that
    redirected streams are honoured). Rich honours NO_COLOR itself; without a terminal we
    widen the default 80 columns so tables do not wrap in CI logs."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", CI_WIDTH))
    trimmed = cast(IO[str], _TrimmedStream(stream))  # a stream in all but its type
    return Console(file=trimmed, width=width, highlight=False, soft_wrap=False)


def wrap_words(text: str, width: int, indent: int = HANGING_INDENT) -> list[str]:
    """``text`` in lines of at most ``width`` columns, broken only between words, each
    line after the first indented by ``indent``; a word longer than a line (a path, a
    flag list) stays whole on a line of its own.

    >>> wrap_words("unsupported: cu12.4-10.0f: CUDA 12.4 cannot compile sm_100f", 30)
    ['unsupported: cu12.4-10.0f:', '    CUDA 12.4 cannot compile', '    sm_100f']
    >>> wrap_words("log: /a/very/long/path/that/does/not/fit", 12)
    ['log:', '    /a/very/long/path/that/does/not/fit']
    >>> wrap_words("   | a  b", 80)
    ['   | a  b']
    """
    lines: list[str] = []
    hang = " " * indent
    for paragraph in text.split("\n"):
        first, *words = paragraph.split(" ")
        line = first
        for word in words:
            if line == hang and not word:
                continue  # no run of blanks at the start of a continuation line
            candidate = f"{line} {word}"
            if line.strip() and cell_len(candidate) > width:
                lines.append(line)
                line = hang + word
            else:
                line = candidate
        lines.append(line)
    return lines


class Message:
    """One message (a verdict, a reason, a skipped cell's why): wrapped between
    words with a hanging indent on a terminal, one unbroken line elsewhere. Print it
    with ``crop=False`` (:func:`say` does), or a console crops it at its width."""

    def __init__(self, text: str, indent: int = HANGING_INDENT) -> None:
        self.text, self.indent = text, indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines: Iterator[str] | list[str] = (
            wrap_words(self.text, options.max_width, self.indent)
            if options.is_terminal
            else self.text.split("\n")
        )
        for line in lines:
            yield Segment(line)
            yield Segment.line()


def say(out: Console, text: str, indent: int = HANGING_INDENT) -> None:
    """Print one message (see :class:`Message`); never read as rich markup."""
    out.print(Message(text, indent), crop=False)


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
