"""Probe: what device code a built library really contains.

``probe(paths)`` takes shared objects, wheels (each library member inflated once,
into memory or, past 128 MB, into a private temporary file deleted after reading;
nothing is unpacked under the member's own path) and directories (searched for ``*.so`` and
``*.so.N``), and returns an :class:`~orchestrator.read.inventory.Inventory`. Two engines
give the same inventory: ``native`` (our fatbin reader, no CUDA needed; the
default, being the faster) and ``cuobjdump`` (parses the real tool's output).

``family_presence(inventory, rules)`` then says, per kernel family, which cubins
and PTX modules hold a working (not hollow) kernel of it, and on which real
devices the driver would load one.
"""

from __future__ import annotations

import lzma
import os
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path

from orchestrator.common import progress
from orchestrator.common.errors import FileSystemError, InputFileError, UsageError
from orchestrator.common.fsutil import not_regular, open_regular, walk_files
from orchestrator.common.words import counted
from orchestrator.read import checkcache
from orchestrator.read.demand import Demand
from orchestrator.read.elf import ELF_MAGIC, Blob, BytesBlob, FileBlob
from orchestrator.read.engines import DEFAULT_ENGINE, ENGINES, Engine
from orchestrator.read.inventory import Inventory, Library
from orchestrator.read.library import EntryDecoder, ReadEntry, library_from_record, read_library


def probe(
    paths: Iterable[Path | str],
    *,
    engine: Engine = DEFAULT_ENGINE,
    cuobjdump: Path | None = None,
    jobs: int | None = None,
    only: Callable[[str], bool] | None = None,
    root: Path | None = None,
    demand: Demand | None = None,
    cache: bool = False,
) -> Inventory:
    """The inventory of every shared object under ``paths`` (files, wheels, dirs),
    in the order given (directories and wheels sorted by member path).

    ``jobs``: processes the native engine may use for a large library (default:
    this machine's usable CPUs; 1 reads everything in this process).
    ``only``: when given, a shared object found inside a wheel or a directory is
    read only if ``only(its path)`` is true (the member path inside a wheel, e.g.
    ``vllm/_C.abi3.so``; ``check`` skips the libraries no family can be in); a file
    named in ``paths`` is always read. ``root``: name each library by its path
    relative to this directory (the cell's build directory, where ``run`` found its
    artifacts), not as given. ``demand``: read only what the verdicts of these
    families on these devices need (native engine; ``orchestrator.read.demand``), and
    with ``cache`` keep and reuse those reads (``orchestrator.read.checkcache``)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown probe engine '{engine}' (choose from {', '.join(ENGINES)})")
    libraries: list[Library] = []
    workers = default_probe_jobs() if jobs is None else jobs
    with EntryDecoder(workers, demand, cache=cache) as decoder:
        for path in paths:
            libraries.extend(
                probe_path(
                    Path(path),
                    engine=engine,
                    cuobjdump=cuobjdump,
                    decoder=decoder,
                    only=only,
                    root=root,
                )
            )
    return Inventory(tuple(libraries))


def default_probe_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def probe_path(
    path: Path,
    *,
    engine: Engine = DEFAULT_ENGINE,
    cuobjdump: Path | None = None,
    decoder: EntryDecoder | None = None,
    only: Callable[[str], bool] | None = None,
    root: Path | None = None,
) -> list[Library]:
    """The libraries of one path: a shared object, a wheel or a directory (labelled
    relative to ``root`` when given)."""
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    decoder = decoder or EntryDecoder()
    wanted = only or (lambda _name: True)
    if path.is_dir():
        try:
            # walk_files: no recursion, so a tree nested thousands deep is no crash.
            shared = sorted(
                p for p in walk_files(path) if is_shared_object_name(p.name) and p.is_file()
            )
        except OSError as exc:
            where = exc.filename or path
            raise InputFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
        if not shared:
            # Probing nothing must not look like a clean probe.
            raise InputFileError(f"{path}: no shared objects (*.so, *.so.N) in this directory")
        found = [p for p in shared if wanted(p.as_posix())]
        unique = _dedup_links(found)
        tally = EngineProgress(len(unique), engine)
        libraries = []
        for p in unique:
            with tally.reading(_label(p, root), p.stat().st_size):
                libraries.append(_probe_file(p, _label(p, root), engine, cuobjdump, decoder))
        return libraries
    # Before anything opens it: a FIFO blocks its reader, /dev/zero never ends.
    why = not_regular(path.stat().st_mode)
    if why is not None:
        raise InputFileError(f"{path}: cannot read: {why}")
    if path.suffix == ".whl" or (zipfile.is_zipfile(path) and not _starts_with_elf(path)):
        return _probe_wheel(path, engine, cuobjdump, decoder, wanted, _label(path, root))
    with EngineProgress(1, engine).reading(_label(path, root), path.stat().st_size):
        return [_probe_file(path, _label(path, root), engine, cuobjdump, decoder)]


class EngineProgress:
    """The cuobjdump engine's progress (it takes minutes per large library: a vLLM
    wheel, 15 min), reported (``orchestrator.common.progress``) as it goes::

        cuobjdump engine: 2 of 12 libraries done; vllm/_C.abi3.so (93 MB) for 41 s; 95 s in all

    The native engine reads a wheel in seconds and says nothing."""

    def __init__(self, total: int, engine: Engine) -> None:
        self.total, self.done = total, 0
        self.quiet = engine != "cuobjdump"
        self.started = time.monotonic()

    def reading(self, label: str, size: int) -> AbstractContextManager[None]:
        if self.quiet:
            return nullcontext()
        return self._reading(label, size)

    @contextmanager
    def _reading(self, label: str, size: int) -> Iterator[None]:
        begun = time.monotonic()

        def line() -> str:
            now = time.monotonic()
            return (
                f"cuobjdump engine: {self.done} of {counted(self.total, 'library', 'libraries')} "
                f"done; {label} ({size / 1e6:.0f} MB) for {now - begun:.0f} s; "
                f"{now - self.started:.0f} s in all"
            )

        with progress.ticking(line):
            yield
        self.done += 1


def _label(path: Path, root: Path | None) -> str:
    if root is None:
        return str(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def is_shared_object_name(name: str) -> bool:
    """``x.so``, ``x.abi3.so``, ``libx.so.12``, ``libx.so.12.1``."""
    parts = name.split(".")
    if "so" not in parts[1:]:
        return False
    after = parts[len(parts) - 1 - parts[::-1].index("so") + 1 :]
    return all(p.isdigit() for p in after)


def _dedup_links(paths: Sequence[Path]) -> list[Path]:
    """Versioned-library symlinks (libx.so -> libx.so.1) name one file: probe it once."""
    seen: set[Path] = set()
    unique = []
    for p in paths:
        real = p.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(p)
    return unique


def _starts_with_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def _probe_file(
    path: Path, label: str, engine: Engine, cuobjdump: Path | None, decoder: EntryDecoder
) -> Library:
    if engine == "cuobjdump":
        from orchestrator.read.cuobjdump import probe_file

        _check_elf_file(path)
        return probe_file(path, label, cuobjdump)
    with _opened(path) as blob:
        if not decoder.cache:
            return read_library(blob, label, decoder)
        assert decoder.demand is not None
        key = checkcache.file_key(label, path, decoder.demand)
        return _read_cached(key, label, decoder, lambda: blob)


def _check_elf_file(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror}") from None
    if head != ELF_MAGIC:
        raise InputFileError(f"{path}: not an ELF file (no ELF magic)")


@contextmanager
def _opened(path: Path) -> Iterator[Blob]:
    """The file as a blob read piece by piece (``pread``): memory stays small
    whatever the library's size."""
    try:
        fd = open_regular(path, InputFileError)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file or directory") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InputFileError(f"{path}: empty file, not an ELF shared object")
        yield FileBlob(str(path), fd, size, str(path))
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _probe_wheel(
    path: Path,
    engine: Engine,
    cuobjdump: Path | None,
    decoder: EntryDecoder,
    wanted: Callable[[str], bool],
    wheel_label: str | None = None,
) -> list[Library]:
    """Libraries inside a wheel, read in place (zip-slip member names are refused),
    each labelled ``WHEEL!MEMBER``."""
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{path}: not a readable wheel (zip): {exc}") from None
    with archive:
        members = []
        shared = 0
        for info in archive.infolist():
            _check_member_name(path, info.filename)
            name = info.filename.rsplit("/", 1)[-1]
            if name and is_shared_object_name(name):  # (a directory's name ends in "/")
                shared += 1
                if wanted(info.filename):
                    members.append(info)
        if not shared:
            # As for a directory: probing nothing must not look like a clean probe.
            raise InputFileError(f"{path}: no shared objects (*.so, *.so.N) in this wheel")
        tally = EngineProgress(len(members), engine)
        # Read smallest first, listed by name: the first member is inflated with
        # nothing else to do (the smallest costs least), and each next one, no
        # smaller, is inflated on a thread while the one before is read.
        reading = sorted(members, key=lambda i: (i.file_size, i.filename))
        labels = [f"{wheel_label or path}!{info.filename}" for info in reading]
        read: dict[str, Library] = {}
        with _InflatedAhead(archive) as ahead:
            for index, (info, label) in enumerate(zip(reading, labels, strict=True)):
                if engine == "native" and index + 1 < len(reading):
                    following, its_label = reading[index + 1], labels[index + 1]
                    if ahead.worth(following) and _will_inflate(following, its_label, decoder):
                        ahead.start(following, its_label)
                with tally.reading(info.filename, info.file_size):
                    read[info.filename] = _probe_member(
                        archive, info, label, engine, cuobjdump, decoder, ahead
                    )
    return [read[name] for name in sorted(read)]


def _will_inflate(info: zipfile.ZipInfo, label: str, decoder: EntryDecoder) -> bool:
    """Whether the native engine reads the member (one its check record answers, it
    does not even inflate)."""
    if not decoder.cache or decoder.demand is None:
        return True
    return not checkcache.has_record(checkcache.member_key(label, info, decoder.demand))


def _check_member_name(wheel: Path, name: str) -> None:
    if not name:  # (zipfile's own is_dir() fails on it: found by fuzz/fuzz_fatbin.py)
        raise InputFileError(f"{wheel}: corrupt wheel: a member without a name")
    member = name.replace("\\", "/")
    if member.startswith("/") or ".." in member.split("/") or (name[1:2] == ":"):
        raise InputFileError(f"{wheel}: unsafe member path '{name}' (zip-slip); refusing the wheel")


ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# What reading a damaged zip raises: zipfile's own errors, and its decompressors'
# (deflate: zlib.error; LZMA: LZMAError, found by fuzz/fuzz_fatbin.py; bzip2: OSError).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    EOFError,
    OSError,
    ValueError,  # UnicodeDecodeError of a member name too
    NotImplementedError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


def _probe_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    label: str,
    engine: Engine,
    cuobjdump: Path | None,
    decoder: EntryDecoder,
    ahead: _InflatedAhead | None = None,
) -> Library:
    # What zipfile refuses with NotImplementedError / RuntimeError (a traceback before).
    if info.flag_bits & 0x1:
        raise InputFileError(f"{label}: encrypted wheel member; wheels are never encrypted")
    if info.compress_type not in ZIP_METHODS:
        raise InputFileError(
            f"{label}: corrupt wheel member: unknown compression method {info.compress_type}"
        )
    if engine == "cuobjdump":
        from orchestrator.read.cuobjdump import probe_stream

        try:
            with archive.open(info) as stream:
                return probe_stream(stream, label, cuobjdump)
        except ZIP_ERRORS as exc:
            raise InputFileError(f"{label}: corrupt wheel member: {exc}") from None
    if not decoder.cache:
        with _inflated(archive, info, label, ahead) as blob:
            return read_library(blob, label, decoder)
    assert decoder.demand is not None
    key = checkcache.member_key(label, info, decoder.demand)
    with ExitStack() as stack:  # (the member is inflated only when the record falls short)
        return _read_cached(
            key, label, decoder, lambda: stack.enter_context(_inflated(archive, info, label, ahead))
        )


def _read_cached(
    key: str, label: str, decoder: EntryDecoder, open_blob: Callable[[], Blob]
) -> Library:
    """A lazy read answered from the check cache where its record has every code
    object needed, else a read of the library that reuses what the record has (and
    a grown record)."""
    assert decoder.demand is not None
    known = checkcache.load(key)
    if known:
        library = library_from_record(label, known, decoder.demand)
        if library is not None:
            return library
    record: list[ReadEntry] = []
    library = read_library(open_blob(), label, decoder, known, record)
    checkcache.store(key, record)
    return library


# A real library is well under 1 GiB (vLLM's largest, 0.33.0's FlashAttention 2, is
# 308 MB); a member claiming more is refused before anything is written.
MAX_MEMBER_BYTES = 4 << 30
# Members up to this size are inflated into memory; larger ones into a temporary file
# (peak memory stays far under 1 GB whatever the wheel: vLLM 0.19.0's _C is 462 MB).
IN_MEMORY_MEMBER_BYTES = 128 << 20


# A smaller member inflates in less time than handing it to a thread costs (a wheel
# of 100 000 small members took twice as long with each one handed over).
INFLATE_AHEAD_MIN_BYTES = 4 << 20


class _InflatedAhead:
    """Wheel members inflated into memory in a thread while the one before is read:
    zlib lets go of the GIL, so on two cores the inflating overlaps the reading."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._archive = archive
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kernel-matrix-inflate")
        self._started: dict[str, Future[bytes]] = {}

    def worth(self, info: zipfile.ZipInfo) -> bool:
        """Whether the member is inflated ahead if it is read: large enough that the
        thread pays, small enough for memory, and not started already."""
        return (
            INFLATE_AHEAD_MIN_BYTES <= info.file_size <= IN_MEMORY_MEMBER_BYTES
            and info.filename not in self._started
        )

    def start(self, info: zipfile.ZipInfo, label: str) -> None:
        """Inflate a member ``worth`` it."""
        future = self._pool.submit(_inflate_into_memory, self._archive, info, label)
        self._started[info.filename] = future

    def take(self, info: zipfile.ZipInfo) -> bytes | None:
        """The member's bytes if it was started (its error, if inflating it failed)."""
        future = self._started.pop(info.filename, None)
        return None if future is None else future.result()

    def __enter__(self) -> _InflatedAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _inflate_into_memory(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    try:
        with archive.open(info) as stream:
            # (bounded: zipfile stops at the directory's file_size, checked before)
            data = stream.read()
    except ZIP_ERRORS as exc:
        raise InputFileError(f"{label}: corrupt wheel member: {exc}") from None
    if not data:
        raise InputFileError(f"{label}: empty wheel member, not an ELF shared object")
    return data


@contextmanager
def _inflated(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    label: str,
    ahead: _InflatedAhead | None = None,
) -> Iterator[Blob]:
    """The member inflated once: into memory, or for a large one into a private
    temporary file that kernel-matrix names (never the member's path) and deletes
    when done.

    Why not read the zip stream in place: a shared object's section table is at its
    end and its fatbin before it, and a deflate stream cannot seek back -- zipfile
    inflates the member again from its start for every backward step. Inflated
    once, it is read like any library (a file by worker processes too). A wheel of
    100 000 small members costs no file per member."""
    if info.file_size > MAX_MEMBER_BYTES:
        raise InputFileError(
            f"{label}: a wheel member of {info.file_size} bytes (more than "
            f"{MAX_MEMBER_BYTES >> 30} GiB); refusing it"
        )
    if info.file_size <= IN_MEMORY_MEMBER_BYTES:
        data = ahead.take(info) if ahead is not None else None
        yield BytesBlob(label, data or _inflate_into_memory(archive, info, label))
        return
    with tempfile.NamedTemporaryFile(prefix="kernel-matrix-member-", suffix=".so") as copy:
        try:
            with archive.open(info) as stream:
                while True:
                    try:
                        chunk = stream.read(1 << 20)
                    except ZIP_ERRORS as exc:
                        raise InputFileError(f"{label}: corrupt wheel member: {exc}") from None
                    if not chunk:
                        break
                    copy.write(chunk)
            copy.flush()
        except ZIP_ERRORS as exc:  # (opening the member: a damaged local header)
            if isinstance(exc, OSError) and exc.errno is not None:
                raise FileSystemError(
                    f"{label}: cannot inflate into {copy.name}: {exc.strerror} "
                    "(set TMPDIR to a directory with room)"
                ) from None
            raise InputFileError(f"{label}: corrupt wheel member: {exc}") from None
        size = os.fstat(copy.fileno()).st_size
        if size == 0:
            raise InputFileError(f"{label}: empty wheel member, not an ELF shared object")
        yield FileBlob(label, copy.fileno(), size, copy.name)
