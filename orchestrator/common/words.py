"""Counts in the tool's sentences: ``1 cell``, ``2 cells``. Every stage writes such
counts (the reader's reasons, the judge's verdicts, the reports), so the helper sits
here, below them all."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str = "") -> str:
    """``n`` and the noun in the number it takes; ``plural`` for an irregular one
    (default: the noun + ``s``). Only the last word of ``noun`` changes.

    >>> counted(1, "cell"), counted(0, "cell"), counted(2, "new kernel")
    ('1 cell', '0 cells', '2 new kernels')
    >>> counted(1, "library", "libraries"), counted(3, "library", "libraries")
    ('1 library', '3 libraries')
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
