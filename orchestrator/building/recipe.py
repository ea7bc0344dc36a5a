"""Building one cell: the commands (CMake or pip), their execution with a timeout,
the full log, the skip lines it printed, and the artifacts it produced.

The command lines are made here, once, for every backend; a backend only decides
*where* they run (this machine, or a container) and how paths map there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestrator.archs import format_arch_list
from orchestrator.building.configure_env import ConfigureEnv, expand
from orchestrator.common import stopping
from orchestrator.common.errors import BuildError
from orchestrator.common.fsutil import write_atomic
from orchestrator.planning.matrix import Project
from orchestrator.planning.plan import Cell
from orchestrator.predict.guards import TRACE_FILE, trace_arguments
from orchestrator.toolchains.cuda import CUTLASS_PLACEHOLDER, cutlass_headers

# pip builds: the cell's copy of the source (under its build directory), made by
# COPY_SOURCE (argv: source, destination, top-level names to leave out): without the
# source's own build outputs (build/, dist/, .deps/: CMake caches there name the
# source's path) and, for a configure, without .git (hundreds of MB in a checkout, a
# copy per cell; no configure reads it, while a wheel build's version may).
PIP_SOURCE_COPY = "src"
COPY_SOURCE = (
    "import shutil, sys; src, dst, skip = sys.argv[1], sys.argv[2], set(sys.argv[3:]); "
    "shutil.rmtree(dst, ignore_errors=True); "
    "shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: "
    "[n for n in names if d == src and n in skip])"
)
NOT_COPIED = ("build", "dist", ".deps")
NOT_COPIED_TO_CONFIGURE = (*NOT_COPIED, ".git")


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
    the real -gencode of every source) during configure, and the list of CMake files
    it read (``cmakeFiles``: what a later tree must leave unchanged for this
    configure to answer for it, ``orchestrator.run.configinputs``)."""
    query = build_dir / ".cmake" / "api" / "v1" / "query" / "client-kernel-matrix"
    query.mkdir(parents=True, exist_ok=True)
    (query / "query.json").write_text(
        '{"requests": [{"kind": "codemodel", "version": 2}, {"kind": "cache", "version": 2},'
        ' {"kind": "cmakeFiles", "version": 1}]}\n'
    )


TOOLCHAIN_STAMP = ".kernel-matrix-toolchain"


def toolchain_changed(build_dir: Path, toolchain: str) -> bool:
    """Record ``toolchain`` (what configures this build directory: backend, image,
    CUDA, where CMake and ninja come from) in it; True when a CMake cache already
    there was made by another (or an unknown) one. Configuring over such a cache
    reuses its tool paths: a cell built locally, then in a container, would run
    the host's ninja (``CMAKE_MAKE_PROGRAM``) in the container, where it does not
    exist. The caller then configures afresh (``cmake --fresh``)."""
    stamp = build_dir / TOOLCHAIN_STAMP
    try:
        previous: str | None = stamp.read_text()
    except OSError:
        previous = None
    changed = (build_dir / "CMakeCache.txt").exists() and previous != toolchain
    if previous != toolchain:
        write_atomic(stamp, toolchain)
    return changed


def recipe(
    project: Project,
    cell: Cell,
    paths: BuildPaths,
    *,
    threads: int,
    configure_only: bool = False,
    configure_env: ConfigureEnv | None = None,
    fresh: bool = False,
) -> BuildRecipe:
    """The commands that build ``cell`` of ``project`` (or, with ``configure_only``,
    configure it; a ``build: pip`` project then needs its provisioned ``configure_env``);
    ``fresh``: configure without the build directory's CMake cache (see
    :func:`toolchain_changed`)."""
    archs = format_arch_list(cell.archs)
    options = {**project.cmake_options, **cell.spec.cmake_options}
    if any(CUTLASS_PLACEHOLDER in value for value in options.values()):
        include = str(cutlass_headers())
        options = {k: v.replace(CUTLASS_PLACEHOLDER, include) for k, v in options.items()}
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
    if project.build == "pip" and configure_only:
        if configure_env is None or project.configure is None:
            raise BuildError("this pip project has no `configure:` section")
        return _pip_configure_recipe(project, cell, paths, env, options, configure_env)
    if project.build == "pip":
        # setup.py builds write into the source tree (vLLM: build/, .deps/, generated
        # files), and the source may be a read-only mount shared by every cell: each
        # cell builds its own copy.
        source = paths.build / PIP_SOURCE_COPY
        copy = ("python3", "-c", COPY_SOURCE, str(paths.source), str(source), *NOT_COPIED)
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
    configure += trace_arguments(paths.source, paths.build / TRACE_FILE)
    if fresh:
        configure.append("--fresh")
    steps = [Step("configure", tuple(configure), paths.build)]
    if not configure_only:
        build = ["cmake", "--build", str(paths.build), "--parallel", str(threads)]
        if project.cmake_target:
            build += ["--target", project.cmake_target]
        steps.append(Step("build", tuple(build), paths.build))
    return BuildRecipe(tuple(steps), env)


def _pip_configure_recipe(
    project: Project,
    cell: Cell,
    paths: BuildPaths,
    env: dict[str, str],
    options: dict[str, str],
    configure_env: ConfigureEnv,
) -> BuildRecipe:
    """Configure a ``build: pip`` project the way its setup.py would run CMake, on a
    writable copy of its source (configure writes generated sources into it), with
    the options and environment of the matrix's ``configure:`` section, and CMake's
    trace of the project's own files (for the guard that dropped a family)."""
    spec = project.configure
    assert spec is not None
    source = paths.build / PIP_SOURCE_COPY
    values = configure_env.placeholders(paths.build)
    copy = (
        "python3", "-c", COPY_SOURCE, str(paths.source), str(source), *NOT_COPIED_TO_CONFIGURE
    )  # fmt: skip
    settings = {
        **{k: expand(v, values) for k, v in spec.cmake_options.items()},
        **options,
        "CMAKE_CUDA_COMPILER": str(configure_env.cuda_home / "bin" / "nvcc"),
        "CUDA_TOOLKIT_ROOT_DIR": str(configure_env.cuda_home),  # torch's FindCUDA
        project.arch_variable: env[project.arch_variable],
    }
    configure = [
        "cmake", "-S", str(source / spec.cmake_source), "-B", str(paths.build), "-G", "Ninja",
        *(f"-D{key}={value}" for key, value in settings.items()),
        *trace_arguments_for_copy(paths.source, source, paths.build / TRACE_FILE),
        "--fresh",  # a prediction never depends on an earlier configure's cache
    ]  # fmt: skip
    python_path = os.pathsep.join(p for p in (str(configure_env.site), env.get("PYTHONPATH")) if p)
    env = {
        **env,
        **{k: expand(v, values) for k, v in spec.env.items()},
        **{name: str(path) for name, path in configure_env.stand_ins.items()},
        "CUDA_HOME": str(configure_env.cuda_home),
        "CUDACXX": str(configure_env.cuda_home / "bin" / "nvcc"),
        "PYTHONPATH": python_path,
    }
    return BuildRecipe(
        (Step("copy-source", copy, paths.build), Step("configure", tuple(configure), paths.build)),
        env,
    )


def trace_arguments_for_copy(original: Path, copy: Path, trace: Path) -> list[str]:
    """:func:`guards.trace_arguments` for the project's CMake files as they will be
    in ``copy`` (made by the step before configure)."""
    arguments = trace_arguments(original, trace)
    prefix = f"--trace-source={original}"
    return [
        f"--trace-source={copy}{a[len(prefix) :]}" if a.startswith(prefix) else a for a in arguments
    ]


def run_recipe(commands: BuildRecipe, call: Callable[[Step], int]) -> float:
    """Run each step with ``call`` (which returns its exit status); a failed or
    timed-out step is a BuildError naming the step (not the cell: the message becomes
    the cell's reason, and whoever shows a reason names its cell). Returns the seconds
    spent inside the build tools."""
    spent = 0.0
    for step in commands.steps:
        stopping.check(step.name)  # a run that is stopping starts no further step
        started = time.monotonic()
        try:
            status = call(step)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{step.name} timed out") from None
        finally:
            spent += time.monotonic() - started
        if status != 0:
            raise BuildError(f"{step.name} failed (exit {status})")
    return spent


# --- running commands ---------------------------------------------------------------


class ProcessRegistry:
    """Every build process still running, so Ctrl-C can stop them all (and their
    children: each runs in its own process group). Builds that do not run as a
    local process (a container) register a *stopper* instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[subprocess.Popen[bytes], str | None] = {}
        self._stoppers: set[Callable[[], None]] = set()
        # After kill_all, until reopen: a build thread that starts its next step a
        # moment after Ctrl-C must not get a process that nobody will stop.
        self._closed = False

    def reopen(self) -> None:
        """Accept new processes again (a new run starts)."""
        with self._lock:
            self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def track(self, proc: subprocess.Popen[bytes], build_dir: str | None = None) -> Iterator[None]:
        """While inside, ``kill_all`` stops ``proc`` and all it started (``build_dir``:
        the ``BUILD_DIR_ENV`` mark its processes carry, see :func:`kill_tree`)."""
        with self._lock:
            self._procs[proc] = build_dir
            closed = self._closed
        try:
            if closed:
                kill_tree(proc, build_dir)
            yield
        finally:
            with self._lock:
                self._procs.pop(proc, None)

    @contextlib.contextmanager
    def track_stopper(self, stop: Callable[[], None]) -> Iterator[None]:
        """While inside, ``kill_all`` also calls ``stop`` (it must not raise)."""
        with self._lock:
            self._stoppers.add(stop)
            closed = self._closed
        try:
            if closed:
                stop()
            yield
        finally:
            with self._lock:
                self._stoppers.discard(stop)

    def kill_all(self, *, close: bool = False) -> None:
        """Stop every build process and container; with ``close``, also any started
        from now on, until :meth:`reopen`."""
        with self._lock:
            self._closed = self._closed or close
            procs = list(self._procs.items())
            stoppers = list(self._stoppers)
        for proc, build_dir in procs:
            kill_tree(proc, build_dir)
        for stop in stoppers:
            stop()


PROCESSES = ProcessRegistry()


def kill_tree(proc: subprocess.Popen[bytes], build_dir: str | None = None) -> None:
    """Stop a process and everything it started, and return only when all of it is
    gone: a run that says it stopped leaves nothing building behind.

    Everything it started is its process group -- and, since a process can leave the
    group (ninja runs each command in a group of its own, so a SIGKILLed ninja leaves
    its compilers running), every process that carries this process's mark for
    ``build_dir`` (:func:`ownership_env`). SIGTERM first; after 10 s, SIGKILL."""

    def members() -> set[int]:
        found = set(_group_members(proc.pid))
        if build_dir:
            found |= {pid for pid, owner in _marked(build_dir).items() if owner == os.getpid()}
        return found

    _signal(proc.pid, members(), signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = members()
        if not left and proc.poll() is not None:
            break
        _signal(proc.pid, left, signal.SIGKILL)
        time.sleep(0.02)
    proc.wait()


def _signal(pgid: int, pids: set[int], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux /proc; zombies, which only
    wait for their parent to reap them, do not count; elsewhere: none known)."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


# --- processes left by a killed run ----------------------------------------------------

# Every build process (and all it starts: they inherit the environment) carries the
# build directory and the pid of the kernel-matrix that started it. A run killed
# with SIGKILL cannot stop its builds; the next run (``--resume``) finds them by this
# mark in /proc and stops them before it builds in the same directory again.
BUILD_DIR_ENV = "KERNEL_MATRIX_BUILD_DIR"
OWNER_ENV = "KERNEL_MATRIX_OWNER_PID"


def ownership_env(build_dir: Path) -> dict[str, str]:
    """The environment marks of a build this process runs in ``build_dir``."""
    return {BUILD_DIR_ENV: str(build_dir.absolute()), OWNER_ENV: str(os.getpid())}


def processes_building_in(build_dir: Path) -> dict[int, int]:
    """``{pid: owner pid}`` of every live process marked as building in ``build_dir``
    (Linux /proc; elsewhere, and for processes we may not read, nothing)."""
    return _marked(str(build_dir.absolute()))


def _marked(build_dir: str) -> dict[int, int]:
    wanted = f"{BUILD_DIR_ENV}={build_dir}".encode()
    found: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted not in environ:
            continue
        owner = next((v for v in environ if v.startswith(f"{OWNER_ENV}=".encode())), b"=0")
        try:
            found[int(name)] = int(owner.split(b"=", 1)[1])
        except ValueError:
            found[int(name)] = 0
    return found


def is_kernel_matrix(pid: int) -> bool:
    """Whether ``pid`` is a live kernel-matrix process (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    return b"orchestrator" in cmdline or b"kernel-matrix" in cmdline


def stop_leftovers(build_dir: Path, log: IO[bytes]) -> None:
    """Stop the processes that a killed kernel-matrix left building in ``build_dir``,
    so that two builds never write one tree. A live owner is another run using
    the same build directory: that is refused, not killed."""
    found = processes_building_in(build_dir)
    live = {os.getpid()}
    owners = {owner for owner in found.values() if owner not in live}
    for owner in owners:
        if is_kernel_matrix(owner):
            raise BuildError(
                f"{build_dir} is being built by another kernel-matrix run (pid {owner}); "
                "give this run its own --build-dir"
            )
    leftovers = [pid for pid, owner in found.items() if owner not in live]
    if not leftovers:
        return
    log.write(
        f"# kernel-matrix: stopping {len(leftovers)} processes that a killed run "
        f"(pid {', '.join(map(str, sorted(owners)))}) left building here\n".encode()
    )
    log.flush()
    deadline = time.monotonic() + 10
    while leftovers and time.monotonic() < deadline:
        for pid in leftovers:  # (a dying parent may still start one more: scan again)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        leftovers = [
            pid for pid, owner in processes_building_in(build_dir).items() if owner not in live
        ]


def empty_build_dir(build_dir: Path, log: IO[bytes]) -> None:
    """Remove everything in ``build_dir`` (the folder itself stays: it may be a link,
    or a mount point), saying so in the log. Call it after :func:`stop_leftovers`:
    a folder another live run builds in is refused there, never emptied here."""
    if not build_dir.is_dir():
        return
    entries = list(build_dir.iterdir())
    if not entries:
        return
    log.write(
        f"# kernel-matrix: --no-cache: removed the {len(entries)} entries an earlier "
        f"build left in {build_dir}\n".encode()
    )
    log.flush()
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


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
    build_dir = env.get(BUILD_DIR_ENV)
    with PROCESSES.track(proc, build_dir):
        try:
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:  # the deadline, or anything else: nothing goes on building
            kill_tree(proc, build_dir)
            raise
    return status


def collect_artifacts(build_dir: Path, globs: Sequence[str]) -> list[Path]:
    """Built shared objects/wheels matching the project's globs (sorted, no dups)."""
    found: set[Path] = set()
    for glob in globs:
        found.update(p for p in build_dir.glob(glob) if p.is_file())
    return sorted(found)
