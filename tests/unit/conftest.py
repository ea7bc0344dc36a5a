"""Unit tests live in one folder per stage (tests/unit/<stage>/, as orchestrator/ is
laid out); the helpers they share (synth, package_index, report_data, report_checks)
stay here. pytest puts this folder on sys.path because this conftest is in it."""

import pytest


@pytest.fixture(autouse=True)
def caller_terminal_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's terminal size must not change a test's outcome: the console reads
    COLUMNS (and rich LINES) when stdout is not a terminal. A test that cares about the
    width sets COLUMNS itself."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
