"""The result cache: a cell built once with the same inputs is not built again.

A cache hit must be indistinguishable from a build, except for the time it takes:
the cell's artifacts are stored *with* its result and copied back into this run's
build directory on a hit, so that the results, the reports, ``probe``,
``verify-on-device`` and whatever a CI job does next with the build directory all
find the files the result describes -- never a path into another run's directory.
(Recording only the verdict would leave the build directory empty on a hit and
full on a miss: a difference a pipeline trips over only when the cache answers.)

One entry is a directory ``<cache>/cells/<key>-<tier>/`` holding ``result.json``
(paths in it relative to the cell's build directory), ``build.log`` and
``artifacts/<path relative to the build directory>``. It is assembled in a
temporary directory and renamed into place, so an entry is whole or absent.

Artifacts cost disk: a vLLM cell's libraries are 0.66-1.15 GB for a release arch
list (the ``.so`` files of the 0.33.0 and 0.17.0 wheels, unpacked), its wheel
0.25-0.5 GB; storing them took 1.4-2.7 s and restoring them 5-16 s on a loaded
2-core machine (benchmarks/bench_cell_cache.py, BENCHMARKS.md) -- against the
tens of minutes of the build they replace. The cache is therefore bounded (``KERNEL_MATRIX_CELL_CACHE_LIMIT``,
default 20G): after each store, the least recently used entries (a hit counts as
a use) are removed until the total fits. An entry larger than the whole limit is
not stored. A damaged or vanished entry (another process evicted it while we
read) is a miss: the cell is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from filelock import FileLock, Timeout

from orchestrator import __version__
from orchestrator.common.errors import KernelMatrixError, UsageError
from orchestrator.common.fsutil import cache_root, not_regular, walk_dirs, write_json
from orchestrator.common.words import format_size
from orchestrator.judge.results import CellResult, load_cell_result
from orchestrator.planning.matrix import Matrix
from orchestrator.planning.plan import Cell

# Part of every key: entries of an older layout (results holding absolute artifact
# paths, no stored artifacts; 3: verdicts with guards, not-matched, JIT; 4: libraries
# without their bytes per target; 5: verdicts without the guard that governs them,
# governed_by) are never read back.
CACHE_FORMAT = "6"
LIMIT_VARIABLE = "KERNEL_MATRIX_CELL_CACHE_LIMIT"
DEFAULT_LIMIT = "20G"
SOURCE_SKIP_DIRS = {".git", "build", "dist", "__pycache__", ".nox", ".venv", "node_modules"}
STALE_TMP_S = 24 * 3600  # a temporary entry this old belongs to a process that died
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def source_digest(source: Path) -> str:
    """Content hash of a source tree (paths + bytes), build outputs skipped."""
    digest = hashlib.sha256()
    for root, dirs, files in walk_dirs(source):  # (os.walk recurses per level)
        dirs[:] = sorted(d for d in dirs if d not in SOURCE_SKIP_DIRS)
        for name in sorted(files):
            path = Path(root) / name
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            with contextlib.suppress(OSError):
                if not not_regular(path.stat().st_mode):  # a FIFO would block the read
                    digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


# Variables of this process's environment that change what a local build compiles
# (the local backend hands its environment to CMake and nvcc; a container does not
# see it). The recipe sets CUDA_HOME, CUDACXX, the arch variable and the job counts.
HOST_BUILD_ENV = (
    "CC", "CXX", "CUDAHOSTCXX", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "CUDAFLAGS",
    "CUDAARCHS", "NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS", "NVCC_CCBIN", "CMAKE_ARGS",
    "CMAKE_TOOLCHAIN_FILE", "CMAKE_PREFIX_PATH",
)  # fmt: skip


def cell_cache_key(matrix: Matrix, cell: Cell, toolchain_key: str, source_hash: str) -> str:
    """Everything that decides what a build produces: sources, toolchain, archs,
    options, environment (the matrix's, and for a local build the variables of
    HOST_BUILD_ENV), backend, build recipe, this tool's version and the cache's
    own format."""
    parts = _cell_parts(matrix, cell, toolchain_key)
    parts.insert(2, source_hash)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def cell_inputs_key(matrix: Matrix, cell: Cell, toolchain_key: str) -> str:
    """:func:`cell_cache_key` without the source tree: the cell a configure-input
    index (``configinputs``) is kept for, whatever the tree."""
    parts = ["configure-inputs", *_cell_parts(matrix, cell, toolchain_key)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _cell_parts(matrix: Matrix, cell: Cell, toolchain_key: str) -> list[str]:
    project = matrix.project
    host_env = (
        sorted((k, os.environ[k]) for k in HOST_BUILD_ENV if k in os.environ)
        if cell.backend == "local"
        else []
    )
    return [
        __version__,
        CACHE_FORMAT,
        toolchain_key,
        cell.backend,
        ";".join(str(a) for a in cell.archs),
        project.build,
        project.arch_variable,
        repr(sorted({**project.cmake_options, **cell.spec.cmake_options}.items())),
        repr(sorted({**project.env, **cell.spec.env}.items())),
        repr(project.artifacts),
        str(project.cmake_target),
        repr(host_env),
    ]


def cells_dir() -> Path:
    return cache_root() / "cells"


def cache_path(key: str, tier: str) -> Path:
    """The entry's directory."""
    return cells_dir() / f"{key}-{tier}"


def parse_size(text: str) -> int:
    """Bytes from ``20G``, ``512M``, ``1.5T``, ``0`` (binary units).

    >>> parse_size("20G"), parse_size("512m"), parse_size("0")
    (21474836480, 536870912, 0)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(text)
    return int(float(match[1]) * _UNITS[match[2].upper()])


def cache_limit() -> int:
    """The cache's size limit in bytes, from ``KERNEL_MATRIX_CELL_CACHE_LIMIT``."""
    text = os.environ.get(LIMIT_VARIABLE, "") or DEFAULT_LIMIT
    try:
        return parse_size(text)
    except ValueError:
        raise UsageError(
            f"{LIMIT_VARIABLE}={text}: not a size (write it as 20G, 500M or 0)"
        ) from None


class CacheNotWritten(KernelMatrixError):
    """The entry could not be stored (the cell's own result still stands)."""


@dataclass(frozen=True)
class Stored:
    """What the cache holds for a cell: its result and where its files are."""

    result: CellResult
    log: Path
    artifacts: Path


def store(key: str, tier: str, result: CellResult, build_dir: Path, log: Path, limit: int) -> None:
    """Keep a finished result, its log and its artifacts (``result.artifacts``,
    relative to ``build_dir``), evicting the least recently used entries so that
    the cache stays within ``limit`` bytes."""
    sources = [build_dir / PurePosixPath(a) for a in result.artifacts]
    size = sum(p.stat().st_size for p in sources) + log.stat().st_size
    if size > limit:
        raise CacheNotWritten(
            f"the cell's artifacts and log ({format_size(size)}) exceed the cache's limit "
            f"{LIMIT_VARIABLE}={format_size(limit)}"
        )
    cells = cells_dir()
    cells.mkdir(parents=True, exist_ok=True)
    evict(limit - size)  # room first: the cache never grows past its limit to store
    final = cache_path(key, tier)
    tmp = cells / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.mkdir()  # (a configure-tier cell has no artifact to create it)
        for source, relative in zip(sources, result.artifacts, strict=True):
            target = tmp / "artifacts" / PurePosixPath(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        shutil.copyfile(log, tmp / "build.log")
        write_json(tmp / "result.json", result.to_json())
        shutil.rmtree(final, ignore_errors=True)  # a damaged entry of the same key
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "result.json").is_file():
                raise
            # Another process stored the same key meanwhile: the same build, keep it.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    evict(limit, keep=final)  # (other processes may have stored meanwhile)


def load(key: str, tier: str) -> Stored | None:
    """The entry, if it is whole: its result and every artifact it lists."""
    entry = cache_path(key, tier)
    try:
        result = load_cell_result(entry / "result.json")
    except KernelMatrixError:
        return None  # absent or damaged: rebuilt, never trusted
    artifacts = entry / "artifacts"
    if not all((artifacts / PurePosixPath(a)).is_file() for a in result.artifacts):
        return None
    return Stored(result, entry / "build.log", artifacts)


def restore(
    stored: Stored,
    build_dir: Path,
    log: Path,
    *,
    header: str | None = None,
    also_replace: tuple[str, str] | None = None,
) -> None:
    """Copy the entry's artifacts into ``build_dir`` (each file whole or absent) and
    its log to ``log`` (after ``header``, which says why the cache answered; the
    earlier build directory, and ``also_replace``'s first path, replaced by this
    run's), and count the entry as used. Raises OSError when the entry vanished
    meanwhile (evicted by another process): the caller rebuilds."""
    for relative in stored.result.artifacts:
        target = build_dir / PurePosixPath(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.kernel-matrix-restore")
        try:
            shutil.copy2(stored.artifacts / PurePosixPath(relative), tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    before = stored.result.build_dir
    if header is None:
        header = "# kernel-matrix: this cell was answered from the result cache.\n"
    header += (
        "# Below is the log of the earlier build that produced it, in "
        f"{before or 'another directory'};\n"
        f"# its artifacts were restored into {build_dir}, and the log names that directory\n"
    )
    staged = log.with_name(f".{log.name}.kernel-matrix-restore")
    try:
        body = stored.log
        if also_replace and also_replace[0] != also_replace[1]:
            old, new = (path.encode() for path in also_replace)
            with stored.log.open("rb") as cached_log, staged.open("wb") as rewriting:
                copy_replacing(cached_log, rewriting, old, new)
            body = staged
        with body.open("rb") as cached_log, log.open("wb") as run_log:
            run_log.write(header.encode())
            copy_replacing(cached_log, run_log, (before or "").encode(), str(build_dir).encode())
    finally:
        staged.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.utime(stored.log.parent)  # most recently used


def copy_replacing(
    source: IO[bytes], target: IO[bytes], old: bytes, new: bytes, chunk: int = 1 << 20
) -> None:
    """Copy ``source`` to ``target`` with every ``old`` replaced by ``new``, a chunk at a
    time (a build log can hold a gigabyte, in one line), across chunk boundaries too.

    >>> import io
    >>> out = io.BytesIO()
    >>> copy_replacing(io.BytesIO(b"/a/b x /a/b"), out, b"/a/b", b"/c", chunk=3)
    >>> out.getvalue()
    b'/c x /c'
    """
    if not old:
        shutil.copyfileobj(source, target)
        return
    pending = b""
    while block := source.read(chunk):
        data, pending, at = pending + block, b"", 0
        while (found := data.find(old, at)) >= 0:
            target.write(data[at:found] + new)
            at = found + len(old)
        keep = max(at, len(data) - len(old) + 1)  # may be the start of the next ``old``
        target.write(data[at:keep])
        pending = data[keep:]
    target.write(pending)


def rebase(
    result: CellResult, build_dir: Path, also_replace: tuple[str, str] | None = None
) -> None:
    """Make a cached result this run's: its ``build_dir``, and the build-log lines it
    quotes (skip lines, warnings) naming this directory, where its artifacts now
    are, instead of the earlier build's (and ``also_replace``'s new path for its old
    one: the source tree, when the configure of another tree answered)."""
    before, now = result.build_dir, str(build_dir)
    result.build_dir = now
    for old, new in ((before, now), also_replace or (None, None)):
        if old and new and old != new:
            result.skip_lines = [line.replace(old, new) for line in result.skip_lines]
            result.warnings = [line.replace(old, new) for line in result.warnings]


def evict(limit: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries until the cache fits ``limit`` bytes
    (and temporary entries left by dead processes). Returns the entries removed."""
    cells = cells_dir()
    removed: list[Path] = []
    try:
        lock = FileLock(str(cells / ".evict.lock"), timeout=60)
        with lock:
            entries: list[tuple[float, int, Path]] = []
            now = time.time()
            for path in cells.iterdir():
                if not path.is_dir():
                    continue
                with contextlib.suppress(OSError):
                    mtime = path.stat().st_mtime
                    if path.name.startswith(".tmp-"):
                        if now - mtime > STALE_TMP_S:
                            shutil.rmtree(path, ignore_errors=True)
                        continue
                    entries.append((mtime, _tree_size(path), path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries, key=lambda e: e[0]):
                if total <= limit:
                    break
                if path == keep:
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                total -= size
    except (Timeout, OSError):
        pass  # eviction is housekeeping: the next store tries again
    return removed


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total
