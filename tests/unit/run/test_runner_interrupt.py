"""The runner's promises without a compiler: a backend whose "build" is a real
process (``sleep``, killable like a compiler) that writes a hand-made library.

* Ctrl-C / SIGTERM: exit 130 / 143 through ``RunInterrupted``, every finished
  cell kept, the rest written as not-run, no process left;
* ``--resume`` keeps finished cells (not rebuilt, files untouched) and redoes the
  others, and a cell whose options changed since.

The end-to-end version, with real builds and a subprocess, is
tests/integration/test_interrupt_resume.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from synth import (
    KIND_ELF,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_shared_object,
    working_body,
)

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.building.recipe import ownership_env, processes_building_in, run_logged
from orchestrator.common.errors import BuildError
from orchestrator.judge.results import load_cell_result
from orchestrator.planning.matrix import Matrix, load_matrix
from orchestrator.planning.plan import Cell, plan
from orchestrator.run.runner import RunInterrupted, RunOptions, run_cells

CUBIN = build_cubin(CubinSpec([KernelSpec("_Z1kv", working_body(20))]))
LIBRARY = build_shared_object(  # code for every arch the cells below ask for
    [
        build_container(
            [
                EntrySpec(KIND_ELF, 90, CUBIN, "a"),
                EntrySpec(KIND_ELF, 100, CUBIN, "f"),
                EntrySpec(KIND_ELF, 121, CUBIN, "a"),
            ]
        )
    ]
)


class SleepBackend:
    """Each build is ``sleep SECONDS`` (per cell id), then writes the library."""

    name = "local"

    def __init__(self, seconds: dict[str, float], fail: tuple[str, ...] = ()) -> None:
        self.seconds = seconds
        self.fail = fail
        self.built: list[str] = []

    def toolchain_key(self, cell: Cell) -> str:
        return "sleep"

    def build(self, job: BuildJob) -> BuildOutcome:
        self.built.append(job.cell.id)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **ownership_env(job.build_dir)}
        seconds = str(self.seconds.get(job.cell.id, 0))
        status = run_logged(
            ["sleep", seconds], cwd=job.build_dir, env=env, log=job.log, deadline=job.deadline
        )
        if status != 0:
            raise BuildError(f"build failed (exit {status})")
        if job.cell.id in self.fail:
            raise BuildError("build failed (exit 2)")
        (job.build_dir / "_C.so").write_bytes(LIBRARY)
        return BuildOutcome("sleep", 0.0)


def matrix(tmp_path: Path, options: str = "") -> Matrix:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "m.yaml"
    path.write_text(
        "project: {source: src, artifacts: ['*.so']}\n"
        # Cells of equal cost: the runner starts them in file order (it starts the
        # costliest first), so "the second cell" is the second to build.
        "cuda: ['13.0']\narchs: ['9.0a', '12.1a', '10.0f']\n"
        "families: {sm90: {sources: [x.cu], kernels: [k], devices: ['9.0']}}\n" + options
    )
    return load_matrix(path)


def options(tmp_path: Path, resume: bool = False) -> RunOptions:
    return RunOptions(
        out_dir=tmp_path / "out", build_root=tmp_path / "build", use_cache=False, resume=resume
    )


def stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.mark.skipif(sys.platform != "linux", reason="signals to this process, /proc")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_finished_cells_and_marks_the_rest(
    tmp_path: Path, signum: int, code: int
) -> None:
    m = matrix(tmp_path)
    cells = plan(m)
    _, second, third = (c.id for c in cells)
    backend = SleepBackend({second: 60, third: 60})
    opts = options(tmp_path)

    def signal_once_second_builds() -> None:
        deadline = time.monotonic() + 20
        while not processes_building_in(opts.build_root / second):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    threading.Thread(target=signal_once_second_builds, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as stopped:
        run_cells(m, cells, backend, opts)
    assert time.monotonic() - started < 20
    assert stopped.value.exit_code == code
    assert "1 of 3 cells finished and kept, 2 not run" in str(stopped.value)
    assert [r.status for r in stopped.value.results] == ["passed", "not-run", "not-run"]
    for cell in cells:  # every cell is on disk, whole
        assert load_cell_result(opts.out_dir / "cells" / f"{cell.id}.json").id == cell.id
    assert processes_building_in(opts.build_root / second) == {}
    assert signal.getsignal(signum) is not None  # handlers restored


def test_resume_redoes_only_unfinished_or_changed_cells(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    cells = plan(m)
    first, second, third = (c.id for c in cells)
    backend = SleepBackend({}, fail=(second,))
    results = run_cells(m, cells, backend, options(tmp_path))
    assert [r.status for r in results] == ["passed", "error", "passed"]
    out = tmp_path / "out" / "cells"
    kept = {cell: stamp(out / f"{cell}.json") for cell in (first, third)}

    again = SleepBackend({})
    results = run_cells(m, cells, again, options(tmp_path, resume=True))
    assert again.built == [second]  # the error is redone, the passed cells are not
    assert [r.status for r in results] == ["passed", "passed", "passed"]
    assert {cell: stamp(out / f"{cell}.json") for cell in (first, third)} == kept

    # The matrix changed a cell's CMake option: that cell's result no longer applies.
    changed = matrix(
        tmp_path, "include: [{cuda: '13.0', archs: '9.0a', name: opt, cmake_options: {A: 1}}]\n"
    )
    run_cells(changed, plan(changed), SleepBackend({}), options(tmp_path, resume=True))
    changed = matrix(
        tmp_path, "include: [{cuda: '13.0', archs: '9.0a', name: opt, cmake_options: {A: 2}}]\n"
    )
    fourth = SleepBackend({})
    run_cells(changed, plan(changed), fourth, options(tmp_path, resume=True))
    assert fourth.built == ["cu13.0-9.0a-opt"]
