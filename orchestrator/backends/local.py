"""The local backend: build with a toolchain on this machine (PyPI or system)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from orchestrator import toolchain
from orchestrator.backends import BuildJob, BuildOutcome
from orchestrator.build import BuildPaths, file_api_query, recipe, run_logged, run_recipe
from orchestrator.errors import ToolchainError
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
        job.build_dir.mkdir(parents=True, exist_ok=True)
        file_api_query(job.build_dir)
        paths = BuildPaths(self.matrix.project.source, job.build_dir, tc.nvcc, tc.home)
        commands = recipe(
            self.matrix.project,
            job.cell,
            paths,
            threads=job.threads,
            configure_only=job.configure_only,
        )
        # cmake and ninja come from PyPI, next to this Python; nvcc from the toolchain.
        tools = os.pathsep.join([str(Path(sys.executable).parent), str(tc.nvcc.parent)])
        env = {**os.environ, **commands.env, "PATH": tools + os.pathsep + os.environ["PATH"]}
        spent = run_recipe(
            job.cell.id,
            commands,
            lambda step: run_logged(
                step.argv, cwd=step.cwd, env=env, log=job.log, deadline=job.deadline
            ),
        )
        return BuildOutcome(tc.describe(), spent)
