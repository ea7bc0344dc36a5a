"""The local backend: build with a toolchain on this machine (PyPI or system)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from orchestrator.archs import CudaVersion
from orchestrator.building import configure_env
from orchestrator.building.backends.base import BuildJob, BuildOutcome
from orchestrator.building.recipe import (
    BuildPaths,
    empty_build_dir,
    file_api_query,
    ownership_env,
    recipe,
    run_logged,
    run_recipe,
    stop_leftovers,
    toolchain_changed,
)
from orchestrator.common import stopping
from orchestrator.common.errors import ConfigError, ToolchainError
from orchestrator.planning.matrix import Matrix
from orchestrator.planning.plan import Cell
from orchestrator.toolchains import cuda as toolchain


class LocalBackend:
    name = "local"

    def __init__(self, matrix: Matrix, *, cuda_homes: list[Path]) -> None:
        self.matrix = matrix
        self.cuda_homes = cuda_homes
        self._lock = threading.Lock()
        self._cuda_locks: dict[CudaVersion, threading.Lock] = {}
        self._resolved: dict[CudaVersion, toolchain.Toolchain] = {}
        self._configure_lock = threading.Lock()

    def _toolchain(self, cell: Cell) -> toolchain.Toolchain:
        """The toolchain of the cell's CUDA version, resolved once per run (it may be
        installed, and system toolkits are asked their version), not for each cell's
        cache key and again for its build."""
        with self._lock:
            if cell.cuda in self._resolved:
                return self._resolved[cell.cuda]
            lock = self._cuda_locks.setdefault(cell.cuda, threading.Lock())
        with stopping.locked(lock, f"the CUDA {cell.cuda} toolchain"):
            if cell.cuda not in self._resolved:
                found = toolchain.resolve(cell.cuda, self.cuda_homes)
                if found is None:
                    raise ToolchainError(toolchain.unavailable_remedy(cell.cuda))
                self._resolved[cell.cuda] = found
            return self._resolved[cell.cuda]

    def toolchain_key(self, cell: Cell) -> str:
        return self._toolchain(cell).describe()

    def build(self, job: BuildJob) -> BuildOutcome:
        tc = self._toolchain(job.cell)
        build_dir = job.build_dir.absolute()  # the steps run in it: a relative one nests
        stop_leftovers(build_dir, job.log)
        if job.from_scratch:
            empty_build_dir(build_dir, job.log)
        # What compiles this cell, and how it got here (a first run downloads it).
        job.log.write(f"kernel-matrix: toolchain {tc.describe()}\n".encode())
        for line in toolchain.provisioning_lines(job.cell.cuda):
            job.log.write(f"{line}\n".encode())
        job.log.flush()
        build_dir.mkdir(parents=True, exist_ok=True)
        file_api_query(build_dir)
        paths = BuildPaths(self.matrix.project.source, build_dir, tc.nvcc, tc.home)
        configure_env = None
        if job.configure_only and self.matrix.project.build == "pip":
            configure_env = self._configure_env(tc, build_dir, job)
        # cmake and ninja come from PyPI, next to this Python; nvcc from the toolchain.
        nvcc_dir = configure_env.cuda_home / "bin" if configure_env else tc.nvcc.parent
        tools = os.pathsep.join([str(Path(sys.executable).parent), str(nvcc_dir)])
        commands = recipe(
            self.matrix.project,
            job.cell,
            paths,
            threads=job.threads,
            configure_only=job.configure_only,
            configure_env=configure_env,
            fresh=toolchain_changed(build_dir, f"local: {tc.describe()}; tools {tools}"),
        )
        env = {
            **os.environ,
            **commands.env,
            **ownership_env(build_dir),
            "PATH": tools + os.pathsep + os.environ["PATH"],
        }
        spent = run_recipe(
            commands,
            lambda step: run_logged(
                step.argv, cwd=step.cwd, env=env, log=job.log, deadline=job.deadline
            ),
        )
        return BuildOutcome(tc.describe(), spent)

    def _configure_env(
        self, tc: toolchain.Toolchain, build_dir: Path, job: BuildJob
    ) -> configure_env.ConfigureEnv:
        """What a `build: pip` project's CMake imports, provisioned once (cached) and
        logged in the cell's log, with progress on the console."""
        spec = self.matrix.project.configure
        if spec is None:
            raise ConfigError(
                f"{self.matrix.path}: project.configure is needed to configure a "
                "`build: pip` project (how its setup.py runs CMake)"
            )

        def progress(line: str) -> None:
            job.log.write(f"# kernel-matrix: {line}\n".encode())
            job.log.flush()
            if job.progress is not None:
                job.progress(f"{job.cell.id}: {line}")

        # Cells share one environment: provision it once. A cell waiting here while
        # another provisions stops with the run (it must not start its own install).
        with stopping.locked(self._configure_lock, "provisioning the configure environment"):
            return configure_env.provision(
                spec, self.matrix.project.source, tc, build_dir, progress
            )
