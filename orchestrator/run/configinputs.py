"""Reusing a configure by what it read: a tree whose configure inputs are unchanged is
answered from the configure of another tree (issue 30, "reuse, keyed by content").

The cell cache (``cellcache``) is keyed by the whole source tree, so a pull request
that changes one ``.cu`` or ``.py`` file configures every cell again (about a minute
per vLLM cell). A configure-tier prediction depends on much less: the CMake files the
configure read, the scripts it ran (vLLM's kernel generators), the directories it
globbed, the requirement pins and CMake files this tool reads to provision it, and
the names of the ``__global__`` functions each compiled source declares (the
prediction names kernels after them). After a configure-tier cell is configured, its
inputs are recorded here, each relative to the source root with the sha256 of its
content (or "absent", or "directory"), under the cell's key *without* the tree
(:func:`cellcache.cell_inputs_key`: toolchain, arch list, options, environment,
backend), pointing at the cell-cache entry that holds the result. Before configuring
a cell, the records of that key are checked against the new tree: when every
recorded input is as it was (a listed file now missing is a change; so is a glob
that finds other files), the stored result answers, rebased onto this run's build
directory and source tree, and CMake does not run.

What counts as an input (``collect``):

* every file of the source tree in the File API's ``cmakeFiles`` reply;
* from CMake's trace of the project's files: each ``execute_process`` argument (also
  ``PYTHONPATH=a:b`` parts) naming a path of the tree -- a file is an input; a script,
  a directory, and the directory of a ``.py`` script stand for every ``.py`` file
  under them (the modules a generator may import, and which ones exist); files read
  by ``file(READ|STRINGS|MD5|SHA…|SIZE|TIMESTAMP)`` and ``configure_file``; paths
  tested by ``if(EXISTS …)``; the matches of each ``file(GLOB[_RECURSE])``;
* every ``CMakeLists.txt`` / ``*.cmake`` of the project (which ones exist, and their
  contents: the stand-ins are made from them) and the ``configure.python``
  requirement files (the torch pin);
* the kernel names each compiled CUDA source of the tree declares.

What is not seen: a file a generator opens without it being named on its command
line or sitting beside it (a template read from elsewhere in the tree); a configure
on another backend (a container's paths): only local cells are recorded. Inputs
outside the tree (toolchain, torch, CUTLASS) are in the key already, as for the
cell cache. ``--no-cache`` neither reads nor writes the index.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.building.recipe import PIP_SOURCE_COPY
from orchestrator.common.errors import KernelMatrixError
from orchestrator.common.fsutil import cache_root, write_json
from orchestrator.judge.results import CellResult
from orchestrator.planning.matrix import Project
from orchestrator.predict.codemodel import compiled_sources, declared_kernels, read_cmake_inputs
from orchestrator.predict.guards import TRACE_FILE, TraceRecord, project_cmake_files, read_trace
from orchestrator.run import cellcache

INDEX_FORMAT = 1
MAX_RECORDS = 8  # per cell: a base and a few heads of recent pull requests
DIRECTORY = "directory"
_FILE_READS = frozenset({
    "READ", "STRINGS", "MD5", "SHA1", "SHA224", "SHA256", "SHA384", "SHA512",
    "SHA3_224", "SHA3_256", "SHA3_384", "SHA3_512", "SIZE", "TIMESTAMP",
})  # fmt: skip
_PATH_TESTS = frozenset(["EXISTS", "IS_DIRECTORY", "IS_SYMLINK", "IS_READABLE"])
_GLOB_OPTIONS = {"RELATIVE": 1, "LIST_DIRECTORIES": 1, "CONFIGURE_DEPENDS": 0, "FOLLOW_SYMLINKS": 0}
_SEPARATORS = re.compile(r"[=:;]")
_SKIP_DIRS = cellcache.SOURCE_SKIP_DIRS


def state(path: Path) -> str | None:
    """What a later tree must have at this path: the file's content hash,
    ``directory``, or None (nothing there)."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"
    return DIRECTORY if path.is_dir() else None


def glob_tree(root: Path, pattern: str, recurse: bool) -> list[str]:
    """The files of ``root`` a CMake ``file(GLOB[_RECURSE])`` of ``pattern`` (relative
    to ``root``) finds, relative and sorted; build outputs skipped.

    >>> import tempfile; root = Path(tempfile.mkdtemp())
    >>> for name in ("a/x.cu", "a/b/y.cu", "a/z.h"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True); (root / name).touch()
    >>> glob_tree(root, "a/*.cu", False), glob_tree(root, "a/*.cu", True)
    (['a/x.cu'], ['a/b/y.cu', 'a/x.cu'])
    """
    if recurse:
        folder, name = os.path.split(pattern)
        pattern = os.path.join(folder, "**", name)
    found = glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=recurse)
    relative = (PurePosixPath(Path(p).relative_to(root)) for p in found)
    return sorted(str(p) for p in relative if not _SKIP_DIRS.intersection(p.parts))


@dataclass(frozen=True)
class GlobRead:
    pattern: str  # relative to the source root
    recurse: bool
    found: tuple[str, ...]


@dataclass
class ConfigureInputs:
    """What a configure read of its source tree, relative to the tree's root."""

    files: dict[str, str | None] = field(default_factory=dict)
    globs: list[GlobRead] = field(default_factory=list)
    kernels: dict[str, list[str]] = field(default_factory=dict)  # source -> declared names

    def first_change(self, root: Path) -> str | None:
        """The first input that ``root`` has otherwise, as a short phrase; None when
        every input is as recorded (the recorded configure answers for ``root``)."""
        for relative, recorded in sorted(self.files.items()):
            now = state(root / relative)
            if now != recorded:
                what = "is gone" if now is None else "is new" if recorded is None else "changed"
                return f"{relative} {what}"
        for read in self.globs:
            if glob_tree(root, read.pattern, read.recurse) != list(read.found):
                return f"file(GLOB{'_RECURSE' if read.recurse else ''} {read.pattern}) finds others"
        for relative, names in sorted(self.kernels.items()):
            source = root / relative
            if not source.is_file():
                return f"{relative} is gone"
            if declared_kernels(source) != names:
                return f"the kernels {relative} declares changed"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "globs": [[g.pattern, g.recurse, list(g.found)] for g in self.globs],
            "kernels": self.kernels,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConfigureInputs:
        return cls(
            files={str(k): (None if v is None else str(v)) for k, v in data["files"].items()},
            globs=[GlobRead(str(p), bool(r), tuple(map(str, f))) for p, r, f in data["globs"]],
            kernels={str(k): [str(n) for n in v] for k, v in data["kernels"].items()},
        )


class _Collector:
    """Inputs of a configure of ``configured`` (the tree CMake read: the source, or a
    ``build: pip`` project's copy of it), recorded as ``original`` (the source) has
    them: a copy holds files the generators wrote, which are outputs, not inputs."""

    def __init__(self, configured: Path, original: Path) -> None:
        self.roots = list(dict.fromkeys([configured, configured.resolve()]))
        self.original = original
        self.inputs = ConfigureInputs()

    def relative(self, path: str | Path, base: Path | None = None) -> str | None:
        candidate = Path(path)
        if not candidate.is_absolute():
            if base is None:
                return None
            candidate = base / candidate
        candidate = Path(os.path.normpath(candidate))
        for root in self.roots:
            with contextlib.suppress(ValueError):
                relative = PurePosixPath(candidate.relative_to(root))
                return None if _SKIP_DIRS.intersection(relative.parts) else str(relative)
        return None

    def file(self, relative: str) -> None:
        if relative not in self.inputs.files:
            self.inputs.files[relative] = state(self.original / relative)

    def glob(self, pattern: str, recurse: bool) -> None:
        read = GlobRead(pattern, recurse, tuple(glob_tree(self.original, pattern, recurse)))
        if read not in self.inputs.globs:
            self.inputs.globs.append(read)

    def python_tree(self, relative: str) -> None:
        """Every ``.py`` file under a directory a script may import from."""
        pattern = "*.py" if relative in ("", ".") else f"{relative}/*.py"
        self.glob(pattern, recurse=True)
        for found in glob_tree(self.original, pattern, recurse=True):
            self.file(found)

    def path(self, relative: str) -> None:
        """A path named on a command line: a file, or a directory of modules."""
        self.file(relative)
        if self.inputs.files[relative] == DIRECTORY:
            self.python_tree(relative)
        elif relative.endswith(".py"):
            self.python_tree(str(PurePosixPath(relative).parent))

    def record(self, record: TraceRecord) -> None:
        here = Path(record.file).parent
        if record.name == "execute_process":
            for argument in record.args:
                for token in _SEPARATORS.split(argument):
                    relative = self.relative(token) if token.startswith("/") else None
                    if relative is not None:
                        self.path(relative)
        elif record.name == "file" and record.args:
            operation = record.args[0].upper()
            if operation in ("GLOB", "GLOB_RECURSE"):
                for pattern in _glob_patterns(record.args[2:]):
                    relative = self.relative(pattern, here)
                    if relative is not None:
                        self.glob(relative, operation == "GLOB_RECURSE")
            elif operation in _FILE_READS and len(record.args) > 1:
                self._named(record.args[1], here)
        elif record.name == "configure_file" and record.args:
            self._named(record.args[0], here)
        elif record.name in ("if", "elseif"):
            for test, argument in zip(record.args, record.args[1:], strict=False):
                if test in _PATH_TESTS:
                    self._named(argument, None)

    def _named(self, path: str, base: Path | None) -> None:
        relative = self.relative(path, base)
        if relative is not None:
            self.file(relative)


def _glob_patterns(arguments: Iterable[str]) -> list[str]:
    """The patterns of ``file(GLOB VAR [options] patterns…)``, after the variable."""
    patterns: list[str] = []
    rest = iter(arguments)
    for argument in rest:
        if argument in _GLOB_OPTIONS:
            for _ in range(_GLOB_OPTIONS[argument]):
                next(rest, None)
        else:
            patterns.append(argument)
    return patterns


def configured_tree(project: Project, build_dir: Path) -> Path:
    """The tree CMake read: a ``build: pip`` project's copy, else the source."""
    return build_dir / PIP_SOURCE_COPY if project.build == "pip" else project.source


def collect(project: Project, build_dir: Path) -> ConfigureInputs | None:
    """The inputs of the configure in ``build_dir`` (of ``project.source``); None when
    it cannot be told (no ``cmakeFiles`` reply, no trace of the project's files)."""
    cmake_inputs = read_cmake_inputs(build_dir)
    trace = build_dir / TRACE_FILE
    if cmake_inputs is None or not trace.is_file():
        return None
    collector = _Collector(configured_tree(project, build_dir), project.source)
    for path in cmake_inputs:
        relative = collector.relative(path)
        if relative is not None:
            collector.file(relative)
    for record in read_trace(trace):
        collector.record(record)
    for path in project_cmake_files(project.source):
        collector.file(str(PurePosixPath(path.relative_to(project.source))))
    collector.glob("CMakeLists.txt", recurse=True)  # a new one anywhere is a change
    collector.glob("*.cmake", recurse=True)
    if project.configure is not None:
        for name in project.configure.python.requirements:
            collector.file(name)
    for source in compiled_sources(build_dir):
        relative = collector.relative(source)
        if relative is not None and (project.source / relative).is_file():
            collector.inputs.kernels[relative] = declared_kernels(project.source / relative)
    return collector.inputs


# --- the index -------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A recorded configure whose inputs ``root`` leaves unchanged."""

    entry: str  # the cell-cache key of its configure-tier entry
    source: str  # the tree it configured
    inputs: int  # how many inputs were compared


def index_path(key: str) -> Path:
    return cache_root() / "configure-inputs" / f"{key}.json"


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return []
    records = data.get("records")
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def lookup(key: str, root: Path, tier: str = "configure") -> Match | None:
    """The most recent configure recorded for ``key`` whose inputs ``root`` has
    unchanged and whose result the cell cache still holds."""
    for record in _records(index_path(key)):
        try:
            inputs = ConfigureInputs.from_json(record["inputs"])
            entry, source = str(record["entry"]), str(record["source"])
        except (KeyError, TypeError, ValueError):
            continue  # a damaged record is no answer
        stored = cellcache.cache_path(entry, tier) / "result.json"
        if stored.is_file() and inputs.first_change(root) is None:
            size = len(inputs.files) + len(inputs.globs) + len(inputs.kernels)
            return Match(entry, source, size)
    return None


def remember(key: str, entry: str, source: Path, inputs: ConfigureInputs) -> None:
    """Record that the cell-cache entry ``entry`` is the configure of ``source``, which
    read ``inputs`` (the newest first; at most MAX_RECORDS per key)."""
    path = index_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path.with_suffix(".lock")), timeout=60):
            records = [r for r in _records(path) if r.get("entry") != entry]
            fresh = {"entry": entry, "source": str(source), "inputs": inputs.to_json()}
            records = [fresh, *records][:MAX_RECORDS]
            write_json(path, {"format": INDEX_FORMAT, "records": records})
    except Timeout:
        raise IndexNotWritten(f"{path}: locked by another process for 60 s") from None


class IndexNotWritten(KernelMatrixError):
    """The index could not be written (the cell's own result still stands)."""


def answer(
    key: str, project: Project, build_dir: Path, log: Path, tier: str = "configure"
) -> tuple[CellResult, str] | None:
    """The result of a recorded configure of another tree whose inputs this
    ``project.source`` has unchanged, restored into ``build_dir`` and ``log`` and
    rebased onto them and this tree; with the cell-cache key it came from. None:
    configure (no record matches, or its entry vanished meanwhile)."""
    match = lookup(key, project.source, tier)
    if match is None:
        return None
    stored = cellcache.load(match.entry, tier)
    if stored is None:
        return None
    sources = (match.source, str(project.source))
    header = (
        "# kernel-matrix: this cell was answered from the configure of another tree,\n"
        f"# {match.source}: none of the {match.inputs} inputs that configure read (CMake\n"
        "# files, generator scripts, globs, requirement pins, declared kernel names) differs\n"
        f"# in {project.source}, so CMake was not run (configure-input index).\n"
    )
    try:
        cellcache.restore(stored, build_dir, log, header=header, also_replace=sources)
    except OSError:
        return None
    result = stored.result
    cellcache.rebase(result, build_dir, also_replace=sources)
    return result, match.entry


def record(key: str, entry: str, project: Project, build_dir: Path) -> str | None:
    """Record what the configure just made in ``build_dir`` read, pointing at the
    cell-cache entry ``entry``. An optimisation, like the cache: a failure is
    returned as a warning line (None: recorded, or nothing to record -- the entry
    was not stored, or the configure's inputs cannot be told)."""
    try:
        if not (cellcache.cache_path(entry, "configure") / "result.json").is_file():
            return None
        inputs = collect(project, build_dir)
        if inputs is not None:
            remember(key, entry, project.source, inputs)
    except (KernelMatrixError, OSError) as exc:
        reason = str(exc) if isinstance(exc, KernelMatrixError) else f"{exc.filename}: {exc}"
        return f"kernel-matrix: configure-input index not written: {reason}"
    return None
