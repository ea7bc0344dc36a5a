"""Progress of long work (a toolchain download, a build) for whoever shows it.

Work that takes long calls :func:`report` with one short line ("downloading CUDA
13.0 toolchain: 120 MB, 8.1 MB/s"); the run binds each worker thread to the cell
it works for (:func:`bind`), so the line is shown against that cell. Without a
sink (unit tests, library use) reports go nowhere. Showing is
``orchestrator.reporting.progress_view``'s business.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

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
