"""The HTML report in a real headless Chromium: it loads from a file with no network,
its script runs (a #cell link opens that cell's drill-down), and the heatmap,
drill-down and history render. Takes a screenshot; set KERNEL_MATRIX_SCREENSHOTS=DIR
to keep it (CI uploads it as an artifact).

Needs the Debian/Ubuntu package ``chromium`` (``apt-get install -y chromium``); this
test installs nothing and is skipped without it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from orchestrator.judge.expect import MISSING
from orchestrator.judge.results import load_results
from orchestrator.reporting.writers import write_all

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reports" / "results.json"
CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
WIDTH, HEIGHT = 1400, 1800

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"
    ),
]


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI containers run as root or without user namespaces
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two nights of the fixture run, the second with a regression."""
    root = tmp_path_factory.mktemp("reports")
    history = root / "history.json"
    write_all(load_results([FIXTURE]), root / "2025-01-01", history_file=history)
    worse = load_results([FIXTURE])
    passed = next(r for r in worse if r.status == "passed")
    passed.verdicts[0] = dataclasses.replace(passed.verdicts[0], status=MISSING, served_by=())
    passed.settle()
    write_all(worse, root / "2025-01-02", history_file=history)
    return root / "2025-01-02" / "index.html"


def test_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        f"--window-size={WIDTH},{HEIGHT}",
        report.as_uri(),  # the top: verdict, heatmap, diff, history
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) > 50_000  # a rendered page, not a blank one
    keep = os.environ.get("KERNEL_MATRIX_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "report.png")


def test_key_elements_render(report: Path, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", report.as_uri() + "#cell-cu12.9-12.1a")
    # heatmap: 6 cells × 4 families, the missing and hollow squares among them
    assert len(re.findall(r'<td class="h s-', dom)) == 24
    assert 'class="h s-missing"' in dom and 'class="h s-hollow"' in dom
    assert 'class="h s-error"' in dom and 'class="h s-not-run"' in dom
    # drill-down: the script opened the cell named in the URL, and only that one
    opened = re.findall(r'<details class="cell" id="([^"]+)"[^>]*open=""', dom)
    assert opened == ["cell-cu12.9-12.1a"]
    assert "Not building NVFP4" in dom
    assert "foo&lt;int, &amp;bar&gt;(float*)" in dom
    # history: two nights, the diff against the first
    assert len(re.findall(r'<g class="bar">', dom)) == 2
    assert 'id="history-table"' in dom
    assert "Against the previous night (2025-01-01)" in dom
    assert "family lost" in dom or "nvfp4 on 12.1" in dom
