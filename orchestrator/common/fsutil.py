"""Atomic file writes: a result is either entirely there or not there at all, so an
interrupted run never leaves a half-written cell behind."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.common.cachedir import cache_root as cache_root  # (re-exported)
from orchestrator.common.errors import FileSystemError, KernelMatrixError, OutputBusy


def _umask() -> int:
    # Read once, at import (single-threaded): os.umask can only be read by setting it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``path`` whole or not at all; a failure (disk full, no permission) is one
    :class:`FileSystemError` naming the file (exit 3), never a traceback. ``durable``:
    synced to disk before it replaces ``path`` (results); a cache, whose damaged
    record is only a miss, skips that wait."""
    try:
        _write_atomic(path, text, durable)
    except OSError as exc:
        raise FileSystemError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_atomic(path: Path, text: str, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would, so that
        # reports can be served or read by others (a web server, a CI artifact step).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def staged_directory(target: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory next to ``target`` to fill; when the block ends without an
    error it replaces ``target`` (one rename), otherwise it is removed: ``target`` is
    whole or absent, never half-installed."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def sole_writer(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock while writing results or reports into it: one writer
    at a time, so that two runs given one ``--out`` never overwrite each other's
    cells. A second writer is refused at once (:class:`OutputBusy`, exit 3). The lock
    is the kernel's ``flock`` on the directory itself: it leaves no file behind and
    goes with the process, even a SIGKILLed one."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileSystemError(f"cannot create {directory}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusy(
                f"{directory}: another kernel-matrix process is writing to this directory; "
                "wait for it to finish, or give another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # (closing releases the lock)


# --- reading what a user gives us ------------------------------------------------------

# Limits on files read whole (documented in docs/security.md). Real matrix and
# families files are a few KiB (matrices/vllm.yaml: 14 KB), and PyYAML's parser is
# slow on structured YAML (2 000 include entries, 90 KB: 14 s on the busy 2-core
# development machine), so 1 MiB bounds a parse to a minute at worst; a vLLM run's
# results.json with every inventory is tens of MB.
MAX_CONFIG_BYTES = 1 << 20
MAX_ARTIFACT_BYTES = 1 << 30
# JSON artifacts kernel-matrix writes are at most 8 levels deep; the standard
# library's parser and jsonschema recurse, so a deeper document is refused up front.
MAX_JSON_DEPTH = 64

_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "not a regular file (a named pipe)"),
    (stat.S_ISCHR, "not a regular file (a character device)"),
    (stat.S_ISBLK, "not a regular file (a block device)"),
    (stat.S_ISSOCK, "not a regular file (a socket)"),
)


def not_regular(mode: int) -> str | None:
    """Why a file of this mode cannot be read as an input (None: it can)."""
    if stat.S_ISREG(mode):
        return None
    return next((why for test, why in _KINDS if test(mode)), "not a regular file")


def open_regular(path: Path, error: type[KernelMatrixError]) -> int:
    """A read-only descriptor of ``path``, refused (``error``, one line) unless it is
    a regular file: a FIFO would block the reader forever and ``/dev/zero`` never
    ends. Opened non-blocking, so that opening a FIFO does not wait for a writer.
    ``FileNotFoundError`` is left to the caller, which knows what was missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    why = not_regular(os.fstat(fd).st_mode)
    if why is not None:
        os.close(fd)
        raise error(f"{path}: cannot read: {why}")
    os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, error: type[KernelMatrixError], *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (else ``error``)."""
    fd = open_regular(path, error)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise error(
                f"{path}: {size} bytes, more than a {what} may have ({limit} bytes); refusing it"
            )
        chunks = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if got > limit:  # it grew while being read
        raise error(f"{path}: more than a {what} may have ({limit} bytes); refusing it")
    return b"".join(chunks)


def read_text(path: Path, error: type[KernelMatrixError], *, limit: int, what: str) -> str:
    """A regular file's UTF-8 text (bad bytes are one line naming the offset)."""
    data = read_regular(path, error, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read: not UTF-8 text (byte {exc.start})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: json reads it as inf
        raise ValueError(f"{text[:20]} is out of range")
    return value


# Every integer an artifact holds (sizes, counts, seconds) fits 64 bits; a longer one
# would pass the schema and overflow later (float(), formatting) in a report.
MAX_JSON_INT_DIGITS = 19


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


# The only way a lone surrogate gets into parsed JSON (the text itself is UTF-8):
# a \ud800-\udfff escape. Such a string cannot be written out again.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def load_json_file(path: Path, error: type[KernelMatrixError], *, what: str) -> Any:
    """Parse a JSON artifact: a regular file, at most MAX_ARTIFACT_BYTES, UTF-8, no
    NaN/Infinity, no integer beyond 64 bits' 19 digits, at most MAX_JSON_DEPTH levels deep; anything else is ``error``
    naming the file (the caller validates the content against its schema)."""
    text = read_text(path, error, limit=MAX_ARTIFACT_BYTES, what=what)
    try:
        data = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except RecursionError:
        raise error(f"{path}: not a {what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints of more than 4300 digits
        raise error(f"{path}: not a {what}: not JSON ({exc})") from None
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{path}: not a {what}: nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"{path}: not a {what}: a string holds a lone surrogate") from None
    return data


def json_depth(data: Any) -> int:
    """How deeply lists and objects nest in ``data`` (a scalar is 0), without recursion.

    >>> json_depth({"a": [1, {"b": []}]})
    4
    """
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth  # deep enough to refuse; no need to walk on
        stack.extend((child, depth + 1) for child in children)
    return deepest


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, without recursion (a tree nested thousands deep
    would exhaust Python's stack in ``Path.rglob``) and, like ``rglob``, without
    descending into symbolic links to directories (no loops). Unreadable directories
    are an OSError for the caller."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    yield Path(entry.path)


def walk_dirs(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` (top-down, the same order, ``dirs`` may be pruned in place)
    without recursion: Python 3.11's ``os.walk`` recurses per level. As there,
    symbolic links to directories are listed in ``dirs`` but not entered."""
    stack = [str(top)]
    while stack:
        root = stack.pop()
        dirs: list[str] = []
        files: list[str] = []
        links: set[str] = set()
        try:
            with os.scandir(root) as entries:
                for entry in entries:
                    if entry.is_dir():
                        dirs.append(entry.name)
                        if entry.is_symlink():
                            links.add(entry.name)
                    else:
                        files.append(entry.name)
        except OSError:
            continue  # as os.walk: an unreadable directory is skipped
        yield root, dirs, files
        stack.extend(os.path.join(root, d) for d in reversed(dirs) if d not in links)


def prune_least_recent(directory: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently modified ``*.json`` records of a cache
    directory (a record is touched when it is used)."""
    records = []
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError):
            records.append((path.stat().st_mtime, path))
    for _, path in sorted(records)[: max(0, len(records) - keep)]:
        path.unlink(missing_ok=True)
