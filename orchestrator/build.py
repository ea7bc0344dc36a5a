"""Building one cell: the commands (CMake or pip), their execution with a timeout,
the full log, the skip lines it printed, and the artifacts it produced.

The command lines are made here, once, for every backend; a backend only decides
*where* they run (this machine, or a container) and how paths map there.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orchestrator.archs import format_arch_list
from orchestrator.errors import BuildError
from orchestrator.matrix import Project
from orchestrator.plan import Cell

# A kernel family skipped by its guard leaves one of these lines (vLLM spelling,
# and the sample extension's).
SKIP_LINE = re.compile(r"\bnot building\b|\bskipping\b.*\b(kernels?|archs?)\b", re.IGNORECASE)
WARNING_LINE = re.compile(r"\bwarning\b", re.IGNORECASE)
MAX_WARNINGS_KEPT = 50


# pip builds: the cell's copy of the source (under its build directory), made by
# COPY_SOURCE (argv: source, destination) without the source's own build outputs
# (top-level build/, dist/, .deps/: CMake caches there name the source's path).
PIP_SOURCE_COPY = "src"
COPY_SOURCE = (
    "import shutil, sys; src, dst = sys.argv[1], sys.argv[2]; "
    "shutil.rmtree(dst, ignore_errors=True); "
    "shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: "
    "[n for n in names if d == src and n in ('build', 'dist', '.deps')])"
)


@dataclass(frozen=True)
class Step:
    """One command of a build, with the paths it uses as the *build host* sees them."""

    name: str  # "configure", "build", "wheel"
    argv: tuple[str, ...]
    cwd: Path


@dataclass(frozen=True)
class BuildPaths:
    """Where a cell's build reads and writes, as seen by the process running it."""

    source: Path
    build: Path
    nvcc: Path
    cuda_home: Path


@dataclass(frozen=True)
class BuildRecipe:
    steps: tuple[Step, ...]
    env: Mapping[str, str]


def file_api_query(build_dir: Path) -> None:
    """Ask CMake to write its File API codemodel (per-source compile flags, hence
    the real -gencode of every source) during configure."""
    query = build_dir / ".cmake" / "api" / "v1" / "query" / "client-kernel-matrix"
    query.mkdir(parents=True, exist_ok=True)
    (query / "query.json").write_text(
        '{"requests": [{"kind": "codemodel", "version": 2}, {"kind": "cache", "version": 2}]}\n'
    )


def recipe(
    project: Project,
    cell: Cell,
    paths: BuildPaths,
    *,
    threads: int,
    configure_only: bool = False,
) -> BuildRecipe:
    """The commands that build ``cell`` of ``project``."""
    archs = format_arch_list(cell.archs)
    options = {**project.cmake_options, **cell.spec.cmake_options}
    env = {
        # parallelism: the runner's share of the cores, unless the matrix says
        # otherwise (vLLM: MAX_JOBS compile jobs, each nvcc with NVCC_THREADS threads)
        "MAX_JOBS": str(threads),
        "NVCC_THREADS": "1",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(threads),
        **project.env,
        **cell.spec.env,
        "CUDA_HOME": str(paths.cuda_home),
        "CUDACXX": str(paths.nvcc),
        project.arch_variable: archs,
    }
    if project.build == "pip":
        # setup.py builds write into the source tree (vLLM: build/, .deps/, generated
        # files), and the source may be a read-only mount shared by every cell: each
        # cell builds its own copy.
        source = paths.build / PIP_SOURCE_COPY
        copy = ("python3", "-c", COPY_SOURCE, str(paths.source), str(source))
        wheel = (
            "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
            "--wheel-dir", str(paths.build / "dist"), "--verbose",
        )  # fmt: skip
        env["CMAKE_ARGS"] = " ".join(f"-D{k}={v}" for k, v in options.items())
        return BuildRecipe(
            (
                Step("copy-source", copy, paths.build),
                Step("wheel", ("python3", "-m", *wheel), source),
            ),
            env,
        )

    configure = [
        "cmake", "-S", str(paths.source), "-B", str(paths.build), "-G", "Ninja",
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_CUDA_COMPILER={paths.nvcc}",
        f"-D{project.arch_variable}={archs}",
    ]  # fmt: skip
    configure += [f"-D{key}={value}" for key, value in options.items()]
    steps = [Step("configure", tuple(configure), paths.build)]
    if not configure_only:
        build = ["cmake", "--build", str(paths.build), "--parallel", str(threads)]
        if project.cmake_target:
            build += ["--target", project.cmake_target]
        steps.append(Step("build", tuple(build), paths.build))
    return BuildRecipe(tuple(steps), env)


def run_recipe(cell_id: str, commands: BuildRecipe, call: Callable[[Step], int]) -> float:
    """Run each step with ``call`` (which returns its exit status); a failed or
    timed-out step is a BuildError naming the cell and the step. Returns the seconds
    spent inside the build tools."""
    spent = 0.0
    for step in commands.steps:
        started = time.monotonic()
        try:
            status = call(step)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{cell_id}: {step.name} timed out") from None
        finally:
            spent += time.monotonic() - started
        if status != 0:
            raise BuildError(f"{cell_id}: {step.name} failed (exit {status})")
    return spent


# --- running commands ---------------------------------------------------------------


class ProcessRegistry:
    """Every build process still running, so Ctrl-C can stop them all (and their
    children: each runs in its own process group). Builds that do not run as a
    local process (a container) register a *stopper* instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._stoppers: set[Callable[[], None]] = set()

    @contextlib.contextmanager
    def track(self, proc: subprocess.Popen[bytes]) -> Iterator[None]:
        with self._lock:
            self._procs.add(proc)
        try:
            yield
        finally:
            with self._lock:
                self._procs.discard(proc)

    @contextlib.contextmanager
    def track_stopper(self, stop: Callable[[], None]) -> Iterator[None]:
        """While inside, ``kill_all`` also calls ``stop`` (it must not raise)."""
        with self._lock:
            self._stoppers.add(stop)
        try:
            yield
        finally:
            with self._lock:
                self._stoppers.discard(stop)

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
            stoppers = list(self._stoppers)
        for proc in procs:
            kill_tree(proc)
        for stop in stoppers:
            stop()


PROCESSES = ProcessRegistry()


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process and everything it started (its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: IO[bytes],
    deadline: float,
) -> int:
    """Run a command, its output appended to ``log``; kill it at ``deadline``
    (``time.monotonic()`` seconds). Returns the exit status."""
    log.write(f"$ {' '.join(argv)}\n".encode())
    log.flush()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from None
    with PROCESSES.track(proc):
        try:
            return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            raise
        except BaseException:
            kill_tree(proc)
            raise


# --- reading the log ------------------------------------------------------------------


@dataclass
class LogFindings:
    skip_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    last_lines: list[str] = field(default_factory=list)


def scan_log(path: Path, *, tail: int = 30) -> LogFindings:
    """Skip lines ("Not building ..."), warnings and the last lines of a build log."""
    findings = LogFindings()
    if not path.is_file():
        return findings
    recent: list[str] = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            text = line.lstrip("- ").strip()
            if SKIP_LINE.search(text) and text not in findings.skip_lines:
                findings.skip_lines.append(text)
            elif WARNING_LINE.search(text) and len(findings.warnings) < MAX_WARNINGS_KEPT:
                findings.warnings.append(text)
            recent.append(line)
            if len(recent) > tail:
                recent.pop(0)
    findings.last_lines = recent
    return findings


def collect_artifacts(build_dir: Path, globs: Sequence[str]) -> list[Path]:
    """Built shared objects/wheels matching the project's globs (sorted, no dups)."""
    found: set[Path] = set()
    for glob in globs:
        found.update(p for p in build_dir.glob(glob) if p.is_file())
    return sorted(found)
