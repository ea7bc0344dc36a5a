"""Every occurrence of a short byte string in a large buffer, at the C library's speed.

``bytes.find`` skips little when the needle's characters are common in the text, as
``.``, ``e``, ``n``, ``t`` and ``r`` are in PTX: looking for ``.entry`` through vLLM
0.33.0's 199 MB of PTX takes 0.10 s that way and 0.02 s through ``memmem`` (glibc's
is vectorised; ctypes calls it with the GIL released, so the reading thread goes on).
Where the C library has no ``memmem``, ``bytes.find`` gives the same positions.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any


def _c_memmem() -> Callable[..., Any] | None:
    try:
        function = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_void_p
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return function


_MEMMEM = _c_memmem()


def positions(text: bytes, needle: bytes) -> Iterator[int]:
    """The start of every occurrence of ``needle`` in ``text``, overlapping ones
    included, in order."""
    if _MEMMEM is None or type(text) is not bytes or not needle:
        yield from _positions_by_find(text, needle)
        return
    pointer = ctypes.c_char_p(text)  # (the bytes' own buffer, not a copy)
    base = ctypes.cast(pointer, ctypes.c_void_p).value or 0
    size, width = len(text), len(needle)
    at = 0
    while at <= size - width:
        found = _MEMMEM(base + at, size - at, needle, width)
        if not found:
            return
        position = found - base
        yield position
        at = position + 1


def _positions_by_find(text: bytes, needle: bytes) -> Iterator[int]:
    at = text.find(needle)
    while at >= 0:
        yield at
        at = text.find(needle, at + 1)
