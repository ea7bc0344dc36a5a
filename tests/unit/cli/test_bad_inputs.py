"""The bad-input catalogue (unit part): every way a user's input or this machine can
be wrong that needs no compiler, each one row of CATALOGUE: the command line (run
through ``orchestrator.cli.main``), the input it is given, the exit code and a
fragment of the error.

Every row must end in exactly one ``kernel-matrix: error:`` line on stderr (no
traceback, nothing else there) naming the input -- ``file:line:col`` for a
configuration file -- with exit code 2 for the user's input and 3 for the
infrastructure. A few rows are *not* errors (an ELF without device code, kernels
with huge names): they must exit 0 and say what they found.

The rows that need a compiler, a full disk or a signal are in
``tests/integration/test_bad_inputs_build.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pytest
from package_index import publish, sdist_bytes, serving
from synth import (
    KIND_ELF,
    KIND_PTX,
    MANGLED_WORK,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_entry,
    build_shared_object,
    ptx_module,
    working_body,
)

from orchestrator.archs import CudaVersion
from orchestrator.cli import main
from orchestrator.common import userregex
from orchestrator.common.errors import ConfigError, InputFileError, OutputBusy
from orchestrator.common.fsutil import sole_writer
from orchestrator.common.userregex import UserRegex
from orchestrator.read import library as reading
from orchestrator.read.elf import BytesBlob
from orchestrator.read.library import MAX_ENTRIES_PER_LIBRARY, read_library
from orchestrator.run.cellcache import SOURCE_SKIP_DIRS, source_digest
from orchestrator.toolchains import cuda as toolchain

EXIT_USAGE, EXIT_INFRA = 2, 3
REPO = Path(__file__).resolve().parents[3]
REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz_regressions"
Maker = Callable[[Path], None]

# --- inputs ---------------------------------------------------------------------------

FAMILIES = """\
families:
  nvfp4:
    sources: [nvfp4_*.cu]
    devices: ["10.0", "12.1"]
"""
# Line 1 project, 2 source, 3 cuda, 4 archs, 5.. families: the positions below count on it.
MATRIX = (
    """\
project:
  source: src
cuda: ["13.0"]
archs: ["9.0a", "12.1a"]
"""
    + FAMILIES
)


def files(**contents: str | bytes) -> Maker:
    """Files to write under the test's directory (and an empty ``src/``)."""

    def make(tmp: Path) -> None:
        (tmp / "src").mkdir(exist_ok=True)
        for name, content in contents.items():
            path = tmp / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)

    return make


def matrix(text: str) -> Maker:
    return files(**{"m.yaml": text})


def edit(old: str, new: str) -> Maker:
    assert old in MATRIX
    return matrix(MATRIX.replace(old, new, 1))


def cubin(name: str = MANGLED_WORK) -> bytes:
    return build_cubin(CubinSpec([KernelSpec(name, working_body(12))]))


def library(*entries: EntrySpec) -> bytes:
    return build_shared_object([build_container(list(entries))])


GOOD = library(EntrySpec(KIND_ELF, 100, cubin(), "f"))
FAM = "families:\n  f:\n    devices: ['10.0']\n    kernels: ['quant']\n"
ZSTD = library(EntrySpec(KIND_ELF, 90, cubin(), "a", compression="zstd"))
LZ4 = library(EntrySpec(KIND_PTX, 120, ptx_module("sm_120", {"_Z1kv": "ret;"}), compression="lz4"))
FATBIN = GOOD.index((0xBA55ED50).to_bytes(4, "little"))
ENTRY = FATBIN + 16  # the first entry's header
PAYLOAD = ENTRY + 64


def patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def wheel(*members: tuple[str, bytes]) -> Maker:
    def make(tmp: Path) -> None:
        (tmp / "wheels").mkdir()
        with zipfile.ZipFile(tmp / "wheels" / "pkg-1.0-py3-none-any.whl", "w") as zf:
            for name, data in members:
                zf.writestr(name, data)

    return make


HUGE_NAME = f"_Z{16 << 20}" + "k" * (16 << 20) + "v"  # a 16 MiB kernel name


def unreachable_index(tmp: Path) -> None:
    """An empty cache (nothing provisioned) and a package index on a port where
    nothing listens: the toolchain download fails for real, in pip."""
    files(**{"m.yaml": MATRIX.replace('["9.0a", "12.1a"]', '["9.0a"]')})(tmp)
    (tmp / "cache").mkdir()
    with socket.socket() as s:  # a free port, closed again: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "index-url").write_text(f"http://127.0.0.1:{port}/simple")


def result_file(data: object) -> Maker:
    return files(**{"res.json": json.dumps(data)})


def good_result(tmp: Path) -> None:
    result_file(
        {"schema_version": 1, "cell": {"id": "cu13.0-9.0a"}, "status": "passed", "verdicts": []}
    )(tmp)
    (tmp / "a-file").write_text("not a directory")


# --- inputs of issue 21 (bounded resources, validated artifacts) ------------------------


def fifo(name: str, *others: Maker) -> Maker:
    """A named pipe at ``name`` (no writer: whoever opens it to read waits for ever)."""

    def make(tmp: Path) -> None:
        for other in others:
            other(tmp)
        os.mkfifo(tmp / name)

    return make


def link(name: str, target: str, *others: Maker) -> Maker:
    def make(tmp: Path) -> None:
        for other in others:
            other(tmp)
        (tmp / name).symlink_to(target)

    return make


def both(*makers: Maker) -> Maker:
    def make(tmp: Path) -> None:
        for maker in makers:
            maker(tmp)

    return make


def fatbin_headers(data: bytes, copies: int, *, overlap: bool = False) -> bytes:
    """``data`` (a host ELF) with its .nv_fatbin section header repeated ``copies``
    times, all naming the one fatbin (or, with ``overlap``, one more header naming a
    range that starts inside it); the new table goes at the end of the file."""
    shoff, shnum = struct.unpack_from("<Q", data, 0x28)[0], struct.unpack_from("<H", data, 0x3C)[0]
    table = data[shoff : shoff + 64 * shnum]
    fatbin = next(
        table[i : i + 64]
        for i in range(0, len(table), 64)
        if struct.unpack_from("<Q", table, i + 24)[0] == FATBIN
    )
    extra = [fatbin] * copies
    if overlap:
        offset, size = struct.unpack_from("<QQ", fatbin, 24)
        extra = [fatbin[:24] + struct.pack("<QQ", offset + 16, size - 16) + fatbin[40:]]
    body = data + bytes(-len(data) % 8)
    new = body + table + b"".join(extra)
    new = patched(new, 0x28, struct.pack("<Q", len(body)))
    return patched(new, 0x3C, struct.pack("<H", shnum + len(extra)))


def many_entries(count: int) -> bytes:
    """A library whose fatbin holds ``count`` empty PTX entries (64 bytes each)."""
    entry = build_entry(EntrySpec(KIND_PTX, 120, b""))
    body = entry * count
    return build_shared_object([struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body])


def named_kernel(name: str) -> bytes:
    return library(EntrySpec(KIND_ELF, 100, cubin(name), "f"))


def family(rule: str) -> str:
    return f"families:\n  slow:\n    devices: ['10.0']\n{rule}"


SLOW_NAME = "a" * 5000 + "b"  # (a|aa)+$ tries every way to split it: exponential
# The same tail in a kernel of a known source (nvcc's spelling of nvfp4_quant.cu), so
# that a family of sources ['*'] counts it and must look at its exclusions.
SLOW_SOURCED_NAME = "_GLOBAL__N__6483e388_14_nvfp4_quant_cu_f7e2e079_" + SLOW_NAME
SLOW = "(a|aa)+$"
CHECK = ("check", "{tmp}/lib.so", "--families", "{tmp}/fam.yaml")


def deep_dirs(depth: int, leaf: str, content: bytes) -> Maker:
    """``depth`` nested directories with ``leaf`` at the bottom (made in a loop:
    os.makedirs itself recurses per level)."""

    def make(tmp: Path) -> None:
        folder = tmp / "deep"
        folder.mkdir()
        for _ in range(depth):
            folder = folder / "d"
            folder.mkdir()
        (folder / leaf).parent.mkdir(exist_ok=True)
        (folder / leaf).write_bytes(content)

    return make


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


RESULT = {"schema_version": 1, "cell": {"id": "c"}, "status": "passed", "verdicts": []}
REPORT = ("report", "{tmp}/res.json", "--out", "{tmp}/r")
VERDICT = {"family": "nvfp4", "device": "12.1", "status": "present"}
BASELINE = {
    "schema_version": 1,
    "kind": "kernel-matrix-baseline",
    "cells": {"c": {"status": "passed", "families": [], "kernels": {}}},
}
HISTORY_ENTRY = {"run": "r", "written": "w", "dir": "d", "counts": {}, "failing": 0}


def with_result(**fields: object) -> Maker:
    return result_file({**RESULT, **fields})


def baseline_with_copy(copy: str) -> Maker:
    """A good result and a baseline whose one kernel copy is ``copy`` (JSON text)."""
    cell = {"status": "passed", "families": [], "kernels": {"k": ["COPY"]}}
    text = json.dumps({**BASELINE, "cells": {"c": cell}}).replace('"COPY"', copy)
    return both(good_result, files(**{"b.json": text}))


def history(data: object | str | bytes) -> Maker:
    text = data if isinstance(data, str | bytes) else json.dumps(data)
    return both(good_result, files(**{"h.json": text}))


def finished_run(tmp: Path) -> None:
    """The directory of a run that finished a passing cell."""
    matrix(MATRIX)(tmp)
    (tmp / "out" / "cells").mkdir(parents=True)
    (tmp / "out" / "run.json").write_text('{"cells": ["cu13.0-9.0a"]}')
    (tmp / "out" / "cells" / "cu13.0-9.0a.json").write_text(
        json.dumps({**RESULT, "cell": {"id": "cu13.0-9.0a"}})
    )


# --- the catalogue --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` (``{tmp}`` is the test's directory), what ``make``
    writes there, the exit code and a fragment of the error line (``{tmp}``
    expanded). ``error=None``: not an error; ``stdout`` must then contain ``says``."""

    argv: tuple[str, ...]
    make: Maker
    code: int
    error: str | None
    says: str = ""
    env: dict[str, str] = field(default_factory=dict)
    absent: str = ""  # must not appear in the error line (a file's content, say)


PLAN = ("plan", "{tmp}/m.yaml", "--format", "json")
RUN = ("run", "{tmp}/m.yaml", "--out", "{tmp}/out", "--build-dir", "{tmp}/build", "--no-cache")
PROBE = ("probe", "{tmp}/lib.so")
M = "{tmp}/m.yaml"

CATALOGUE: dict[str, Case] = {
    # -- configuration files: file:line:col, exit 2 --------------------------------
    "malformed YAML": Case(
        PLAN, matrix("project:\n  source: [src\ncuda: 13.0\n"), 2, f"{M}:3:5: invalid YAML"
    ),
    "YAML tab indentation": Case(
        PLAN, matrix("project:\n\tsource: src\n"), 2, f"{M}:2:1: invalid YAML"
    ),
    "empty file": Case(PLAN, matrix(""), 2, f"{M}: the file is empty"),
    "not UTF-8": Case(PLAN, files(**{"m.yaml": b"\xff\xfe\x00p"}), 2, f"{M}: cannot read"),
    "not a mapping": Case(PLAN, matrix("- a\n- b\n"), 2, f"{M}:1:1: expected object"),
    "python object tag": Case(
        PLAN,
        matrix("project: !!python/object/apply:os.system ['true']\n"),
        2,
        f"{M}:1:10: invalid YAML: could not determine a constructor",
    ),
    "self-referencing alias": Case(
        PLAN, matrix("project: &p\n  source: *p\n"), 2, f"{M}:1:10: project.source: an alias"
    ),
    "alias bomb": Case(
        PLAN,
        matrix(
            "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
        ),
        2,
        "more than 100000 values",
    ),
    "unknown top-level key": Case(
        PLAN, matrix(MATRIX + "colour: red\n"), 2, f"{M}:9:1: colour: unknown key 'colour'"
    ),
    "unknown nested key": Case(
        PLAN,
        edit("  source: src\n", "  source: src\n  sauce: x\n"),
        2,
        f"{M}:3:3: project.sauce: unknown key 'sauce'",
    ),
    "duplicate key": Case(
        PLAN, matrix(MATRIX + 'cuda: ["12.9"]\n'), 2, f"{M}:9:1: cuda: duplicate key 'cuda'"
    ),
    "missing required key": Case(
        PLAN, matrix("cuda: ['13.0']\n" + FAMILIES), 2, f"{M}:1:1: 'project' is required"
    ),
    "wrong type: archs a string": Case(
        PLAN, edit('archs: ["9.0a", "12.1a"]', "archs: 9.0a"), 2, f"{M}:4:8: archs: expected array"
    ),
    "wrong type: cuda a boolean": Case(
        PLAN, edit('cuda: ["13.0"]', "cuda: [true]"), 2, f"{M}:3:8: cuda[0]: expected"
    ),
    "wrong type: timeout a float": Case(
        PLAN,
        matrix(MATRIX + "timeout: 1.5\n"),
        2,
        f"{M}:9:10: timeout: expected integer, got float 1.5",
    ),
    "unknown arch": Case(
        PLAN, edit('"9.0a"', '"9.5"'), 2, f"{M}:4:9: archs[0]: unknown architecture '9.5'"
    ),
    "malformed arch": Case(
        PLAN, edit('"12.1a"', '"12.1x"'), 2, f"{M}:4:17: archs[1]: malformed architecture '12.1x'"
    ),
    "malformed arch, sm_ spelling": Case(
        PLAN, edit('"12.1a"', '"sm_9999"'), 2, f"{M}:4:17: archs[1]: malformed architecture"
    ),
    "empty arch list": Case(
        PLAN, edit('["9.0a", "12.1a"]', "[]"), 2, f"{M}:4:8: archs: [] should be non-empty"
    ),
    "arch list of separators only": Case(
        PLAN, edit('"12.1a"', '";"'), 2, f"{M}:4:17: archs[1]: empty architecture list"
    ),
    "duplicate cells, two spellings": Case(
        PLAN,
        edit('"12.1a"', '"sm_90a"'),
        2,
        f"{M}:4:17: archs[1]: duplicate cell 'cu13.0-9.0a'",
    ),
    "duplicate cells, cuda repeated": Case(
        PLAN,
        edit('cuda: ["13.0"]', 'cuda: ["13.0", 13.0]'),
        2,
        f"{M}:3:16: cuda[1]: duplicate cell 'cu13.0-9.0a'",
    ),
    "unknown CUDA version": Case(
        PLAN, edit('"13.0"', '"12.7"'), 2, f"{M}:3:8: cuda[0]: unknown CUDA version '12.7'"
    ),
    "malformed CUDA version": Case(
        PLAN, edit('"13.0"', '"thirteen"'), 2, f"{M}:3:8: cuda[0]: malformed CUDA version"
    ),
    "missing source dir": Case(
        PLAN,
        edit("source: src", "source: nowhere"),
        2,
        f"{M}:2:11: project.source: source directory '{{tmp}}/nowhere' does not exist",
    ),
    "invalid family regex": Case(
        PLAN,
        edit("sources: [nvfp4_*.cu]", "kernels: ['fp4[']"),
        2,
        f"{M}:7:15: families.nvfp4.kernels[0]: invalid regex",
    ),
    "missing families file": Case(
        PLAN,
        matrix(MATRIX.split("families:")[0] + "families: nope.yaml\n"),
        2,
        "{tmp}/nope.yaml: no such families file",
    ),
    "matrix file missing": Case(("plan", "{tmp}/none.yaml"), files(), 2, "none.yaml: no such file"),
    "matrix is a directory": Case(("plan", "{tmp}/src"), files(), 2, "{tmp}/src: cannot read"),
    # -- command line: exit 2 -------------------------------------------------------
    "unknown verb": Case(("frobnicate",), files(), 2, "invalid choice: 'frobnicate'"),
    "unknown option value": Case(
        (*PLAN[:2], "--format", "xml"), matrix(MATRIX), 2, "argument --format: invalid choice"
    ),
    "--jobs 0": Case((*RUN, "--jobs", "0"), matrix(MATRIX), 2, "--jobs must be at least 1"),
    "--timeout 0": Case(
        (*RUN, "--timeout", "0"), matrix(MATRIX), 2, "--timeout must be a positive number"
    ),
    "--only an unknown cell": Case(
        (*RUN, "--only", "cu9.9-x"), matrix(MATRIX), 2, f"{M}: no cell 'cu9.9-x'"
    ),
    "--only an arch without its suffix": Case(
        (*RUN, "--only", "cu13.0-12.1"),
        matrix(MATRIX),
        2,
        f"{M}: no cell 'cu13.0-12.1' (did you mean cu13.0-12.1a?)",
    ),
    "a mistyped option": Case(
        (*RUN, "--onyl", "cu13.0-12.1a"),
        matrix(MATRIX),
        2,
        "run: unrecognized option '--onyl' (did you mean '--only'?)",
    ),
    # -- binaries given to probe: exit 2, naming the file -----------------------------
    "probe: no such file": Case(PROBE, files(), 2, "{tmp}/lib.so: no such file or directory"),
    "probe: empty file": Case(PROBE, files(**{"lib.so": b""}), 2, "{tmp}/lib.so: empty file"),
    "probe: non-ELF file": Case(
        PROBE, files(**{"lib.so": b"#!/bin/sh\n"}), 2, "{tmp}/lib.so: not an ELF file"
    ),
    "probe: truncated ELF": Case(
        PROBE, files(**{"lib.so": GOOD[: len(GOOD) // 2]}), 2, "{tmp}/lib.so: truncated or corrupt"
    ),
    "probe: truncated ELF header": Case(
        PROBE, files(**{"lib.so": GOOD[:40]}), 2, "{tmp}/lib.so: truncated or corrupt"
    ),
    "probe: 32-bit ELF": Case(
        PROBE, files(**{"lib.so": patched(GOOD, 4, b"\x01")}), 2, "unsupported ELF class"
    ),
    "probe: corrupt fatbin header (magic)": Case(
        PROBE,
        files(**{"lib.so": patched(GOOD, FATBIN, b"XXXX")}),
        2,
        f"{{tmp}}/lib.so: corrupt fatbin: bad magic 0x58585858 at offset {FATBIN}",
    ),
    "probe: corrupt fatbin header (version)": Case(
        PROBE,
        files(**{"lib.so": patched(GOOD, FATBIN + 4, b"\x07\x00")}),
        2,
        "fatbin container version 7",
    ),
    "probe: corrupt fatbin header (size)": Case(
        PROBE,
        files(**{"lib.so": patched(GOOD, FATBIN + 8, (1 << 60).to_bytes(8, "little"))}),
        2,
        "truncated or corrupt fatbin container",
    ),
    "probe: corrupt entry header (kind)": Case(
        PROBE, files(**{"lib.so": patched(GOOD, ENTRY, b"\x09\x00")}), 2, "unknown entry kind 9"
    ),
    "probe: corrupt zstd payload": Case(
        PROBE,
        files(**{"lib.so": patched(ZSTD, PAYLOAD + 6, b"\xaa" * 32)}),
        2,
        "sm_90a entry at offset",
    ),
    "probe: corrupt LZ4 payload": Case(
        PROBE,
        files(**{"lib.so": patched(LZ4, PAYLOAD, b"\xff" * 32)}),
        2,
        "corrupt LZ4 payload",
    ),
    "probe: compressed size beyond the format": Case(
        PROBE,
        files(**{"lib.so": patched(ZSTD, ENTRY + 56, (1 << 31).to_bytes(8, "little"))}),
        2,
        "corrupt compressed sizes",
    ),
    "probe: corrupt cubin inside": Case(
        PROBE,
        files(**{"lib.so": library(EntrySpec(KIND_ELF, 100, b"\x7fELF" + bytes(100), "f"))}),
        2,
        "sm_100f cubin at offset",
    ),
    "probe: wheel with zip-slip member": Case(
        ("probe", "{tmp}/wheels/pkg-1.0-py3-none-any.whl"),
        wheel(("pkg/_C.so", GOOD), ("../../evil.so", GOOD)),
        2,
        "unsafe member path '../../evil.so' (zip-slip); refusing the wheel",
    ),
    "probe: wheel with absolute member": Case(
        ("probe", "{tmp}/wheels/pkg-1.0-py3-none-any.whl"),
        wheel(("/tmp/evil.so", GOOD)),
        2,
        "unsafe member path '/tmp/evil.so'",
    ),
    "probe: wheel with an encrypted member": Case(
        ("probe", "{tmp}/x.whl"),
        files(**{"x.whl": (REGRESSIONS / "encrypted-member.whl").read_bytes()}),
        2,
        "{tmp}/x.whl!pkg/_C.so: encrypted wheel member",
    ),
    "probe: wheel member of an unknown compression": Case(
        ("probe", "{tmp}/x.whl"),
        files(**{"x.whl": (REGRESSIONS / "compression-method-99.whl").read_bytes()}),
        2,
        "unknown compression method 99",
    ),
    "probe: wheel member with a corrupt LZMA stream": Case(
        ("probe", "{tmp}/x.whl"),
        files(**{"x.whl": (REGRESSIONS / "lzma-member-corrupt.whl").read_bytes()}),
        2,
        "corrupt wheel member: Corrupt input data",
    ),
    "probe: wheel that is not a zip": Case(
        ("probe", "{tmp}/x.whl"), files(**{"x.whl": b"PK\x03\x04junk"}), 2, "not a readable wheel"
    ),
    "probe: directory without libraries": Case(
        ("probe", "{tmp}/src"), files(), 2, "{tmp}/src: no shared objects"
    ),
    "probe: ELF without device code (not an error)": Case(
        PROBE,
        files(**{"lib.so": build_shared_object([], with_fatbin=False)}),
        0,
        None,
        says="lib.so: no device code",
    ),
    "probe: huge symbol names (not an error)": Case(
        (*PROBE, "--json"),
        files(**{"lib.so": library(EntrySpec(KIND_ELF, 100, cubin(HUGE_NAME), "f"))}),
        0,
        None,
        says='"arch": "sm_100f"',
    ),
    # -- results and baselines given to report/diff: exit 2; output dir: exit 3 ---------
    "report: result not JSON": Case(
        ("report", "{tmp}/res.json", "--out", "{tmp}/r"),
        files(**{"res.json": "{"}),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result",
    ),
    "report: result a JSON list": Case(
        ("report", "{tmp}/res.json", "--out", "{tmp}/r"),
        result_file([]),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result (expected a JSON object",
    ),
    "report: result of another schema": Case(
        ("report", "{tmp}/res.json", "--out", "{tmp}/r"),
        result_file({"schema_version": 99, "cell": {"id": "x"}, "status": "passed"}),
        2,
        "unsupported result schema_version 99",
    ),
    "report: output under a file": Case(
        ("report", "{tmp}/res.json", "--out", "{tmp}/a-file/r"),
        good_result,
        3,
        "{tmp}/a-file",
    ),
    "diff: baseline not a baseline": Case(
        ("diff", "{tmp}/res.json", "{tmp}/res.json"),
        result_file([]),
        2,
        "{tmp}/res.json: not a kernel-matrix baseline",
    ),
    # == issue 21: one writer per output directory, nothing finished overwritten ====
    "class 1: run into the directory of a finished run, without --resume": Case(
        RUN, finished_run, 2, "already holds the results of another run (1 cells)"
    ),
    "class 1: run into a directory with only run.json of another run": Case(
        RUN,
        both(matrix(MATRIX), files(**{"out__run.json": "{}"})),
        2,
        "--out {tmp}/out already holds the results of another run",
    ),
    "class 1: --out under a file": Case(
        (*RUN[:3], "{tmp}/a-file/out", *RUN[4:]),
        both(matrix(MATRIX), files(**{"a-file": "x"})),
        3,
        "cannot create {tmp}/a-file/out",
    ),
    # == issue 21: unbounded time ===================================================
    "class 2: catastrophic regex in kernels": Case(
        CHECK,
        files(
            **{"lib.so": named_kernel(SLOW_NAME), "fam.yaml": family(f"    kernels: ['{SLOW}']\n")}
        ),
        2,
        "{tmp}/fam.yaml: families.slow.kernels[0]: regex '(a|aa)+$' took more than 1.0 s",
    ),
    "class 2: catastrophic regex in exclude_kernels": Case(
        CHECK,
        files(
            **{
                "lib.so": named_kernel(SLOW_SOURCED_NAME),
                "fam.yaml": family(f"    sources: ['*']\n    exclude_kernels: ['{SLOW}']\n"),
            }
        ),
        2,
        "families.slow.exclude_kernels[0]: regex '(a|aa)+$' took more than 1.0 s",
    ),
    "class 2: catastrophic regex in log": Case(
        (*CHECK, "--log", "{tmp}/build.log"),
        files(
            **{
                "lib.so": GOOD,
                "fam.yaml": family(f"    kernels: [nothing]\n    log: ['{SLOW}']\n"),
                "build.log": f"-- Not building {SLOW_NAME}\n",
            }
        ),
        2,
        "families.slow.log[0]: regex '(a|aa)+$' took more than 1.0 s",
    ),
    "class 2: a build log line of 'skipping ' 100000 times (not an error)": Case(
        (*CHECK, "--log", "{tmp}/build.log"),
        files(**{"lib.so": GOOD, "fam.yaml": FAMILIES, "build.log": "skipping " * 100_000}),
        1,
        None,
        says="nvfp4",
    ),
    "class 2: FIFO as a .so": Case(
        PROBE, fifo("lib.so"), 2, "{tmp}/lib.so: cannot read: not a regular file (a named pipe)"
    ),
    "class 2: FIFO as a wheel": Case(
        ("probe", "{tmp}/x.whl"), fifo("x.whl"), 2, "{tmp}/x.whl: cannot read: not a regular file"
    ),
    "class 2: FIFO as a matrix": Case(
        PLAN, fifo("m.yaml", files()), 2, f"{M}: cannot read: not a regular file"
    ),
    "class 2: FIFO as a families file": Case(
        CHECK,
        fifo("fam.yaml", files(**{"lib.so": GOOD})),
        2,
        "{tmp}/fam.yaml: cannot read: not a regular file",
    ),
    "class 2: FIFO as a matrix's families file": Case(
        PLAN,
        fifo("fam.yaml", matrix(MATRIX.split("families:")[0] + "families: fam.yaml\n")),
        2,
        "{tmp}/fam.yaml: cannot read: not a regular file",
    ),
    "class 2: FIFO as a result": Case(
        REPORT, fifo("res.json"), 2, "{tmp}/res.json: cannot read: not a regular file"
    ),
    "class 2: FIFO as a baseline": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        fifo("b.json", good_result),
        2,
        "{tmp}/b.json: cannot read: not a regular file",
    ),
    "class 2: FIFO as a history file": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        fifo("h.json", good_result),
        2,
        "{tmp}/h.json: cannot read: not a regular file",
    ),
    "class 2: FIFO as a build log": Case(
        (*CHECK, "--log", "{tmp}/build.log"),
        fifo("build.log", files(**{"lib.so": GOOD, "fam.yaml": FAMILIES})),
        2,
        "--log {tmp}/build.log: not a regular file",
    ),
    # == issue 21: unbounded memory and work ========================================
    "class 3: /dev/zero as a .so": Case(
        ("probe", "/dev/zero"),
        files(),
        2,
        "/dev/zero: cannot read: not a regular file (a character device)",
    ),
    "class 3: /dev/zero as a wheel": Case(
        ("probe", "{tmp}/x.whl"),
        link("x.whl", "/dev/zero"),
        2,
        "{tmp}/x.whl: cannot read: not a regular file",
    ),
    "class 3: /dev/zero as a matrix": Case(
        ("plan", "/dev/zero"), files(), 2, "/dev/zero: cannot read: not a regular file"
    ),
    "class 3: /dev/zero as a families file": Case(
        ("check", "{tmp}/lib.so", "--families", "/dev/zero"),
        files(**{"lib.so": GOOD}),
        2,
        "/dev/zero: cannot read",
    ),
    "class 3: /dev/zero as a result": Case(
        ("report", "{tmp}/res.json", "--out", "{tmp}/r"),
        link("res.json", "/dev/zero"),
        2,
        "{tmp}/res.json: cannot read: not a regular file",
    ),
    "class 3: a matrix of 2 MiB": Case(
        PLAN, matrix(MATRIX + "#" * (2 << 20) + "\n"), 2, "more than a configuration file may have"
    ),
    "class 3: overlapping fatbin sections": Case(
        PROBE,
        files(**{"lib.so": fatbin_headers(GOOD, 1, overlap=True)}),
        2,
        ".nv_fatbin sections overlap",
    ),
    "class 3: more fatbin entries than a library may have": Case(
        PROBE,
        files(**{"lib.so": many_entries(MAX_ENTRIES_PER_LIBRARY + 1)}),
        2,
        f"more than {MAX_ENTRIES_PER_LIBRARY} fatbin entries",
    ),
    "class 3: 5000 section headers naming one fatbin (not an error)": Case(
        (*PROBE, "--json"),
        files(**{"lib.so": fatbin_headers(GOOD, 5000)}),
        0,
        None,
        says='"arch": "sm_100f"',
    ),
    "class 3: a deflated wheel member with 1000 headers naming one fatbin (not an error)": Case(
        ("probe", "{tmp}/wheels/pkg-1.0-py3-none-any.whl", "--json"),
        wheel(("pkg/_C.so", fatbin_headers(GOOD, 1000))),
        0,
        None,
        says='"arch": "sm_100f"',
    ),
    # == issue 21: exceptions that escaped the error model ==========================
    "class 4: regex repeat count overflowing": Case(
        PLAN,
        edit("sources: [nvfp4_*.cu]", "kernels: ['a{99999999999}']"),
        2,
        f"{M}:7:15: families.nvfp4.kernels[0]: invalid regex",
    ),
    "class 4: regex nested 5000 deep": Case(
        PLAN,
        edit("sources: [nvfp4_*.cu]", "kernels: ['" + "(" * 5000 + ")" * 5000 + "']"),
        2,
        "families.nvfp4.kernels[0]: invalid regex",
    ),
    "class 4: regex nested 5000 deep in log": Case(
        PLAN,
        edit("sources: [nvfp4_*.cu]", "sources: [x]\n    log: ['" + "(" * 5000 + ")" * 5000 + "']"),
        2,
        "families.nvfp4.log[0]: invalid regex",
    ),
    "class 4: YAML nested 20000 deep": Case(
        PLAN,
        matrix("a: " + "[" * 20000 + "]" * 20000 + "\n"),
        2,
        f"{M}: invalid YAML: nested too deeply",
    ),
    "class 4: YAML nested 100 deep": Case(
        PLAN,
        matrix(MATRIX + "x: " + "[" * 100 + "]" * 100 + "\n"),
        2,
        "nested more than 64 levels deep",
    ),
    "class 4: YAML with a NUL character": Case(
        PLAN,
        files(**{"m.yaml": MATRIX.encode().replace(b"src", b"s\0rc", 1)}),
        2,
        f"{M}:2:12: invalid YAML: unacceptable character #x0000",
    ),
    "class 4: families file not UTF-8": Case(
        CHECK,
        files(**{"lib.so": GOOD, "fam.yaml": b"families:\n  \xff\xfe: {}\n"}),
        2,
        "{tmp}/fam.yaml: cannot read: not UTF-8 text (byte 12)",
    ),
    "class 4: an integer of 5000 digits": Case(
        PLAN,
        matrix(MATRIX + "timeout: " + "9" * 5000 + "\n"),
        2,
        f"{M}:9:10: timeout: integer of 5000 digits is too long",
    ),
    "class 4: a CUDA version of 5000 digits": Case(
        PLAN,
        edit('"13.0"', '"13.' + "0" * 5000 + '"'),
        2,
        f"{M}:3:8: cuda[0]: malformed CUDA version",
    ),
    "class 4: nvcc source marker of 5000 digits (not an error)": Case(
        (*PROBE, "--json"),
        files(
            **{
                "lib.so": named_kernel(
                    "_ZN" + "9" * 4 + "_GLOBAL__N__abc_" + "9" * 5000 + "_x_cu_1kEv"
                )
            }
        ),
        0,
        None,
        says='"arch": "sm_100f"',
    ),
    "class 4: families: the matrix itself": Case(
        PLAN,
        matrix(MATRIX.split("families:")[0] + "families: m.yaml\n"),
        2,
        f"{M}:5:11: families: 'm.yaml' leads back to",
    ),
    "class 4: families: two matrices naming each other": Case(
        PLAN,
        files(
            **{
                "m.yaml": MATRIX.split("families:")[0] + "families: other.yaml\n",
                "other.yaml": MATRIX.split("families:")[0] + "families: m.yaml\n",
            }
        ),
        2,
        "{tmp}/other.yaml:5:11: families: 'm.yaml' leads back to",
    ),
    "class 4: NUL in source": Case(
        PLAN,
        edit("source: src", 'source: "src\\0"'),
        2,
        f"{M}:2:11: project.source: contains a NUL character",
    ),
    "class 4: a lone surrogate in source": Case(
        PLAN,
        edit("source: src", 'source: "src\\ud800"'),
        2,
        f"{M}:2:11: project.source: contains a lone surrogate",
    ),
    "class 4: NUL in an env value": Case(
        PLAN,
        edit("  source: src\n", '  source: src\n  env: {A: "x\\0y"}\n'),
        2,
        "project.env.A: contains a NUL character",
    ),
    "class 4: NUL in an env key": Case(
        PLAN,
        edit("  source: src\n", '  source: src\n  env: {"A\\0": x}\n'),
        2,
        "project.env.A\\0: contains a NUL character",
    ),
    "class 4: NUL in a cmake_options value": Case(
        PLAN,
        edit("  source: src\n", '  source: src\n  cmake_options: {A: "\\0"}\n'),
        2,
        "project.cmake_options.A: contains a NUL character",
    ),
    "class 4: '=' in an env key": Case(
        PLAN,
        edit("  source: src\n", "  source: src\n  env: {'A=B': x}\n"),
        2,
        "project.env: 'A=B' does not match",
    ),
    "class 4: a directory nested 1200 deep (not an error)": Case(
        ("probe", "{tmp}/deep", "--json"),
        deep_dirs(1200, "lib.so", GOOD),
        0,
        None,
        says='"arch": "sm_100f"',
    ),
    "class 4: results nested 1200 deep (not an error)": Case(
        ("report", "{tmp}/deep", "--out", "{tmp}/r"),
        deep_dirs(1200, "cells/c.json", json.dumps(RESULT).encode()),
        0,
        None,
        says="1 passed",
    ),
    # == issue 21: artifacts validated on load ======================================
    "class 5: result: duration_s a string": Case(
        REPORT,
        with_result(duration_s="3 s"),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result: duration_s: expected number, got str '3 s'",
    ),
    "class 5: result: a verdict's family a number": Case(
        REPORT,
        with_result(verdicts=[{**VERDICT, "family": 7}]),
        2,
        "cell result: verdicts[0].family: expected string, got int 7",
    ),
    "class 5: result: a verdict's status unknown": Case(
        REPORT,
        with_result(verdicts=[{**VERDICT, "status": "fine"}]),
        2,
        "verdicts[0].status: 'fine' is not one of",
    ),
    "class 5: result: inventory kernels not a list": Case(
        REPORT,
        with_result(
            inventory={
                "libraries": [
                    {
                        "path": "x",
                        "cubins": [{"arch": "sm_90a", "kernels": 5, "sources": []}],
                        "ptx": [],
                    }
                ]
            }
        ),
        2,
        "inventory.libraries[0].cubins[0].kernels: expected array, got int 5",
    ),
    "class 5: result: NaN": Case(
        REPORT,
        files(**{"res.json": '{"duration_s": NaN}'}),
        2,
        "not JSON (NaN is not a JSON number)",
    ),
    "class 5: result with a number beyond a float (1e400)": Case(
        REPORT,
        files(**{"res.json": '{"duration_s": 1e400}'}),
        2,
        "not JSON (1e400 is out of range)",
    ),
    "class 5: result whose duration_s has 400 digits": Case(
        REPORT,
        files(**{"res.json": '{"duration_s": 1' + "0" * 400 + "}"}),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result: not JSON (an integer of 401 digits",
    ),
    "class 5: result whose kernel size has 400 digits": Case(
        REPORT,
        files(
            **{
                "res.json": json.dumps(
                    {
                        **RESULT,
                        "inventory": {
                            "libraries": [
                                {
                                    "path": "x",
                                    "cubins": [
                                        {
                                            "arch": "sm_90a",
                                            "kernels": [
                                                {"name": "k", "size": 7, "instructions": 9}
                                            ],
                                            "sources": [],
                                        }
                                    ],
                                    "ptx": [],
                                }
                            ]
                        },
                    }
                ).replace('"size": 7', '"size": ' + "9" * 400)
            }
        ),
        2,
        "not JSON (an integer of 400 digits is out of range)",
    ),
    "class 5: baseline whose kernel size has 400 digits": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        baseline_with_copy('["lib", "sm_90a", -' + "9" * 400 + ", false]"),
        2,
        "{tmp}/b.json: not a kernel-matrix baseline: not JSON (an integer of 400 digits",
    ),
    "class 5: result whose cell id is a lone surrogate": Case(
        REPORT,
        files(**{"res.json": json.dumps(RESULT).replace('"c"', '"\\ud800"')}),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result: a string holds a lone surrogate",
    ),
    "class 5: result with an emoji escape (a surrogate pair, not an error)": Case(
        REPORT,
        files(**{"res.json": json.dumps(RESULT).replace('"c"', '"\\ud83d\\ude00"')}),
        0,
        None,
        says="1 passed",
    ),
    "class 5: result nested 100000 deep": Case(
        REPORT,
        files(**{"res.json": nested_json(100_000)}),
        2,
        "{tmp}/res.json: not a kernel-matrix cell result: nested too deeply",
    ),
    "class 5: result nested 500 deep": Case(
        REPORT, files(**{"res.json": nested_json(500)}), 2, "nested 65 levels deep (at most 64)"
    ),
    "class 5: result not UTF-8": Case(
        REPORT,
        files(**{"res.json": b'{"a": "\xff"}'}),
        2,
        "{tmp}/res.json: cannot read: not UTF-8 text (byte 7)",
    ),
    "class 5: results.json: a cell's status a number": Case(
        ("report", "{tmp}/results.json", "--out", "{tmp}/r"),
        files(
            **{
                "results.json": json.dumps(
                    {
                        "schema_version": 1,
                        "run": {"tool_version": "x", "written": "w", "cells": 1},
                        "cells": [{**RESULT, "status": 1}],
                    }
                )
            }
        ),
        2,
        "{tmp}/results.json: not a kernel-matrix results file: cells[0].status: 1 is not one of",
    ),
    "class 5: baseline: a cell's status a list": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        both(
            good_result,
            files(
                **{
                    "b.json": json.dumps(
                        {**BASELINE, "cells": {"c": {"status": [], "families": [], "kernels": {}}}}
                    )
                }
            ),
        ),
        2,
        "{tmp}/b.json: not a kernel-matrix baseline: cells.c.status: [] is not one of",
    ),
    "class 5: baseline: a kernel copy's size a string": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        baseline_with_copy('["lib", "sm_90a", "big", false]'),
        2,
        "not a kernel-matrix baseline: cells.c.kernels.k[0][2]",
    ),
    "class 5: baseline nested 100000 deep": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        both(good_result, files(**{"b.json": nested_json(100_000)})),
        2,
        "{tmp}/b.json: not a kernel-matrix baseline: nested too deeply",
    ),
    "class 5: baseline not UTF-8": Case(
        ("diff", "{tmp}/b.json", "{tmp}/res.json"),
        both(good_result, files(**{"b.json": b"\xfe{}"})),
        2,
        "{tmp}/b.json: cannot read: not UTF-8 text (byte 0)",
    ),
    "class 5: history: baseline not a string": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        history({"schema_version": 1, "runs": [{**HISTORY_ENTRY, "baseline": 5}]}),
        2,
        "{tmp}/h.json: not a kernel-matrix history file: runs[0].baseline: expected",
    ),
    "class 5: history: counts a string": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        history({"schema_version": 1, "runs": [{**HISTORY_ENTRY, "counts": "many"}]}),
        2,
        "runs[0].counts: expected object, got str 'many'",
    ),
    "class 5: history nested 100000 deep": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        history(nested_json(100_000)),
        2,
        "{tmp}/h.json: not a kernel-matrix history file: nested too deeply",
    ),
    "class 5: history not UTF-8": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        history(b"\x80"),
        2,
        "{tmp}/h.json: cannot read: not UTF-8 text",
    ),
    "class 5: history of another version": Case(
        (*REPORT, "--history", "{tmp}/h.json"),
        history({"schema_version": 7, "runs": []}),
        2,
        "unsupported schema_version 7",
    ),
    # == issue 21: smaller ones =====================================================
    "class 6: families: /etc/passwd": Case(
        PLAN,
        matrix(MATRIX.split("families:")[0] + "families: /etc/passwd\n"),
        2,
        "/etc/passwd",
        absent="root",
    ),
    "class 6: a families file of one long line is not echoed": Case(
        CHECK,
        files(**{"lib.so": GOOD, "fam.yaml": "secret-token-" + "x" * 500 + "\n"}),
        2,
        "{tmp}/fam.yaml:1:1: expected object, got str",
        absent="secret-token",
    ),
    "class 6: --timeout inf": Case(
        (*RUN, "--timeout", "inf"), matrix(MATRIX), 2, "--timeout must be a positive number"
    ),
    "class 6: matrix timeout of 64 digits": Case(
        PLAN, matrix(MATRIX + "timeout: " + "9" * 64 + "\n"), 2, f"{M}:9:10: timeout: 99"
    ),
    "class 6: full-width digits in an arch": Case(
        PLAN, edit('"9.0a"', '"９.０a"'), 2, f"{M}:4:9: archs[0]: malformed architecture '９.０a'"
    ),
    "class 6: full-width digits in a CUDA version": Case(
        PLAN, edit('"13.0"', '"１３.0"'), 2, f"{M}:3:8: cuda[0]: malformed CUDA version"
    ),
    "class 6: full-width digits in a device": Case(
        PLAN,
        edit('devices: ["10.0", "12.1"]', 'devices: ["１0.0"]'),
        2,
        "families.nvfp4.devices[0]: malformed architecture",
    ),
    "class 6: full-width digits in --devices": Case(
        (*CHECK, "--devices", "１2.1"),
        files(**{"lib.so": GOOD, "fam.yaml": FAMILIES}),
        2,
        "malformed architecture '１2.1'",
    ),
    "class 6: probe of a wheel without shared objects": Case(
        ("probe", "{tmp}/wheels/pkg-1.0-py3-none-any.whl"),
        wheel(("pkg/__init__.py", b"")),
        2,
        "pkg-1.0-py3-none-any.whl: no shared objects (*.so, *.so.N) in this wheel",
    ),
    # -- infrastructure: exit 3 -----------------------------------------------------
    "docker engine down": Case(
        (*RUN, "--backend", "docker"),
        matrix(MATRIX),
        3,
        "no Docker engine reachable at unix:///nonexistent",
        env={"DOCKER_HOST": "unix:///nonexistent"},
    ),
    "toolchain download failure": Case(
        RUN,
        unreachable_index,
        3,
        "cu13.0-9.0a: installing CUDA 13.0 toolchain (cuda-toolkit[",
        env={
            "KERNEL_MATRIX_CACHE": "{tmp}/cache",
            "PIP_INDEX_URL": "@{tmp}/index-url",  # @: the file's content
            # One retry, not pip's default 5 (8 s): pip names the refused connection
            # only when it retries (with none, it says just "no matching distribution").
            "PIP_RETRIES": "1",
            "PIP_FIND_LINKS": "",
        },
    ),
    # == issue 32: check what is installed, on this machine's GPUs =====================
    "check: --launch-stubs without --confirm-with-driver": Case(
        (*CHECK, "--launch-stubs"), files(**{"lib.so": GOOD, "fam.yaml": FAM}), 2,
        "--launch-stubs needs --confirm-with-driver",
    ),
    "check: both paths and --installed": Case(
        (*CHECK, "--installed", "vllm"), files(**{"lib.so": GOOD, "fam.yaml": FAM}), 2,
        "give either PATH... or --installed, not both",
    ),
    "check: nothing to check": Case(
        ("check", "--families", "vllm"), files(), 2,
        "nothing to check: give a wheel, .so or directory, or --installed DIST",
    ),
    "check: a distribution not installed": Case(
        ("check", "--installed", "no-such-dist-kernel-matrix", "--python", sys.executable), files(), 2,
        f"--installed no-such-dist-kernel-matrix: not installed for {sys.executable}; pass --python",
    ),
    "check: --python that is not an interpreter": Case(
        ("check", "--installed", "vllm", "--python", "{tmp}/no-python"), files(), 2,
        "--python {tmp}/no-python: no such interpreter",
    ),
    "check: --python without --installed": Case(
        (*CHECK, "--python", sys.executable), files(**{"lib.so": GOOD, "fam.yaml": FAM}), 2,
        "--python goes with --installed",
    ),
    "check: an installed distribution with no shared object": Case(
        ("check", "--installed", "pytest", "--python", sys.executable), files(), 2,
        "--installed pytest: pytest ", absent="Traceback",
    ),
    "check: --confirm-with-driver on devices named, not local": Case(
        (*CHECK, "--confirm-with-driver", "--devices", "9.0"), files(**{"lib.so": GOOD, "fam.yaml": FAM}), 2,
        "--confirm-with-driver asks the GPUs of this machine: use --devices local",
    ),
}  # fmt: skip


# -- what the package index cannot give (a local index: tests/unit/package_index.py) --------

INDEX_ENV = {
    "KERNEL_MATRIX_CACHE": "{tmp}/cache",
    "PIP_INDEX_URL": "@{tmp}/index-url",  # the local index, or a closed port
    "PIP_RETRIES": "1",
    "PIP_FIND_LINKS": "",
    "no_proxy": "127.0.0.1",  # a proxy of the machine's must not answer for the local index
}
SDIST = sdist_bytes({"vllm-1.0/CMakeLists.txt": b"project(v)\n"})


def released(*, sha256: str | None = None, html: bool = False, lose_file: bool = False) -> Maker:
    """The index lists vllm-1.0.tar.gz (with ``sha256`` as its digest), on a JSON or an
    HTML page; with ``lose_file`` the file itself is gone (404)."""

    def make(tmp: Path) -> None:
        matrix(MATRIX)(tmp)
        publish(tmp / "index", "vllm", "vllm-1.0.tar.gz", SDIST, sha256=sha256, html=html)
        if lose_file:
            (tmp / "index" / "files" / "vllm-1.0.tar.gz").unlink()

    return make


def index_page(body: str) -> Maker:
    def make(tmp: Path) -> None:
        matrix(MATRIX)(tmp)
        (tmp / "index" / "simple" / "vllm").mkdir(parents=True)
        (tmp / "index" / "simple" / "vllm" / "index.json").write_text(body)

    return make


CONFIGURE_MATRIX = (
    """\
project:
  build: pip
  configure:
    python:
      requirements: [requirements.txt]
      packages: [torch]
cuda: ["13.0"]
archs: ["12.1a"]
"""
    + FAMILIES
)


def configure_project(tmp: Path) -> None:
    """A `build: pip` project pinning torch, a CUDA 13.0 home (its nvcc answers only
    ``--version``: nothing is compiled before the Python packages are provisioned) and
    an index without torch."""
    files(**{"m.yaml": CONFIGURE_MATRIX, "src__requirements.txt": "torch==2.9.0\n"})(tmp)
    nvcc = tmp / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text('#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n')
    nvcc.chmod(0o755)
    (tmp / "index" / "simple").mkdir(parents=True)


RELEASE = ("plan", "{tmp}/m.yaml", "--source")
CONFIGURE = (*RUN, "--tier", "configure", "--source", "{tmp}/src", "--cuda-home", "{tmp}/cuda")

INDEX_CATALOGUE: dict[str, Case] = {
    "release: version not on the index": Case(
        (*RELEASE, "vllm==9.9"), released(), 2, "vllm==9.9: the package index has no sdist of that version (newest: 1.0)", env=INDEX_ENV
    ),
    "release: project not on the index": Case(
        (*RELEASE, "nosuch==1.0"), released(), 2, "nosuch==1.0: the package index has no project 'nosuch'", env=INDEX_ENV
    ),
    "release: sha256 differs from the index's": Case(
        (*RELEASE, "vllm==1.0"), released(sha256="0" * 64), 3, "vllm-1.0.tar.gz: sha256 differs from the index's", env=INDEX_ENV
    ),
    "release: sha256 differs, HTML index": Case(
        (*RELEASE, "vllm==1.0"), released(sha256="0" * 64, html=True), 3, "vllm-1.0.tar.gz: sha256 differs from the index's", env=INDEX_ENV
    ),
    "release: the listed file is gone": Case(
        (*RELEASE, "vllm==1.0"), released(lose_file=True), 3, "downloading vllm-1.0.tar.gz failed (HTTP Error 404", env=INDEX_ENV
    ),
    "release: the index answers no index page": Case(
        (*RELEASE, "vllm==1.0"), index_page('{"files": 3}'), 3, "/simple/vllm/: not a package index page", env=INDEX_ENV
    ),
    "release: index unreachable": Case(
        (*RELEASE, "vllm==1.0"), unreachable_index, 3, "cannot reach the package index http://127.0.0.1:", env=INDEX_ENV
    ),
    "release: index credentials refused, and not shown": Case(
        (*RELEASE, "vllm==1.0"), both(released(), files(**{"index__password": "right"})), 3, "cannot list vllm on the package index http://127.0.0.1:", env={**INDEX_ENV, "PIP_INDEX_URL": "@{tmp}/index-url-wrong"}, absent="wrong",
    ),
    "configure: a Python package not on the index": Case(
        CONFIGURE, configure_project, 3, "installing torch==2.9.0 failed: ERROR: No matching distribution found for torch==2.9.0", env=INDEX_ENV
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", INDEX_CATALOGUE)
def test_what_the_index_cannot_give(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release, a digest or a package the index cannot give is one clear line (exit 2
    for the user's choice, 3 for the index), and nothing half-downloaded is kept."""
    case = INDEX_CATALOGUE[name]
    with serving(tmp_path / "index") as url:
        (tmp_path / "index-url").write_text(url)
        (tmp_path / "index-url-wrong").write_text(url.replace("http://", "http://me:wrong@"))
        code, out, err = run_case(case, tmp_path, monkeypatch)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]  # not "downloading ..."
    assert_outcome(case, tmp_path, code, out, "\n".join(errors))
    cache = tmp_path / "cache"
    assert not list(cache.glob("sdists/*")) and not list(cache.glob("sources/*/*"))
    assert not [p for p in cache.glob("python/*") if p.is_dir()], "a failed install was kept"


def run_case(case: Case, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    case.make(tmp)
    for key, value in case.env.items():
        value = value.replace("{tmp}", str(tmp))
        if value.startswith("@"):
            value = Path(value[1:]).read_text()
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.chdir(tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    out, err = StringIO(), StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(argv)
    return code, out.getvalue(), err.getvalue()


def error_line(stderr: str) -> str:
    """The one ``kernel-matrix: error:`` line, and nothing else on stderr."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernel-matrix: error: "), stderr
    return lines[0]


def remove_tree(root: Path) -> None:
    """``shutil.rmtree`` without recursion: it recurses per level, and a tree 1 200
    deep left in pytest's temporary folders would crash pytest's own clean-up of them
    (RecursionError) in a later session."""
    folders = [root]
    index = 0
    while index < len(folders):
        with os.scandir(folders[index]) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                else:
                    os.unlink(entry.path)
        index += 1
    for folder in reversed(folders):
        folder.rmdir()


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_input(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CATALOGUE[name]
    if name == "toolchain download failure" and toolchain.find_system(CudaVersion(13, 0)):
        pytest.skip("a system CUDA 13.0 toolkit would be used instead of downloading one")
    started = time.monotonic()
    try:
        code, out, err = run_case(case, tmp_path, monkeypatch)
    finally:
        if (tmp_path / "deep").is_dir():
            remove_tree(tmp_path / "deep")
    assert time.monotonic() - started < 30, "a bad input must fail fast"
    assert_outcome(case, tmp_path, code, out, err)


def assert_outcome(case: Case, tmp: Path, code: int, out: str, err: str) -> None:
    assert code == case.code, (out[-2000:], err)
    if case.error is None:
        assert "Traceback" not in err and "error" not in err, err
        assert case.says in out
        return
    line = error_line(err)
    assert case.error.replace("{tmp}", str(tmp)) in line, line
    assert not case.absent or case.absent not in line, line


def test_the_catalogue_covers_every_category() -> None:
    """The issue's list, row by row (the rows that need a compiler, a full disk or a
    signal are the integration part's)."""
    assert len(CATALOGUE) >= 25
    names = " ".join(CATALOGUE)
    for category in (
        "malformed YAML",
        "unknown top-level key",
        "wrong type",
        "unknown arch",
        "malformed arch",
        "empty arch list",
        "duplicate cells",
        "unknown CUDA version",
        "missing source dir",
        "non-ELF file",
        "truncated ELF",
        "ELF without device code",
        "corrupt fatbin header",
        "corrupt zstd payload",
        "zip-slip",
        "huge symbol names",
        "toolchain download failure",
        "docker engine down",
    ):
        assert category in names, category


def test_zip_slip_wheel_leaves_nothing_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel is refused before anything is read out of it, and nothing is ever
    extracted under a member's path."""
    run_case(CATALOGUE["probe: wheel with zip-slip member"], tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["pkg-1.0-py3-none-any.whl", "wheels"]
    assert not (tmp_path.parent / "evil.so").exists()


def test_an_oversized_wheel_member_is_refused_and_no_copy_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library member is inflated once into a private temporary file: one claiming
    more than the bound is refused before anything is written, and a read one leaves
    no copy behind."""
    import orchestrator.probe as probe_module

    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/_C.so", build_shared_object([]) + bytes(4096))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)  # (re-read TMPDIR)
    assert main(["probe", str(wheel), "--json"]) == 0
    assert list(scratch.iterdir()) == []
    monkeypatch.setattr(probe_module, "MAX_MEMBER_BYTES", 1024)
    assert main(["probe", str(wheel)]) == 2
    assert "a wheel member of" in capsys.readouterr().err
    assert list(scratch.iterdir()) == []


def test_toolchain_failure_keeps_the_cell_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing lost: the cell that could not get a toolchain is written as an error,
    with the cause, and the reports exist."""
    if toolchain.find_system(CudaVersion(13, 0)):
        pytest.skip("a system CUDA 13.0 toolkit would be used instead of downloading one")
    code, _, err = run_case(CATALOGUE["toolchain download failure"], tmp_path, monkeypatch)
    assert code == EXIT_INFRA
    assert "the package index is unreachable (Connection refused)" in error_line(err)
    result = json.loads((tmp_path / "out" / "cells" / "cu13.0-9.0a.json").read_text())
    assert result["status"] == "error"
    assert "package index is unreachable" in result["reason"]
    assert (tmp_path / "out" / "junit.xml").is_file()
    # nothing half-installed is left in the cache
    leftovers = [p.name for p in (tmp_path / "cache" / "toolchains").iterdir()]
    assert leftovers == ["cuda-13.0.lock"]


def test_probe_of_huge_names_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    code, out, _ = run_case(
        CATALOGUE["probe: huge symbol names (not an error)"], tmp_path, monkeypatch
    )
    assert code == 0 and time.monotonic() - started < 10
    (library_json,) = json.loads(out)["libraries"]
    (kernel,) = library_json["cubins"][0]["kernels"]
    assert len(kernel["mangled"]) == len(HUGE_NAME)


# --- issue 21: one test per class beyond the rows ----------------------------------------

CLASSES = {
    "class 1": "one writer per output directory; nothing finished overwritten",
    "class 2": "unbounded time: catastrophic regexes, FIFOs",
    "class 3": "unbounded memory and work from small inputs",
    "class 4": "Python exceptions that escaped the error model",
    "class 5": "artifacts read back without validation",
    "class 6": "smaller ones",
}


def test_every_class_of_issue_21_has_several_rows() -> None:
    for prefix in CLASSES:
        rows = [name for name in CATALOGUE if name.startswith(prefix + ":")]
        assert len(rows) >= 3, (prefix, rows)


@contextlib.contextmanager
def another_writer(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding ``directory``'s writer lock (as a running
    ``kernel-matrix run --out directory`` does) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from orchestrator.common.fsutil import sole_writer\n"
            "with sole_writer(Path(sys.argv[1])):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_class_1_a_second_run_on_a_busy_directory_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs with one --out: the second gets one line and exit 3, even with
    --resume, and the first one's finished cell stays as it was."""
    finished_run(tmp_path)
    cell = tmp_path / "out" / "cells" / "cu13.0-9.0a.json"
    before = cell.read_bytes()
    with another_writer(tmp_path / "out"):
        for extra in ((), ("--resume",)):
            code, _, err = run_case(Case((*RUN, *extra), files(), 3, ""), tmp_path, monkeypatch)
            assert code == EXIT_INFRA
            line = error_line(err)
            assert f"{tmp_path}/out: another kernel-matrix process is writing" in line
        code, _, err = run_case(
            Case(("report", str(cell), "--out", "{tmp}/out"), files(), 3, ""), tmp_path, monkeypatch
        )
        assert code == EXIT_INFRA and "another kernel-matrix process" in error_line(err)
    assert cell.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cells", "run.json"]


def test_class_1_the_lock_goes_with_a_killed_writer(tmp_path: Path) -> None:
    """flock: a SIGKILLed writer leaves no stale lock behind (and no lock file)."""
    with another_writer(tmp_path / "out") as holder:
        with pytest.raises(OutputBusy), sole_writer(tmp_path / "out"):
            pass
        holder.kill()
        holder.wait()
        with sole_writer(tmp_path / "out"):
            pass
    assert list((tmp_path / "out").iterdir()) == []


def test_class_1_a_refused_run_keeps_the_finished_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, _ = run_case(
        CATALOGUE["class 1: run into the directory of a finished run, without --resume"],
        tmp_path,
        monkeypatch,
    )
    assert code == EXIT_USAGE
    cell = json.loads((tmp_path / "out" / "cells" / "cu13.0-9.0a.json").read_text())
    assert cell == {**RESULT, "cell": {"id": "cu13.0-9.0a"}}
    assert not (tmp_path / "build").exists()  # nothing was built either


def test_class_3_section_headers_naming_one_fatbin_are_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5000 headers naming one .nv_fatbin: one cubin in the inventory, not 5000
    (before: each header decoded the fatbin again and listed its cubins again)."""
    code, out, _ = run_case(
        CATALOGUE["class 3: 5000 section headers naming one fatbin (not an error)"],
        tmp_path,
        monkeypatch,
    )
    assert code == 0
    (library_json,) = json.loads(out)["libraries"]
    assert [c["arch"] for c in library_json["cubins"]] == ["sm_100f"]


def test_class_3_decompressed_bytes_per_library_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound counts what the entry headers claim, before decompressing: with the
    limit set just under a library's two zstd entries, the second is refused."""
    payload = cubin()
    data = library(
        EntrySpec(KIND_ELF, 90, payload, "a", compression="zstd"),
        EntrySpec(KIND_ELF, 100, payload, "f", compression="zstd"),
    )
    blob = BytesBlob("lib.so", data)
    assert len(read_library(blob, "lib.so").cubins) == 2
    monkeypatch.setattr(reading, "MAX_DECOMPRESSED_PER_LIBRARY", 2 * len(payload) - 1)
    with pytest.raises(InputFileError, match="decompressed in one library; refusing it"):
        read_library(blob, "lib.so")


def test_class_3_entries_per_library_count_across_containers_and_sections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entries = [EntrySpec(KIND_PTX, 120, b"") for _ in range(3)]
    data = build_shared_object([build_container(entries), build_container(entries)])
    monkeypatch.setattr(reading, "MAX_ENTRIES_PER_LIBRARY", 5)
    with pytest.raises(InputFileError, match="more than 5 fatbin entries"):
        read_library(BytesBlob("lib.so", data), "lib.so")


def test_class_2_a_slow_regex_is_refused_within_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pattern slow on every name (each match under the per-match timeout) is
    refused once it has spent its budget (1 s here, 10 s in use), not after every
    name of the inventory."""
    monkeypatch.setattr(userregex, "BUDGET_S", 1.0)
    rule = UserRegex(SLOW, "families.slow.kernels[0]")
    matched = 0
    with pytest.raises(
        ConfigError, match=r"families.slow.kernels\[0\]: regex .* has spent its 1 s"
    ):
        for index in range(100_000):
            rule.search(f"{'a' * 22}b{index}")  # tens of ms each (distinct: no memo)
            matched += 1
    assert matched < 1000


def test_class_2_a_linear_regex_never_runs_out_of_budget() -> None:
    """However many names a good pattern meets, only time beyond a linear allowance
    counts: 200 000 matches, and a 16 MiB name, leave its budget untouched."""
    rule = UserRegex("nvfp4_[a-z]+", "families.x.kernels[0]")
    for index in range(200_000):
        rule.search(f"void nvfp4_quant<{index}>(float*)")
    assert rule.search("x" * (16 << 20) + "nvfp4_q")
    assert rule._spent < 1


def _source_digest_with_os_walk(source: Path) -> str:
    """runner.source_digest as it was (os.walk): the cache keys must not change."""
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SOURCE_SKIP_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            with contextlib.suppress(OSError):
                digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def test_class_2_and_4_the_source_digest_of_hostile_trees(tmp_path: Path) -> None:
    """`run` hashes the project's source tree for its cache key: a FIFO in it blocked
    the read for ever, and a tree nested 1 200 deep raised RecursionError in
    os.walk. Now both are hashed, and an ordinary tree keeps its old digest."""
    assert source_digest(REPO / "examples") == _source_digest_with_os_walk(REPO / "examples")
    source = tmp_path / "src"
    deep_dirs(1200, "kernel.cu", b"__global__ void k() {}")(tmp_path)
    (tmp_path / "deep").rename(source)
    os.mkfifo(source / "a-fifo")
    (source / "loop").symlink_to(source)
    started = time.monotonic()
    try:
        first = source_digest(source)
        (source / "a-fifo").unlink()
        assert source_digest(source) != first  # the FIFO's name counts
    finally:
        remove_tree(source)
    assert time.monotonic() - started < 60


def test_a_base_source_that_is_no_tree_nor_ref_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base-source: a git ref of the head's checkout, or a source like --source; what
    is neither is exit 2 before anything runs, naming the repository it looked in."""
    repo = tmp_path / "ext"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        f"project: {{source: {repo}}}\ncuda: ['13.0']\narchs: ['9.0a']\n"
        f"families: {REPO / 'examples' / 'sample_ext' / 'families.yaml'}\n"
    )
    for ref in ("origin/nope", "--upload-pack=x"):
        code = main(["run", str(matrix), "--tier", "configure", f"--base-source={ref}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert err[0] == (
            f"kernel-matrix: error: --base-source {ref}: no such directory or sdist, not a "
            f"release like vllm==0.33.0, and not a git ref of {repo}"
        )
