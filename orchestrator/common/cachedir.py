"""Where this tool caches toolchains, tools, reads and results. Its own module, with
nothing heavy imported, because a repeated check (``cli.answers``) looks here first."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where toolchains, tools and results are cached (``KERNEL_MATRIX_CACHE`` overrides)."""
    override = os.environ.get("KERNEL_MATRIX_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kernel-matrix"
