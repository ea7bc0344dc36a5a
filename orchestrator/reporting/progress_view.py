"""What a run is doing while it runs: each running cell's elapsed time and current
step (the last command its log started, ninja's ``[12/40] Building ...``), and any
download (``orchestrator.common.progress``).

On a terminal this is a ``rich`` live display under the finished cells' lines; in a
CI log (no terminal) it is a plain line per running cell every ``interval`` seconds
(30), and at once when a cell's step changes, so a log never goes quiet for long and
never fills with the same line. A progress report (``downloading CUDA 13.0
toolchain: 3 files, …``) is a step (the words before its colon) and its detail."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from math import inf
from pathlib import Path
from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.common import progress
from orchestrator.reporting.console import say

PLAIN_INTERVAL_S = 30.0
TAIL_BYTES = 16384
_NINJA = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")


@dataclass
class _Running:
    cell_id: str
    log: Path
    started: float = field(default_factory=time.monotonic)
    step: str = "starting"
    detail: str = ""
    reported: bool = False  # step and detail come from a progress report, not the log
    said: str = ""  # the last step announced in plain mode
    said_at: float = field(default_factory=time.monotonic)


def step_name(argv: list[str]) -> str:
    """``cmake configure``, ``cmake --build``, ``pip wheel``: a logged command, short.

    >>> step_name(["/x/bin/cmake", "-S", "src", "-B", "b"]), step_name(["cmake", "--build", "b"])
    ('cmake configure', 'cmake --build')
    >>> step_name(["/usr/bin/python3", "-m", "pip", "wheel", "."])
    'pip wheel'
    """
    if not argv:
        return ""
    if "-m" in argv[:-1]:
        argv = argv[argv.index("-m") + 1 :]
    name = Path(argv[0]).name
    if name == "cmake":
        return "cmake --build" if "--build" in argv else "cmake configure"
    verb = next((a for a in argv[1:] if not a.startswith("-")), "")
    return f"{name} {verb}".strip()


def current_step(log: Path) -> tuple[str, str]:
    """(the last command the log started, what it is doing) of a build log: the last
    ninja progress line, ``("cmake --build", "[12/40] Building CUDA object …")``, or,
    during a configure, CMake's last status line (``-- Building libc++ …``: vLLM's
    configure runs minutes of such steps)."""
    try:
        with log.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return "", ""
    step = detail = ""
    for line in reversed(tail):
        if not detail and (_NINJA.match(line) or line.startswith("-- ")):
            detail = line.strip()[:100]
        if line.startswith("$ "):
            step = step_name(line[2:].split())
            break
    return step, detail


class RunProgress:
    """Context manager around a run: ``started(cell_id)`` from the worker thread that
    builds it (binds that thread for download reports), ``finished(cell_id)``."""

    def __init__(
        self, out: Console, logs: Path, *, live: bool | None = None, interval: float = 0
    ) -> None:
        self.out, self.logs = out, logs
        self.live = out.is_terminal if live is None else live
        self.interval = interval or (0.5 if self.live else PLAIN_INTERVAL_S)
        self._running: dict[str, _Running] = {}
        self._unbound: dict[str, _Running] = {}  # reports for no running cell, by cell id
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._live: Live | None = None

    # -- the run's callbacks ----------------------------------------------------------

    def started(self, cell_id: str) -> None:
        progress.bind(cell_id)
        with self._lock:
            self._running[cell_id] = _Running(cell_id, self.logs / f"{cell_id}.log")

    def finished(self, cell_id: str) -> None:
        with self._lock:
            self._running.pop(cell_id, None)

    def _reported(self, cell_id: str | None, message: str) -> None:
        step, _, detail = message.partition(": ")
        with self._lock:
            running = self._running.get(cell_id or "")
            if running is None:  # work for no running cell: said as a cell's would be
                running = self._unbound.setdefault(
                    cell_id or "", _Running(cell_id or "kernel-matrix", Path(), said_at=-inf)
                )
            running.step, running.detail, running.reported = step, detail, True
        if not self.live:
            self._say(running, time.monotonic())

    def _say(self, cell: _Running, now: float) -> None:
        """One plain line for ``cell``: at once when its step changed, else once
        ``interval`` has passed since its last line."""
        with self._lock:
            if cell.step == cell.said and now - cell.said_at < self.interval:
                return
            cell.said, cell.said_at = cell.step, now
            took = "" if cell.reported else f"{now - cell.started:.0f} s, "
            detail = f"{': ' if cell.reported else ' '}{cell.detail}" if cell.detail else ""
        say(self.out, f"… {cell.cell_id}: {took}{cell.step}{detail}")

    # -- showing ------------------------------------------------------------------------

    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            running = list(self._running.values())
        for cell in running:
            # The log is written once the toolchain is there: its step wins.
            step, detail = current_step(cell.log)
            if step:
                with self._lock:
                    cell.step, cell.detail, cell.reported = step, detail, False
        if self.live:
            with self._lock:  # and work for no running cell (a check's cuobjdump engine)
                unbound = list(self._unbound.values())
            if self._live is not None:
                self._live.update(self._table(running + unbound, now))
            return
        for cell in running:
            self._say(cell, now)

    def _table(self, running: list[_Running], now: float) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        for cell in running:
            table.add_row(
                Text(f"⏳ {cell.cell_id}"),
                Text(f"{now - cell.started:4.0f} s"),
                Text(
                    f"{cell.step}{': ' if cell.reported else ' '}{cell.detail}".strip(),
                    overflow="ellipsis",
                    no_wrap=True,
                ),
            )
        return table

    def _tick(self) -> None:
        # Plain mode looks every few seconds (a step change is said at once), and says
        # an unchanged step again only after ``interval``.
        period = self.interval if self.live else min(self.interval, 2.0)
        while not self._stop.wait(period):
            self._refresh()

    def __enter__(self) -> RunProgress:
        progress.set_sink(self._reported)
        if self.live:
            self._live = Live(console=self.out, refresh_per_second=2, transient=True)
            self._live.start()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        progress.set_sink(None)
        if self._live is not None:
            self._live.stop()
