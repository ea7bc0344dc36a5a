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

import json
import socket
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pytest
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

from orchestrator import toolchain
from orchestrator.archs import CudaVersion
from orchestrator.cli import main

EXIT_USAGE, EXIT_INFRA = 2, 3
REPO = Path(__file__).resolve().parents[2]
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
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
}


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


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_input(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CATALOGUE[name]
    if name == "toolchain download failure" and toolchain.find_system(CudaVersion(13, 0)):
        pytest.skip("a system CUDA 13.0 toolkit would be used instead of downloading one")
    started = time.monotonic()
    code, out, err = run_case(case, tmp_path, monkeypatch)
    assert time.monotonic() - started < 30, "a bad input must fail fast"
    assert code == case.code, (out[-2000:], err)
    if case.error is None:
        assert "Traceback" not in err and "error" not in err, err
        assert case.says in out
        return
    line = error_line(err)
    assert case.error.replace("{tmp}", str(tmp_path)) in line, line


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
    extracted: probe streams members in place."""
    run_case(CATALOGUE["probe: wheel with zip-slip member"], tmp_path, monkeypatch)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["pkg-1.0-py3-none-any.whl", "wheels"]
    assert not (tmp_path.parent / "evil.so").exists()


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
