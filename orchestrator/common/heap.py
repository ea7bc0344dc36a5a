"""The C heap of a reading verb's process: freed memory kept for the next buffers.

A cold ``check`` of a vLLM wheel decompresses about a gigabyte of cubins and PTX into
buffers of a few megabytes, each freed once read. glibc returns such buffers to the
kernel (``munmap`` above its mmap threshold, trimming above its trim threshold), so
the pages of every next buffer fault in anew: about 200 000 page faults, a third of
a second of system time on 2 cores. Both thresholds raised, freed buffers are reused:
vLLM 0.33.0's cold check took 117 000-135 000 faults and 6-8 % less wall time, for
60-130 MB more peak memory (by hand, ``/usr/bin/time``, 2026-12-07).

Set only by the ``probe`` and ``check`` verbs, which own their process (a program
that imports the probe keeps its own heap settings); nothing where the C library has
no ``mallopt``.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h). Setting either ends glibc's own adjusting of
# both: they go together.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # glibc's most on 64-bit (its heaps' largest size)
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Raise the C heap's thresholds for this process; whether the C library took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
