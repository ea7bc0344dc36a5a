"""Interruption and resume, by stopping a real run: ``python -m orchestrator run`` on
three cells of the sample extension (``--jobs 1 --no-cache``), stopped in turn by
Ctrl-C (SIGINT), by SIGTERM (what CI timeouts send) and by SIGKILL, each time
resumed with ``--resume``.

After every stop: the exit code (130, 143; -9 for the kill), every finished
cell's result intact and valid, the others ``not-run``, no build process left
(and after SIGKILL, the builds it could not stop are stopped by the next run
before it builds in the same tree). A resumed run builds only what did not finish:
finished cells' result files and logs are unchanged, byte for byte and by mtime,
and the resumed run never starts them. The last resume completes with exit 0.

Three cells are built once each, plus three builds cut short: about 30 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion
from orchestrator.building.recipe import processes_building_in
from orchestrator.judge.results import load_cell_result
from orchestrator.toolchains import cuda as toolchain

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"
CELLS = ("cu13.0-9.0a", "cu13.0-12.0a", "cu13.0-12.1a")


@dataclass
class Snapshot:
    """A finished cell's files, to prove a resumed run left them alone."""

    result: bytes
    result_mtime: int
    log: bytes
    log_mtime: int


class Run:
    """One ``kernel-matrix run`` of the three cells, in the background."""

    def __init__(self, root: Path, *, resume: bool) -> None:
        self.out, self.build = root / "out", root / "build"
        matrix = root / "m.yaml"
        if not matrix.exists():
            matrix.write_text(
                f"project: {{source: {SAMPLE}, artifacts: ['*.so']}}\ncuda: ['13.0']\n"
                f"archs: ['9.0a', '12.0a', '12.1a']\nfamilies: {SAMPLE / 'families.yaml'}\n"
            )
        argv = [
            sys.executable, "-m", "orchestrator", "run", str(matrix), "--jobs", "1",
            "--no-cache", "--out", str(self.out), "--build-dir", str(self.build),
        ]  # fmt: skip
        if resume:
            argv.append("--resume")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        )

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 180
        while not condition():
            assert self.proc.poll() is None, f"the run ended before {what}: {self.finish()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def finish(self, signum: int | None = None) -> tuple[int, str, str]:
        if signum is not None:
            self.proc.send_signal(signum)
        stdout, stderr = self.proc.communicate(timeout=120)
        return self.proc.returncode, stdout, stderr


def statuses(out: Path) -> dict[str, str]:
    found = {}
    for path in (out / "cells").glob("*.json"):
        try:
            found[path.stem] = json.loads(path.read_text())["status"]
        except (OSError, ValueError):  # (written atomically: never half a file)
            raise AssertionError(f"{path} is not a whole result") from None
    return found


def finished(out: Path) -> set[str]:
    return {cell for cell, status in statuses(out).items() if status != "not-run"}


def building(out: Path, cell: str) -> Callable[[], bool]:
    """The compiler is at work on ``cell`` -- in this run: an earlier attempt's log
    says so too, until this run starts the cell again and rewrites it."""
    log = out / "logs" / f"{cell}.log"
    since = time.time_ns()

    def now_building() -> bool:
        try:
            fresh = log.stat().st_mtime_ns > since
            return fresh and "Building CUDA object" in log.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return now_building


def snapshot(out: Path, cell: str) -> Snapshot:
    result, log = out / "cells" / f"{cell}.json", out / "logs" / f"{cell}.log"
    return Snapshot(
        result.read_bytes(), result.stat().st_mtime_ns, log.read_bytes(), log.stat().st_mtime_ns
    )


def assert_kept(out: Path, kept: dict[str, Snapshot]) -> None:
    for cell, before in kept.items():
        assert snapshot(out, cell) == before, f"{cell} was touched by a resumed run"
        result = load_cell_result(out / "cells" / f"{cell}.json")  # valid, and whole
        assert result.status == "passed" and result.inventory is not None


def assert_no_build_left(build: Path) -> None:
    for cell in CELLS:
        assert not processes_building_in(build / cell), f"{cell}: build processes left"


def error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("kernel-matrix: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_ctrl_c_sigterm_and_sigkill_then_resume(tmp_path: Path) -> None:
    toolchain.provision(CudaVersion(13, 0))  # cached: the clock is for the builds
    first, second, third = CELLS

    # 1. Ctrl-C once the first cell's result exists (the second is building).
    run = Run(tmp_path, resume=False)
    run.wait_for(lambda: first in finished(run.out), f"{first}'s result")
    run.wait_for(building(run.out, second), f"{second}'s build")
    code, stdout, stderr = run.finish(signal.SIGINT)
    assert code == 130, stdout[-2000:] + stderr
    assert "interrupted by Ctrl-C (SIGINT): 1 of 3 cells finished and kept" in error_line(stderr)
    assert statuses(run.out) == {first: "passed", second: "not-run", third: "not-run"}
    assert_no_build_left(run.build)
    kept = {first: snapshot(run.out, first)}
    assert_kept(run.out, kept)
    assert (run.out / "junit.xml").is_file()  # the reports of what there is

    # 2. Resume; SIGTERM once the second cell finished (the third is building).
    run = Run(tmp_path, resume=True)
    run.wait_for(lambda: second in finished(run.out), f"{second}'s result")
    run.wait_for(building(run.out, third), f"{third}'s build")
    code, stdout, stderr = run.finish(signal.SIGTERM)
    assert code == 143, stdout[-2000:] + stderr
    assert "interrupted by SIGTERM: 2 of 3 cells finished and kept" in error_line(stderr)
    assert f"▶ {first}" not in stdout  # not rebuilt
    assert statuses(run.out) == {first: "passed", second: "passed", third: "not-run"}
    assert_no_build_left(run.build)
    assert_kept(run.out, kept)
    kept[second] = snapshot(run.out, second)

    # 3. Resume; SIGKILL the orchestrator itself while the third cell compiles. It
    # cannot clean up: its compilers go on (they are held here, SIGSTOPped, so that
    # they are certainly still there when the next run starts).
    run = Run(tmp_path, resume=True)
    run.wait_for(building(run.out, third), f"{third}'s build")
    code, stdout, _ = run.finish(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert f"▶ {first}" not in stdout and f"▶ {second}" not in stdout
    orphans = processes_building_in(run.build / third)
    assert orphans, "a killed run leaves its build processes behind"
    for pid in orphans:
        os.kill(pid, signal.SIGSTOP)
    assert statuses(run.out) == {first: "passed", second: "passed", third: "not-run"}
    assert_kept(run.out, kept)

    # 4. Resume from what is on disk: only the third cell is built, after the
    # leftovers of the killed run are stopped; exit 0.
    run = Run(tmp_path, resume=True)
    code, stdout, stderr = run.finish()
    assert code == 0, stdout[-3000:] + stderr
    assert stderr.strip() == ""
    assert f"▶ {first}" not in stdout and f"▶ {second}" not in stdout
    assert f"▶ {third}" in stdout
    assert statuses(run.out) == dict.fromkeys(CELLS, "passed")
    assert_kept(run.out, kept)
    log = (run.out / "logs" / f"{third}.log").read_text()
    assert "processes that a killed run" in log.splitlines()[0]
    assert_no_build_left(run.build)
    merged = json.loads((run.out / "results.json").read_text())
    assert merged["run"]["exit_code"] == 0
