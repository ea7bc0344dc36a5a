"""Fuzz the native fatbin/ELF reader (``orchestrator.read.library.read_library``) with
atheris (libFuzzer, coverage-guided), for longer than the hypothesis tests of
``tests/unit/read/test_fatbin_fuzz.py`` can run in CI.

The contract it checks: whatever the bytes, the reader returns an inventory or
raises :class:`~orchestrator.common.errors.InputFileError` with a one-line message --
never another exception (libFuzzer reports it with the input), never a hang
(``-timeout``) and never unbounded memory (``-rss_limit_mb``; a single allocation
above it is reported too).

    pip install atheris
    python fuzz/fuzz_fatbin.py --make-corpus fuzz/corpus-run    # seeds (+ fuzz/seeds)
    python fuzz/fuzz_fatbin.py fuzz/corpus-run fuzz/seeds \\
        -rss_limit_mb=1024 -timeout=5 -max_total_time=900 -print_final_stats=1 \\
        -artifact_prefix=fuzz/artifacts/

``fuzz/seeds`` holds the ``.nv_fatbin`` sections of real nvcc 13.0 libraries
(zstd cubins and PTX, LZ4 with ``--compress-mode=speed``) wrapped in small host
ELFs, and ``tests/fixtures/aarch64`` a real aarch64 library (containers padded to
256 bytes); ``--make-corpus`` adds hand-made ones (``tests/unit/synth.py``): every
entry kind, both compressions, several containers, the padded layout, an ELF
without device code.
With ``KERNEL_MATRIX_FUZZ=wheel`` the input is a whole wheel given to ``probe``
(seeds: ``--make-corpus`` writes stored, deflated and LZMA wheels of those
libraries). Findings and what the runs tried are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["orchestrator"]):
    from orchestrator.common.errors import InputFileError
    from orchestrator.probe import probe_path
    from orchestrator.read.elf import BytesBlob
    from orchestrator.read.library import read_library

HERE = Path(__file__).resolve().parent
# KERNEL_MATRIX_FUZZ=wheel: the bytes are a whole wheel (zip) given to ``probe``,
# which reads its members in place (zipfile + the same reader).
WHEEL = os.environ.get("KERNEL_MATRIX_FUZZ") == "wheel"
WHEEL_PATH = Path(tempfile.mkdtemp(prefix="fuzz-wheel-")) / "pkg-1.0-py3-none-any.whl"


def test_one_input(data: bytes) -> None:
    try:
        if WHEEL:
            WHEEL_PATH.write_bytes(data)
            probe_path(WHEEL_PATH)
        else:
            read_library(BytesBlob("fuzz.so", data), "fuzz.so")
    except InputFileError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a multi-line error: {exc!r}") from None


def make_corpus(target: Path) -> None:
    """Hand-made seeds (the unit tests' binary builder) into ``target``."""
    sys.path.insert(0, str(HERE.parent / "tests" / "unit"))
    from synth import (
        EM_AARCH64,
        KIND_ELF,
        KIND_PTX,
        MANGLED_HOLLOW,
        MANGLED_WORK,
        CubinSpec,
        EntrySpec,
        KernelSpec,
        build_container,
        build_cubin,
        build_shared_object,
        hollow_body,
        ptx_module,
        trap_body,
        working_body,
    )

    cubin = build_cubin(
        CubinSpec(
            [
                KernelSpec(MANGLED_WORK, working_body(12)),
                KernelSpec(MANGLED_HOLLOW, hollow_body()),
                KernelSpec("_Z4trapv", trap_body()),
            ],
            other_symbols=["some_global"],
        )
    )
    ptx = ptx_module("sm_120", {"_Z1kv": "ret;", "_Z2k2Pf": "mov.u32 %r1, 1;\nret;"})
    seeds = {
        "plain": [build_container([EntrySpec(KIND_ELF, 100, cubin, "f")])],
        "zstd": [build_container([EntrySpec(KIND_ELF, 90, cubin, "a", compression="zstd")])],
        "lz4": [build_container([EntrySpec(KIND_PTX, 120, ptx, compression="lz4")])],
        "mixed": [
            build_container(
                [
                    EntrySpec(KIND_ELF, 100, cubin, "f", compression="zstd"),
                    EntrySpec(KIND_ELF, 121, cubin, "a", header_size=80),
                    EntrySpec(KIND_PTX, 80, ptx),
                ]
            ),
            build_container([EntrySpec(KIND_ELF, 120, cubin, "a", compression="lz4")]),
        ],
    }
    target.mkdir(parents=True, exist_ok=True)
    libraries = {f"synth-{n}.so": build_shared_object(c) for n, c in seeds.items()}
    libraries["synth-no-fatbin.so"] = build_shared_object([], with_fatbin=False)
    # aarch64's layout: each container on a 256-byte boundary, zeros between.
    libraries["synth-aarch64-padded.so"] = build_shared_object(
        seeds["mixed"], align=256, machine=EM_AARCH64
    )
    if not WHEEL:
        for name, data in libraries.items():
            (target / name).write_bytes(data)
        return
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA):
        with zipfile.ZipFile(target / f"wheel-{method}.whl", "w", compression=method) as zf:
            zf.writestr("pkg/__init__.py", "")
            for name, data in libraries.items():
                zf.writestr(f"pkg/{name}", data)
            zf.writestr("pkg-1.0.dist-info/RECORD", "")


def seed_from_library(library: Path, target: Path) -> None:
    """A small seed from a real library: its ``.nv_fatbin`` section in a tiny host ELF."""
    sys.path.insert(0, str(HERE.parent / "tests" / "unit"))
    from synth import build_shared_object

    from orchestrator.read.elf import read_header

    data = library.read_bytes()
    header = read_header(BytesBlob(str(library), data))
    (section,) = header.named(".nv_fatbin")
    fatbin = data[section.offset : section.offset + section.size]
    # (the section's alignment and machine kept: aarch64's padding is only padding in
    # a section aligned as the original)
    seed = build_shared_object([fatbin], align=max(section.align, 8), machine=header.machine)
    (target / f"real-{library.stem}.so").write_bytes(seed)


def main() -> None:
    if sys.argv[1:2] == ["--make-corpus"]:
        make_corpus(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--seed-from"]:
        for library in sys.argv[3:]:
            seed_from_library(Path(library), Path(sys.argv[2]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
