"""Counts in the tool's sentences: ``1 cell``, ``2 cells``, ``1.5 KiB``. Every stage writes such
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


def format_size(size: int) -> str:
    """A size for people.

    >>> format_size(1536), format_size(3 << 30)
    ('1.5 KiB', '3.0 GiB')
    """
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def signed_size(delta: int) -> str:
    """A change of size for people: ``+60.0 MiB``, ``-512 B``, ``0 B``.

    >>> signed_size(60 << 20), signed_size(-512), signed_size(0)
    ('+60.0 MiB', '-512 B', '0 B')
    """
    sign = "+" if delta > 0 else "-" if delta < 0 else ""
    return sign + format_size(abs(delta))
