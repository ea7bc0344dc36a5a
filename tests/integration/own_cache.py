"""A result cache of a test's own (``KERNEL_MATRIX_CACHE``) with the machine's CUDA
toolchains linked in: a first run there really builds (``run --no-cache`` stores
nothing, so a test of the cache cannot start with it), and no earlier session's
entry answers for it."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.toolchains import cuda as toolchain


def own_cache(root: Path) -> Path:
    cache = root / "cache"
    cache.mkdir(parents=True)
    (toolchain.cache_root() / "toolchains").mkdir(parents=True, exist_ok=True)
    (cache / "toolchains").symlink_to(toolchain.cache_root() / "toolchains")
    return cache


def cache_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "KERNEL_MATRIX_CACHE": str(cache)}
