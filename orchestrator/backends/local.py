"""The local backend: build with a toolchain on this machine (PyPI or system)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from orchestrator import toolchain
from orchestrator.backends import BuildJob, BuildOutcome
from orchestrator.build import (
    BuildPaths,
    file_api_query,
    ownership_env,
    recipe,
    run_logged,
    stop_leftovers,
)
from orchestrator.errors import BuildError, ToolchainError
from orchestrator.matrix import Matrix
from orchestrator.plan import Cell


class LocalBackend:
    name = "local"

    def __init__(self, matrix: Matrix, *, cuda_homes: list[Path]) -> None:
        self.matrix = matrix
        self.cuda_homes = cuda_homes

    def _toolchain(self, cell: Cell) -> toolchain.Toolchain:
        found = toolchain.resolve(cell.cuda, self.cuda_homes)
        if found is None:
            raise ToolchainError(toolchain.unavailable_remedy(cell.cuda))
        return found

    def toolchain_key(self, cell: Cell) -> str:
        return self._toolchain(cell).describe()

    def build(self, job: BuildJob) -> BuildOutcome:
        tc = self._toolchain(job.cell)
        build_dir = job.build_dir.absolute()  # the steps run in it: a relative one nests
        stop_leftovers(build_dir, job.log)
        build_dir.mkdir(parents=True, exist_ok=True)
        file_api_query(build_dir)
        paths = BuildPaths(self.matrix.project.source, build_dir, tc.nvcc, tc.home)
        commands = recipe(
            self.matrix.project,
            job.cell,
            paths,
            threads=job.threads,
            configure_only=job.configure_only,
        )
        # cmake and ninja come from PyPI, next to this Python; nvcc from the toolchain.
        tools = os.pathsep.join([str(Path(sys.executable).parent), str(tc.nvcc.parent)])
        env = {
            **os.environ,
            **commands.env,
            **ownership_env(build_dir),
            "PATH": tools + os.pathsep + os.environ["PATH"],
        }
        spent = 0.0
        for step in commands.steps:
            started = time.monotonic()
            try:
                status = run_logged(
                    step.argv, cwd=step.cwd, env=env, log=job.log, deadline=job.deadline
                )
            except subprocess.TimeoutExpired:
                raise BuildError(f"{job.cell.id}: {step.name} timed out") from None
            finally:
                spent += time.monotonic() - started
            if status != 0:
                raise BuildError(f"{job.cell.id}: {step.name} failed (exit {status})")
        return BuildOutcome(tc.describe(), spent)
