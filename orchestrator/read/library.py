"""Reading one library's fatbins: every ``.nv_fatbin`` section walked (the layout is
:mod:`orchestrator.read.fatbin`'s), its entries bounded, decoded here or by worker
processes for a large library, and what an earlier lazy read kept reused.

:func:`read_library` is what the probe calls for each shared object.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from orchestrator.archs import Target
from orchestrator.common.errors import InputFileError
from orchestrator.read.demand import JUDGE, LIST, SKIP, Demand
from orchestrator.read.elf import (
    Blob,
    FileBlob,
    Section,
    sections_named,
)
from orchestrator.read.fatbin import (
    FATBIN_SECTION,
    FLAG_LZ4,
    FLAG_ZSTD,
    KIND_PTX,
    Entry,
    code_object,
    decoded_object,
    iter_entries,
    payload,
    raw_payload,
    stored_length,
)
from orchestrator.read.inventory import (
    NOT_JUDGED,
    CodeBytes,
    CodeObject,
    Kernel,
    Library,
    code_bytes,
)

# Libraries whose fatbins are at least this large are decoded by worker processes
# (when more than one is allowed): below it, starting them costs more than it saves.
PARALLEL_MIN_BYTES = 8 << 20
# Entries handed out ahead of the one being collected, per worker: enough that a
# large entry (a PTX module decodes 20x slower than a cubin) does not leave the
# other workers idle while the results are collected in order. Memory stays
# bounded: each worker holds one decompressed entry at a time, and this process
# holds the stored payloads in flight only for a wheel member (a worker reads a
# file's payload itself), at most AHEAD_BYTES of them.
AHEAD_PER_WORKER = 16
AHEAD_BYTES = 64 << 20
AHEAD_HERE = 4  # entries decompressed ahead by the reading thread (in this process)
# The interpreter's switch interval while the reading thread runs. When it finishes an
# entry it needs the GIL back, and this thread, busy parsing, hands it over only every
# switch interval (5 ms by default): hundreds of entries a library made the reading
# thread wait about a third of its time (measured: 1.05 s for 0.62 s of zstd).
READING_SWITCH_INTERVAL = 0.0005


class _LoweredSwitchInterval:
    """The interval lowered while any reading thread runs (``run`` reads cells in
    threads, each with its own decoder), the interpreter's own back after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers = 0
        self._own = 0.0

    def enter(self) -> None:
        with self._lock:
            if not self._readers:
                self._own = sys.getswitchinterval()
                sys.setswitchinterval(min(self._own, READING_SWITCH_INTERVAL))
            self._readers += 1

    def leave(self) -> None:
        with self._lock:
            self._readers -= 1
            if not self._readers:
                sys.setswitchinterval(self._own)


_SWITCH_INTERVAL = _LoweredSwitchInterval()


# --- decoding entries, here or in worker processes ----------------------------------


class EntryDecoder:
    """Turns fatbin entries into code objects, in order: in this process, or, for a
    large library and ``workers`` > 1, in a pool of worker processes (started on
    first use, kept for the next libraries, stopped on leaving the ``with`` block).

    Memory stays bounded whatever the library's size: entries are handed out at
    most ``AHEAD_PER_WORKER`` per worker ahead of the one being collected; a worker
    reads its payload itself when the library is a file (``FileBlob``), so only
    wheel members' stored payloads travel through this process, at most
    ``AHEAD_BYTES`` of them at a time (and always at least one).
    """

    def __init__(
        self, workers: int = 1, demand: Demand | None = None, *, cache: bool = False
    ) -> None:
        self.workers = max(1, workers)
        self.demand = demand  # read lazily, for these families and devices (check)
        self.cache = cache and demand is not None  # keep lazy reads (orchestrator.read.checkcache)
        self._pool: ProcessPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None

    def __enter__(self) -> EntryDecoder:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop_reader(cancel=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def decode(
        self, blob: Blob, entries: Iterator[Entry], size: int, library: str = ""
    ) -> Iterator[CodeObject]:
        """The code object of every entry, in order; ``size`` is the fatbin's size,
        ``library`` the library's label (which families may live in it)."""
        if self.workers == 1 or size < PARALLEL_MIN_BYTES:
            yield from self._decode_here(blob, entries, library)
            return
        pool = self._start()
        window: deque[tuple[Future[CodeObject], int]] = deque()
        in_flight = 0  # stored bytes held in this process for the window
        try:
            for entry in entries:
                if isinstance(blob, FileBlob):
                    task = pool.submit(
                        _decode_file_entry,
                        blob.path,
                        entry,
                        stored_length(entry),
                        blob.name,
                        library,
                    )
                    held = 0
                else:
                    stored = raw_payload(blob, entry)
                    task = pool.submit(_decode_stored, entry, stored, blob.name, library)
                    held = len(stored)
                window.append((task, held))
                in_flight += held
                while window and (
                    len(window) >= self.workers * AHEAD_PER_WORKER or in_flight > AHEAD_BYTES
                ):
                    done, held = window.popleft()
                    in_flight -= held
                    yield done.result()
            while window:
                yield window.popleft()[0].result()
        finally:
            for task, _ in window:
                task.cancel()

    def _decode_here(
        self, blob: Blob, entries: Iterator[Entry], library: str
    ) -> Iterator[CodeObject]:
        """In this process. zstd, LZ4 and zlib release the GIL: one thread reads and
        decompresses the next entries (at most AHEAD_HERE of them, AHEAD_BYTES
        decompressed, and always one) while this thread parses the current one, so
        on two cores the decompression costs almost no wall time."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="kernel-matrix-read")
            _SWITCH_INTERVAL.enter()
        window: deque[tuple[Entry, Future[bytes], int]] = deque()
        held = 0
        try:
            for entry in entries:
                size = _bytes(entry)[0]
                window.append((entry, self._reader.submit(payload, blob, entry), size))
                held += size
                while window and (len(window) > AHEAD_HERE or held > AHEAD_BYTES):
                    done, data, size = window.popleft()
                    held -= size
                    yield decoded_object(done, data.result(), blob.name, self.demand, library)
            while window:
                done, data, _ = window.popleft()
                yield decoded_object(done, data.result(), blob.name, self.demand, library)
        finally:
            for _, data, _ in window:
                data.cancel()

    def _stop_reader(self, *, cancel: bool) -> None:
        if self._reader is not None:
            self._reader.shutdown(wait=True, cancel_futures=cancel)
            self._reader = None
            _SWITCH_INTERVAL.leave()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._stop_reader(cancel=False)  # (so that the workers may be forked: _context)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(),
                initializer=_worker_init,
                initargs=(self.demand,),
            )
        return self._pool


def _context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (Linux, this process single-threaded): workers start in
    milliseconds; else forkserver (or spawn), which never forks a threaded process."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


_WORKER_DEMAND: Demand | None = None  # in a worker: the decoder's demand


def _worker_init(demand: Demand | None) -> None:
    global _WORKER_DEMAND
    _WORKER_DEMAND = demand
    # Ctrl-C is for the main process, which stops the pool; a worker only finishes
    # its entry.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_stored(entry: Entry, stored: bytes, name: str, library: str) -> CodeObject:
    """In a worker: decode a stored payload."""
    return code_object(entry, stored, name, _WORKER_DEMAND, library)


def _decode_file_entry(path: str, entry: Entry, length: int, name: str, library: str) -> CodeObject:
    """In a worker: read an entry's stored payload from the file, then decode it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        stored = FileBlob.pread(fd, entry.payload_offset, length)
    finally:
        os.close(fd)
    if len(stored) != length:
        raise InputFileError(
            f"{name}: truncated: could not read a payload at {entry.payload_offset}"
        )
    return _decode_stored(entry, stored, name, library)


# Work bounds per library (docs/security.md). vLLM 0.33.0's _C_stable_libtorch holds
# 512 entries (484 cubins, 28 PTX), 710 MB decompressed; a hostile file of a few MB
# can claim far more (a million empty PTX entries, or zstd's 32 768:1 ratio), so
# past these bounds, hundreds of times a real library, it is refused.
MAX_ENTRIES_PER_LIBRARY = 1 << 16
MAX_DECOMPRESSED_PER_LIBRARY = 16 << 30


def fatbin_ranges(blob: Blob, sections: list[Section]) -> list[tuple[int, int, int]]:
    """The distinct (offset, size, alignment) byte ranges of the ``.nv_fatbin``
    sections, in file order: section headers that repeat one range are read once
    (thousands of headers may name one fatbin; the largest alignment they give is
    kept), and ranges that partly overlap are corrupt."""
    aligns: dict[tuple[int, int], int] = {}
    for s in sections:
        if s.size:
            aligns[s.offset, s.size] = max(aligns.get((s.offset, s.size), 0), s.align)
    ranges = sorted((offset, size, align) for (offset, size), align in aligns.items())
    for (offset, size, _), (next_offset, _, _) in itertools.pairwise(ranges):
        if next_offset < offset + size:
            raise InputFileError(
                f"{blob.name}: corrupt ELF: {FATBIN_SECTION} sections overlap "
                f"(at offsets {offset} and {next_offset})"
            )
    return ranges


def bounded(entries: Iterator[Entry], name: str, seen: list[int]) -> Iterator[Entry]:
    """``entries``, refused once the library has more than MAX_ENTRIES_PER_LIBRARY
    or its payloads more than MAX_DECOMPRESSED_PER_LIBRARY bytes decompressed
    (``seen``: [entries, bytes] so far in this library, updated)."""
    for entry in entries:
        seen[0] += 1
        compressed = entry.flags & (FLAG_ZSTD | FLAG_LZ4)
        seen[1] += entry.uncompressed_size if compressed else entry.payload_size
        if seen[0] > MAX_ENTRIES_PER_LIBRARY:
            raise InputFileError(
                f"{name}: more than {MAX_ENTRIES_PER_LIBRARY} fatbin entries in one library "
                "(a real one has a few thousand); refusing it"
            )
        if seen[1] > MAX_DECOMPRESSED_PER_LIBRARY:
            raise InputFileError(
                f"{name}: fatbin entries of more than {MAX_DECOMPRESSED_PER_LIBRARY >> 30} GiB "
                "decompressed in one library; refusing it"
            )
        yield entry


@dataclass(frozen=True)
class ReadEntry:
    """One fatbin entry as a read left it: what the check cache keeps per library
    (``orchestrator.read.checkcache``), so that another run -- other devices too -- can
    reuse every code object it has and decode only the rest."""

    target: Target
    container: int
    action: str  # demand.SKIP / LIST / JUDGE: what was done with it
    code: CodeObject | None  # None when skipped
    size: int = 0  # its bytes uncompressed, and as stored (CodeBytes)
    stored: int = 0

    def serves(self, action: str) -> bool:
        """Whether this reading answers ``action`` (a judged one answers a listing)."""
        return action == SKIP or self.action == JUDGE or self.action == action


def read_library(
    blob: Blob,
    path: str,
    decoder: EntryDecoder | None = None,
    known: Sequence[ReadEntry] = (),
    record: list[ReadEntry] | None = None,
) -> Library:
    """The inventory of one shared object (or any ELF file) with the native reader;
    ``decoder`` may spread the work over processes, and with a demand reads only
    what its verdicts need (``orchestrator.read.demand``). ``known``: an earlier read of
    the same bytes for the same families, whose code objects are reused where they
    answer; ``record`` receives every entry as known after this read."""
    fatbins = sections_named(blob, FATBIN_SECTION)
    decoder = decoder or EntryDecoder()
    demand = decoder.demand
    cubins: list[CodeObject] = []
    ptx: list[CodeObject] = []
    unread: list[Target] = []
    seen = [0, 0]
    index = 0
    sizes: list[tuple[str, int, int]] = []
    for offset, size, align in fatbin_ranges(blob, fatbins):
        entries = list(bounded(iter_entries(blob, offset, size, align), blob.name, seen))
        headers = [(entry.target, entry.container) for entry in entries]
        actions = demand.plan(headers) if demand else [JUDGE] * len(entries)
        earlier = [
            known[index + i]
            if index + i < len(known)
            and known[index + i].target == target
            and known[index + i].container == container
            else None
            for i, (target, container) in enumerate(headers)
        ]
        todo = [
            entry
            for entry, action, old in zip(entries, actions, earlier, strict=True)
            if action != SKIP and not (old and old.serves(action))
        ]
        decoded = iter(decoder.decode(blob, iter(todo), size, path))
        for entry, action, old in zip(entries, actions, earlier, strict=True):
            if action == SKIP:
                unread.append(entry.target)
                now = old or ReadEntry(entry.target, entry.container, SKIP, None, *_bytes(entry))
            elif old and old.serves(action):
                now = old
            else:
                code = next(decoded)
                now = ReadEntry(entry.target, entry.container, action, code, *_bytes(entry))
            if action != SKIP and now.code is not None:
                (ptx if entry.kind == KIND_PTX else cubins).append(
                    _as_listed(now.code) if action == LIST and now.action == JUDGE else now.code
                )
            if record is not None:
                record.append(now)
        index += len(entries)
        sizes += [(entry.target.name, *_bytes(entry)) for entry in entries]
    return Library(
        path, tuple(cubins), tuple(ptx), tuple(t.name for t in unread), code_bytes(sizes)
    )


def _bytes(entry: Entry) -> tuple[int, int]:
    """An entry's bytes uncompressed (as ``cuobjdump -xelf`` writes the cubin) and as
    stored in the fatbin."""
    compressed = entry.flags & (FLAG_ZSTD | FLAG_LZ4)
    return (entry.uncompressed_size if compressed else entry.payload_size), stored_length(entry)


def library_bytes(blob: Blob) -> tuple[CodeBytes, ...]:
    """Per target, the bytes of a library's fatbin entries, from their headers alone
    (what the cuobjdump engine records: cuobjdump prints no size)."""
    seen = [0, 0]
    return code_bytes(
        (entry.target.name, *_bytes(entry))
        for offset, size, align in fatbin_ranges(blob, sections_named(blob, FATBIN_SECTION))
        for entry in bounded(iter_entries(blob, offset, size, align), blob.name, seen)
    )


def library_from_record(path: str, known: Sequence[ReadEntry], demand: Demand) -> Library | None:
    """The library as ``read_library`` would give it, from an earlier read alone;
    None when that read lacks a code object this demand needs."""
    actions = demand.plan([(entry.target, entry.container) for entry in known])
    cubins: list[CodeObject] = []
    ptx: list[CodeObject] = []
    unread: list[str] = []
    for entry, action in zip(known, actions, strict=True):
        if action == SKIP:
            unread.append(entry.target.name)
        elif not entry.serves(action) or entry.code is None:
            return None
        else:
            code = (
                _as_listed(entry.code) if action == LIST and entry.action == JUDGE else entry.code
            )
            (ptx if entry.target.ptx else cubins).append(code)
    sizes = code_bytes((entry.target.name, entry.size, entry.stored) for entry in known)
    return Library(path, tuple(cubins), tuple(ptx), tuple(unread), sizes)


def _as_listed(code: CodeObject) -> CodeObject:
    """A judged code object as a listing gives it: its kernels NOT_JUDGED (so that a
    read from the cache is the read itself, whatever an earlier run judged)."""
    return replace(
        code,
        kernels=tuple(Kernel(k.name, k.mangled, k.size, NOT_JUDGED, False) for k in code.kernels),
    )


def container_spans(path: Path) -> list[tuple[int, int]]:
    """(file offset, length) of every fatbin container of the library at ``path``, in
    file order: what the CUDA driver takes as one image (``cuModuleLoadData``). Read
    from the headers alone, with the same bounds as an inventory."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        blob = FileBlob(str(path), f.fileno(), size, str(path))
        spans: dict[int, int] = {}
        seen = [0, 0]
        for offset, length, align in fatbin_ranges(blob, sections_named(blob, FATBIN_SECTION)):
            for entry in bounded(iter_entries(blob, offset, length, align), blob.name, seen):
                end = entry.payload_offset + entry.payload_size
                spans[entry.container] = max(spans.get(entry.container, 0), end)
    return [(start, end - start) for start, end in sorted(spans.items())]
