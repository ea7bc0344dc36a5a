"""Atomic writes keep the permissions a plain open() would give (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator.common.fsutil import write_atomic


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    write_atomic(atomic, "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert not list(tmp_path.glob(".atomic.txt.*"))
    assert os.access(atomic, os.R_OK)
