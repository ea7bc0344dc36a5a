"""The console as a user sees it, for tests: stdout as a terminal or as a pipe, at a
given width (COLUMNS), with its text freed of colour and style codes."""

from __future__ import annotations

import io
import re
import sys

import pytest

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Pipe(io.StringIO):
    """A stdout that is not a terminal, in UTF-8 (the console shows marks as emoji)."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class Terminal(Pipe):
    """A stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def capture_stdout(monkeypatch: pytest.MonkeyPatch, width: int, *, terminal: bool) -> io.StringIO:
    """Replace stdout by a terminal or a pipe of ``width`` columns; read it later."""
    stream = Terminal() if terminal else Pipe()
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


def plain(text: str) -> str:
    """``text`` without ANSI codes (a terminal gets bold and italics even with NO_COLOR)."""
    return _ANSI.sub("", text)
