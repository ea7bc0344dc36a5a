"""Where a cell's build commands run: this machine (local) or a container (docker).

A backend gets the commands from ``orchestrator.building.recipe.recipe`` and runs them; it
never decides *what* to build. Probe and check always run on the host, on the
artifacts the build left in the cell's build directory.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.building.backends.base import Backend, BuildJob, BuildOutcome
from orchestrator.planning.matrix import Matrix

__all__ = ["Backend", "BuildJob", "BuildOutcome", "make_backend"]


def make_backend(name: str, matrix: Matrix, *, cuda_homes: list[Path]) -> Backend:
    if name == "docker":
        from orchestrator.building.backends.docker import DockerBackend

        docker_backend: Backend = DockerBackend(matrix)
        return docker_backend
    from orchestrator.building.backends.local import LocalBackend

    return LocalBackend(matrix, cuda_homes=cuda_homes)
