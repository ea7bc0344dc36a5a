"""bytesearch.positions: the C library's memmem gives exactly bytes.find's positions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.common import bytesearch
from orchestrator.common.bytesearch import positions


def by_find(text: bytes, needle: bytes) -> list[int]:
    return list(bytesearch._positions_by_find(text, needle))


def test_memmem_is_there_on_this_machine() -> None:
    # (glibc has it: the fast path is what the tests below compare with bytes.find)
    assert bytesearch._MEMMEM is not None


@given(st.binary(max_size=300), st.binary(min_size=1, max_size=4))
def test_every_occurrence_overlapping_ones_included(text: bytes, needle: bytes) -> None:
    assert list(positions(text, needle)) == by_find(text, needle)


@given(st.text(alphabet="ab.\n", max_size=400), st.sampled_from(["a", "ab", "aa", ".a", "a\n"]))
def test_dense_texts(text: str, needle: str) -> None:
    data, pattern = text.encode(), needle.encode()
    assert list(positions(data, pattern)) == by_find(data, pattern)


def test_edges_and_other_buffers() -> None:
    assert list(positions(b"", b".entry")) == []
    assert list(positions(b".entry", b".entry")) == [0]
    assert list(positions(b"x.entr", b".entry")) == []
    assert list(positions(b"aaaa", b"aa")) == [0, 1, 2]
    assert list(positions(bytearray(b"a.ea.e"), b".e")) == [1, 4]  # (by bytes.find)
    assert list(positions(b"a\0.e\0.e", b".e")) == [2, 5]  # (NUL bytes inside the text)
