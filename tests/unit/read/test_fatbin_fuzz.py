"""Fuzzing the native reader: whatever the bytes, it returns or raises InputFileError,
and quickly (every loop is bounded by the data size).

These few hundred examples run in CI; ``fuzz/fuzz_fatbin.py`` (atheris, coverage
guided; ``nox -s fuzz``) runs for as long as one likes, and every input it ever
crashed on is kept in ``fuzz_regressions/`` and replayed here. BENCHMARKS.md
records how many inputs its runs tried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synth import (
    KIND_ELF,
    KIND_PTX,
    MANGLED_WORK,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_shared_object,
    ptx_module,
    working_body,
)

from orchestrator.common.errors import InputFileError
from orchestrator.probe import probe_path
from orchestrator.read.elf import BytesBlob
from orchestrator.read.library import read_library

SEED = build_shared_object(
    [
        build_container(
            [
                EntrySpec(
                    KIND_ELF,
                    100,
                    build_cubin(CubinSpec([KernelSpec(MANGLED_WORK, working_body(12))])),
                    "f",
                ),
                EntrySpec(
                    KIND_ELF,
                    90,
                    build_cubin(CubinSpec([KernelSpec("_Z1kv", working_body(3))])),
                    "a",
                    compression="zstd",
                ),
                EntrySpec(
                    KIND_PTX, 120, ptx_module("sm_120", {"_Z1kv": "ret;"}), compression="lz4"
                ),
            ]
        )
    ]
)


def run(data: bytes) -> None:
    start = time.monotonic()
    try:
        read_library(BytesBlob("fuzz.so", data), "fuzz.so")
    except InputFileError as exc:
        assert "\n" not in str(exc)
    assert time.monotonic() - start < 2.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=8))
def test_mutated_libraries(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(SEED)
    for offset, value in mutations:
        data[offset] = value
    run(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SEED)))
def test_truncated_libraries(cut: int) -> None:
    run(SEED[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    run(b"\x7fELF\x02\x01\x01" + data)


REGRESSIONS = sorted((Path(__file__).parents[1] / "fuzz_regressions").glob("*"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_inputs_the_atheris_fuzzer_found(path: Path) -> None:
    """Each file once crashed the reader (``.so``) or ``probe`` of a wheel (``.whl``)
    under ``fuzz/fuzz_fatbin.py``, or was made by hand like one; now it is one
    InputFileError (``run`` also bounds the time)."""
    if path.suffix == ".whl":
        with pytest.raises(InputFileError) as caught:
            probe_path(path)
        assert "\n" not in str(caught.value)
        return
    with pytest.raises(InputFileError):
        read_library(BytesBlob(path.name, path.read_bytes()), path.name)
    run(path.read_bytes())
