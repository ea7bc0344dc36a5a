"""Checks that a run's reports never show a broken cell as passing, in every format.
Shared by the unit tests (hand-made results) and the integration tests (results of
real builds through the runner)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from junitparser import Error, Failure, JUnitXml

from orchestrator.judge.results import ERROR, NOT_RUN


def assert_reports_fail(out: Path, cell_id: str, status: str) -> None:
    """``out`` holds junit.xml, summary.md, index.html and results.json of a run in
    which cell ``cell_id`` (with result status ``status``) must not pass."""
    # JUnit: an error or a failure
    xml = JUnitXml.fromfile(str(out / "junit.xml"))
    results = [r for suite in xml for case in suite for r in case.result]
    assert any(isinstance(r, Failure | Error) for r in results)

    # Markdown: the verdict is not OK; the row is marked 💥, ❌, ⚠️ or ⏸️, never ✅ alone
    md = (out / "summary.md").read_text()
    assert "✅ OK" not in md.splitlines()[0]
    (row,) = [line for line in md.splitlines() if line.startswith(f"| {cell_id}")]
    assert re.search("💥|❌|⚠️|⏸️", row)

    # HTML: the verdict badge is not OK, and the cell is marked as a problem
    html = (out / "index.html").read_text()
    assert 'class="verdict ok"' not in html
    heatmap = html.split('id="heatmap"')[1].split("</table>")[0]
    assert 'data-status="passed"' not in heatmap
    assert re.search(r'class="badge s-(failed|error|not-run)"', heatmap)
    if status in (ERROR, NOT_RUN):
        assert "s-present" not in heatmap

    # JSON: the recorded exit code is not 0, and the cell is not passed (or, for a
    # hand-edited inconsistent input, its verdicts say it fails)
    merged = json.loads((out / "results.json").read_text())
    assert merged["run"]["exit_code"] != 0
    (mine,) = [c for c in merged["cells"] if c["cell"]["id"] == cell_id]
    assert mine["status"] != "passed" or any(
        v["status"] in ("missing", "hollow") for v in mine["verdicts"]
    )


def assert_console_fails(stdout: str, cell_id: str) -> None:
    """The console: the cell's line is not a pass, and the verdict line is not OK."""
    lines = [line for line in stdout.splitlines() if cell_id in line]
    assert lines and not any(re.search(rf"(✅|PASS) {re.escape(cell_id)} passed", s) for s in lines)
    verdict = stdout.strip().splitlines()[-1]
    assert verdict.startswith("kernel-matrix:") and "OK" not in verdict.split("—")[0]
