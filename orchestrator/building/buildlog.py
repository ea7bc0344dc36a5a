"""Reading a cell's build log: the lines that say a kernel family was not built
("Not building NVFP4 as no compatible archs found ..."), the warnings, the last lines,
and the line that says why the failed step failed, in the words of the tool that
failed (not pip's "error: subprocess-exited-with-error" around it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# A kernel family skipped by its guard leaves one of these lines (vLLM spelling,
# and the sample extension's).
# ("skipping" ... "kernels"/"archs" is two linear searches: one regex with ".*" between
# them backtracks quadratically on a long line of "skipping skipping ...".)
_NOT_BUILDING = re.compile(r"\bnot building\b", re.IGNORECASE)
_SKIPPING = re.compile(r"\bskipping\b", re.IGNORECASE)
_KERNELS_OR_ARCHS = re.compile(r"\b(kernels?|archs?)\b", re.IGNORECASE)
WARNING_LINE = re.compile(r"\bwarning\b", re.IGNORECASE)
MAX_WARNINGS_KEPT = 50
# A line that says why a build failed: a compiler's "file(1): error: ...", "fatal
# error:", "CMake Error at ...", a Python exception ("ModuleNotFoundError: No module
# named 'torch'", "subprocess.CalledProcessError: ...").
_ERROR = re.compile(r"\b(error|fatal)\b\s*:|^CMake Error\b|\bNo module named\b", re.IGNORECASE)
_PYTHON_EXCEPTION = re.compile(r"^([A-Za-z_]\w*\.)*[A-Z]\w*(Error|Exception):")
# Any warning before the match makes it a warning (torch's "UserWarning: Failed to
# initialize NumPy: No module named 'numpy'").
_WARNING_WORD = re.compile(r"warning\b", re.IGNORECASE)
# Lines that look like errors and say where to look, not what failed: pip's own
# around a failed subprocess (its diagnostics are kebab-case codes), and git's answer
# to a version lookup outside a checkout, which setup.py scripts shrug off.
_WRAPPER = re.compile(
    r"^error: [a-z]+(-[a-z]+)+$"  # error: subprocess-exited-with-error, metadata-generation-failed
    r"|^ERROR: (Failed building wheel|Failed to build|Could not build wheels|Command errored out)"
)
_NOISE = re.compile(r"^fatal: not a git repository\b")
# "CMake Error at CMakeLists.txt:12 (find_package):" says where; the next line says what.
_CMAKE_HEADER = re.compile(r"^CMake Error\b.*:$")
MAX_ERROR_CHARS = 300


@dataclass
class LogFindings:
    skip_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_lines: list[str] = field(default_factory=list)
    first_error: str | None = None  # why the last command failed (see ErrorLine)


def is_skip_line(text: str) -> bool:
    """A line saying a kernel family was not built ("Not building ...", "Skipping ...
    kernels/archs"), in time linear in its length.

    >>> is_skip_line("Not building NVFP4 as no compatible archs found"), is_skip_line("-- ok")
    (True, False)
    >>> is_skip_line("Skipping Marlin kernels"), is_skip_line("skipping " * 100_000)
    (True, False)
    """
    if _NOT_BUILDING.search(text):
        return True
    skipping = _SKIPPING.search(text)
    return skipping is not None and _KERNELS_OR_ARCHS.search(text, skipping.end()) is not None


def error_kind(text: str) -> str | None:
    """``"error"`` for a line that says what failed, ``"wrapper"`` for one that only
    says that something did (pip's), None for any other (``text`` stripped).

    >>> error_kind("ModuleNotFoundError: No module named 'torch'")
    'error'
    >>> error_kind("error: subprocess-exited-with-error")
    'wrapper'
    >>> error_kind("torch/_tensor.py:12: UserWarning: Failed to initialize NumPy: No module named 'numpy'")
    >>> error_kind("kernels.cu(3): error: identifier \\"x\\" is undefined")
    'error'
    """
    if _WRAPPER.search(text):
        return "wrapper"
    if _NOISE.search(text):
        return None
    found = _ERROR.search(text) or _PYTHON_EXCEPTION.search(text)
    if found is None or _WARNING_WORD.search(text, 0, found.start()):
        return None
    return "error"


class ErrorLine:
    """Fed a log line by line, the line that says why its last command failed: the
    first error line after the last ``$ command`` line (a CMake error with the line
    after it), else pip's first wrapper line, else None."""

    def __init__(self) -> None:
        self._restart()

    def _restart(self) -> None:
        self._error: str | None = None
        self._wrapper: str | None = None
        self._continues = False  # the error is a CMake header: the next line says what

    def feed(self, line: str) -> None:
        if line.startswith("$ "):  # a new command: what came before it succeeded
            self._restart()
            return
        text = line.lstrip("- ").strip()
        if self._continues:
            if text:
                self._error = f"{self._error} {text}"
                self._continues = False
            return
        if self._error is not None:
            return
        kind = error_kind(text)
        if kind == "error":
            self._error = text
            self._continues = bool(_CMAKE_HEADER.match(text))
        elif kind == "wrapper" and self._wrapper is None:
            self._wrapper = text

    @property
    def line(self) -> str | None:
        found = self._error or self._wrapper
        return found[:MAX_ERROR_CHARS] if found else None


def scan_log(path: Path, *, tail: int = 30) -> LogFindings:
    """Skip lines ("Not building ..."), warnings, the last lines of a build log, and
    the line that says why its last command failed."""
    findings = LogFindings()
    if not path.is_file():
        return findings
    recent: list[str] = []
    error = ErrorLine()
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            text = line.lstrip("- ").strip()
            error.feed(line)
            if is_skip_line(text) and text not in findings.skip_lines:
                findings.skip_lines.append(text)
            elif WARNING_LINE.search(text) and len(findings.warnings) < MAX_WARNINGS_KEPT:
                findings.warnings.append(text)
            recent.append(line)
            if len(recent) > tail:
                recent.pop(0)
    findings.last_lines = recent
    findings.first_error = error.line
    return findings
