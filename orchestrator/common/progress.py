"""Progress of long work (a toolchain download, a build) for whoever shows it.

Work that takes long calls :func:`report` with one short line ("downloading CUDA
13.0 toolchain: 120 MB, 8.1 MB/s"); the run binds each worker thread to the cell
it works for (:func:`bind`), so the line is shown against that cell. Without a
sink (unit tests, library use) reports go nowhere. Showing is
``orchestrator.reporting.progress_view``'s business.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

Sink = Callable[[str | None, str], None]  # (cell id or None, message)

_lock = threading.Lock()
_sink: Sink | None = None
_cells: dict[int, str] = {}


def set_sink(sink: Sink | None) -> None:
    global _sink
    with _lock:
        _sink = sink
        _cells.clear()


def bind(cell_id: str | None) -> None:
    """The calling thread now works for ``cell_id`` (None: for no cell)."""
    with _lock:
        if cell_id is None:
            _cells.pop(threading.get_ident(), None)
        else:
            _cells[threading.get_ident()] = cell_id


def report(message: str) -> None:
    """Say what the calling thread is doing now."""
    with _lock:
        sink, cell = _sink, _cells.get(threading.get_ident())
    if sink is not None:
        sink(cell, message)


@contextlib.contextmanager
def ticking(line: Callable[[], str], every: float = 5.0) -> Iterator[None]:
    """Report ``line()`` at once and every ``every`` seconds while the block runs
    (from a thread of its own, bound to the caller's cell)."""
    with _lock:
        cell = _cells.get(threading.get_ident())
    stop = threading.Event()

    def loop() -> None:
        bind(cell)
        try:
            while not stop.wait(every):
                report(line())
        finally:
            bind(None)

    report(line())
    thread = threading.Thread(target=loop, daemon=True, name="progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
