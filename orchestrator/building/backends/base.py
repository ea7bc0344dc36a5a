"""What a backend is: the job it gets from the runner, the outcome it returns, and the
interface every backend (local, docker) implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from orchestrator.planning.plan import Cell


@dataclass(frozen=True)
class BuildJob:
    """One cell's build, as the runner hands it to a backend."""

    cell: Cell
    build_dir: Path
    log: IO[bytes]
    deadline: float  # time.monotonic() seconds
    threads: int
    configure_only: bool = False
    # --no-cache: the build folder is emptied first, so nothing of an earlier build
    # (ninja's "no work to do", a stale library) stands in for this one.
    from_scratch: bool = False
    progress: Callable[[str], None] | None = None  # long provisioning, on the console


@dataclass(frozen=True)
class BuildOutcome:
    toolchain: str  # what compiled it, e.g. "CUDA 13.0.88 (pypi, ...)"
    build_s: float  # seconds spent inside build tools (configure + build)


class Backend(Protocol):
    name: str

    def toolchain_key(self, cell: Cell) -> str:
        """Identity of the toolchain a cell would use (for the result cache)."""
        ...

    def build(self, job: BuildJob) -> BuildOutcome:
        """Run the cell's commands; raise BuildError/ToolchainError on failure."""
        ...
