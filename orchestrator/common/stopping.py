"""Stopping long work on Ctrl-C: one event, set by the run when it is interrupted
(``orchestrator.run.runner``), that provisioning and lock waits look at.

A cell thread cannot be interrupted from outside: the run sets :data:`STOP`, kills
every build process it knows, and waits for the cell threads. Work that a build
process registry does not see -- a ``pip install`` of a toolchain or of a configure
environment, a wait of minutes on another cell's (or process's) install lock --
must therefore stop by itself: :func:`locked` waits in short slices and gives up
with :class:`Stopped` once :data:`STOP` is set, :func:`killed_on_stop` kills a
process when it is set, and :func:`check` raises between steps.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from filelock import BaseFileLock, Timeout

from orchestrator.common.errors import Interrupted

STOP = threading.Event()
SLICE_S = 0.2  # how often a lock wait looks at STOP


class Stopped(Interrupted):
    """This thread's work stopped because the run was interrupted."""


def check(what: str) -> None:
    """Raise :class:`Stopped` if the run is stopping (before starting ``what``)."""
    if STOP.is_set():
        raise Stopped(f"interrupted before {what}")


@contextlib.contextmanager
def locked(
    lock: threading.Lock | BaseFileLock, what: str, timeout: float | None = None
) -> Iterator[None]:
    """Hold ``lock`` (a ``threading.Lock`` or a ``FileLock``) inside the block,
    waiting at most ``timeout`` seconds (None: for ever) for it, and only while the
    run is not stopping: :class:`Stopped` as soon as :data:`STOP` is set, before or
    after the wait (whoever held the lock may have given up half way).
    ``filelock.Timeout`` (or ``TimeoutError`` for a thread lock) when it times out.

    >>> lock = threading.Lock()
    >>> with locked(lock, "x"):
    ...     lock.locked()
    True
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        check(what)
        slice_s = SLICE_S if deadline is None else min(SLICE_S, deadline - time.monotonic())
        if slice_s <= 0:
            if isinstance(lock, BaseFileLock):
                raise Timeout(str(lock.lock_file))
            raise TimeoutError(f"timed out waiting for the lock of {what}")
        try:
            if lock.acquire(timeout=slice_s):
                break  # a thread lock says True; a FileLock returns its proxy
        except Timeout:
            continue
    try:
        check(what)
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def killed_on_stop(proc: subprocess.Popen[Any]) -> Iterator[None]:
    """While inside, :data:`STOP` kills ``proc`` (within :data:`SLICE_S`): a
    download that the run's process registry does not know stops with the run."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if STOP.wait(SLICE_S):
                if not done.is_set() and proc.poll() is None:
                    proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True, name="stop-watch")
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
