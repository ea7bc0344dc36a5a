"""What the console prints, whatever the caller's terminal: a line the tool prints is
never cut by the console into pieces that a reader (or a grep) would not find."""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path

import pytest
from console_capture import capture_stdout, plain
from report_data import error_cell, not_run_cell, unsupported_cell
from rich.cells import cell_len
from synth import build_shared_object

from orchestrator.cli import main
from orchestrator.reporting.html import build_view, render_html
from orchestrator.reporting.markdown import render_markdown
from orchestrator.reporting.summary import print_summary


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


REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "reports" / "results.json"
# argv, and messages that a pipe must show whole, each on a line of its own
COMMANDS = {
    "plan": (
        ["plan", str(REPO / "matrix.yaml")],
        [
            "unsupported: cu12.4-10.0f: CUDA 12.4 cannot compile sm_100f: sm_100 is new in "
            "CUDA 12.8",
        ],
    ),
    "report": (
        ["report", str(FIXTURE), "--out", "{tmp}/out"],
        [
            "❌ cu12.9-12.1a: nvfp4 missing on 12.1: no kernel of nvfp4 is in any library; the "
            "build log says: Not building NVFP4 as no compatible archs found in "
            "TORCH_CUDA_ARCH_LIST=12.1a",
            "kernel-matrix: FAILED — 1 passed, 1 failed (2 family × device missing or hollow), "
            "1 error, 2 skipped (1 unsupported, 1 toolchain unavailable), 1 not run (exit 1)",
        ],
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_80_columns_on_a_terminal_and_in_a_pipe(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command][0]]
    pipe = capture_stdout(monkeypatch, 80, terminal=False)
    main(argv)
    terminal = capture_stdout(monkeypatch, 80, terminal=True)
    main(argv)
    piped, shown = plain(pipe.getvalue()), plain(terminal.getvalue())
    for text in (piped, shown):
        assert [line for line in text.splitlines() if line != line.rstrip()] == []
    # A terminal: nothing wider than it but a word longer than a line (a path).
    assert [
        line for line in shown.splitlines() if cell_len(line) > 80 and " " in line.strip()
    ] == []
    # Wrapped between words only: the same words, in the same order, as the pipe's.
    assert shown.split() == piped.split()
    assert shown.splitlines() != piped.splitlines()  # (the terminal did wrap)
    # A pipe: each message whole, on one line (a log is grepped by line).
    for message in COMMANDS[command][1]:
        assert message in piped.splitlines()


def test_a_ci_log_gets_each_skip_reason_of_the_plan_as_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = capture_stdout(monkeypatch, 160, terminal=False)  # a CI log's width
    assert main(["plan", str(REPO / "matrix.yaml")]) == 0
    assert (
        "unsupported: cu12.8-9.0a_10.0f_12.0a_12.1a: CUDA 12.8 cannot compile sm_100f: "
        "family ('f') targets are new in CUDA 12.9; CUDA 12.8 cannot compile sm_121a: sm_121 "
        "is new in CUDA 12.9"
    ) in plain(pipe.getvalue()).splitlines()


def test_a_run_where_every_cell_errored_says_no_family_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = [error_cell(), unsupported_cell(), not_run_cell()]  # no verdict anywhere
    pipe = capture_stdout(monkeypatch, 160, terminal=False)
    print_summary(results)
    lines = plain(pipe.getvalue()).splitlines()
    assert lines[0] == (
        "kernel-matrix: no family was checked: every cell errored, was skipped or did not run"
    )
    assert "cells × families" not in pipe.getvalue()
    # the cells are still listed, with their status
    assert [line.split()[:2] for line in lines if line.startswith(" cu")] == [
        ["cu12.8-10.0f", "error"],
        ["cu12.8-12.1a", "skipped"],
        ["cu13.0-9.0a", "not-run"],
    ]
    markdown = render_markdown(results, exit_code=3)
    assert "### Cells × families" not in markdown
    assert "### Cells\n" in markdown and "_No family was checked: every cell errored" in markdown
    html = render_html(build_view(results, exit_code=3, verdict="ERROR"))
    assert ">Cells</h2>" in html and "No family was checked: every cell errored" in html
