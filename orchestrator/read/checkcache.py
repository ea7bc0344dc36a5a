"""The check cache: what a lazy read (``orchestrator.read.demand``) of a library found,
kept by content, so that checking the same wheel again -- a nightly re-check,
another device list -- decodes nothing it already has.

One record per library and family set: every fatbin entry's target, container and
code object as read (skipped, listed or judged). A later check plans its own reads
from the record's headers (``demand.plan``): when the record answers all of them the
library is not even opened; otherwise it is read, reusing what the record has, and
the record grows.

A whole check is kept too, by the same inputs: its result is answered again without
opening a library when the paths (regular files: their size, modification time and
inode), the families, the devices, the CUDA version and the log lines are the same.

Keys: a wheel member by the zip directory's CRC-32 and sizes (reading them costs
nothing), a file by its size, modification time and inode; then the library's path
(which families may live in it), the families' matching rules, this tool's code (its
version and a digest of its own source files: a changed reader never answers from an
older one's records) and the record format. Records live under ``<cache>/check``, at most
``MAX_RECORDS`` of them (least recently used go first); a damaged record is a miss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.read.library import ReadEntry

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.archs import Target
from orchestrator.common.errors import KernelMatrixError
from orchestrator.common.fsutil import cache_root, prune_least_recent, write_atomic
from orchestrator.read.demand import JUDGE, LIST, SKIP, Demand
from orchestrator.read.inventory import CodeObject, library_identity

RECORD_FORMAT = "2"  # 2: each entry's bytes (size, stored)
MAX_RECORDS = 64
_ACTIONS = (SKIP, LIST, JUDGE)


def records_dir() -> Path:
    return cache_root() / "check"


def member_key(library: str, info: zipfile.ZipInfo, demand: Demand) -> str:
    """A wheel member's key, from the zip directory alone."""
    return _key(library, f"zip:{info.CRC:08x}:{info.file_size}:{info.compress_size}", demand)


def file_key(library: str, path: Path, demand: Demand) -> str:
    """A library file's key, from its metadata."""
    stat = path.stat()
    return _key(
        library, f"file:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_dev}:{stat.st_ino}", demand
    )


@cache
def code_digest() -> str:
    """This tool's version and a digest of its own Python sources."""
    digest = hashlib.sha256(__version__.encode())
    package = Path(__file__).resolve().parents[1]  # the whole orchestrator package
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _key(library: str, content: str, demand: Demand) -> str:
    parts = (code_digest(), RECORD_FORMAT, library_identity(library), content, demand.digest())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def result_key(
    paths: Sequence[Path], rules: Sequence[Any], devices: Sequence[Any], *other: object
) -> str | None:
    """The key of a whole check, or None when a path is not a regular file (a
    directory's libraries are keyed one by one)."""
    parts = [code_digest(), RECORD_FORMAT, repr(tuple(rules)), repr(tuple(devices)), repr(other)]
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        parts.append(
            f"{path}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_dev}:{stat.st_ino}"
        )
    return "result-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def load_result(key: str) -> dict[str, Any] | None:
    """A whole check's JSON document, kept by ``store_result``."""
    try:
        data = json.loads((records_dir() / f"{key}.json").read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def store_result(key: str, document: dict[str, Any]) -> None:
    """Keep a whole check's JSON document (best effort)."""
    _write(key, document)


def has_record(key: str) -> bool:
    """Whether there is a record of ``key`` (damaged or not: a guess, to plan by)."""
    return (records_dir() / f"{key}.json").exists()


def load(key: str) -> list[ReadEntry]:
    """The record of ``key``; empty when there is none or it is damaged."""
    path = records_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_bytes())
        entries = [_entry(item) for item in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, KernelMatrixError):
        return []
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used
    return entries


def store(key: str, entries: Sequence[ReadEntry]) -> None:
    """Keep a record (best effort: the cache is an optimisation). A library without
    device code has nothing to reuse: reading its header again costs less than a
    record (a wheel may hold 100 000 of them)."""
    if not entries:
        return
    _write(key, {"format": RECORD_FORMAT, "entries": [_item(entry) for entry in entries]})


def _write(key: str, data: dict[str, Any]) -> None:
    """Write ``<key>.json`` whole or not at all, then keep the cache within its bound."""
    directory = records_dir()
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(
            directory / f"{key}.json", json.dumps(data, separators=(",", ":")), durable=False
        )
        prune_least_recent(directory, MAX_RECORDS)


def _item(entry: ReadEntry) -> dict[str, Any]:
    return {
        "target": entry.target.name,
        "container": entry.container,
        "action": entry.action,
        "code": entry.code.to_json() if entry.code is not None else None,
        "size": entry.size,
        "stored": entry.stored,
    }


def _entry(item: dict[str, Any]) -> ReadEntry:
    from orchestrator.read.library import ReadEntry

    action = item["action"]
    if action not in _ACTIONS:
        raise ValueError(action)
    code = CodeObject.from_json(item["code"]) if item["code"] is not None else None
    if (code is None) != (action == SKIP):
        raise ValueError("a read entry without its code object")
    return ReadEntry(
        Target.parse(item["target"]),
        int(item["container"]),
        action,
        code,
        int(item["size"]),
        int(item["stored"]),
    )
