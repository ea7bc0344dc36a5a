"""What the console prints, whatever the caller's terminal: a line the tool prints is
never cut by the console into pieces that a reader (or a grep) would not find."""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path

import pytest
from synth import build_shared_object

from orchestrator.cli import main


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_a_library_without_device_code_is_one_line_in_a_narrow_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deep path makes the line longer than COLUMNS: a pipe is not a terminal, so the
    # console must not break it (a grep for "lib.so: no device code" finds it).
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    (deep / "lib.so").write_bytes(build_shared_object([], with_fatbin=False))
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = run_cli(["probe", str(deep / "lib.so")], monkeypatch)
    assert (code, err) == (0, "")
    assert out == f"{deep / 'lib.so'}: no device code\n"
