"""The native probe's fast paths give exactly what the plain definitions give: the
one-pass PTX scan against the line-by-line reference, SASS counted in place
against a copied slice, and entries decoded by worker processes against this
process."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth import (
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
    working_body,
)

from orchestrator.common.errors import InputFileError
from orchestrator.probe import probe
from orchestrator.read import library as reading
from orchestrator.read import ptx as ptx_reading
from orchestrator.read.ptx import ptx_entries
from orchestrator.read.sass import count_working_sass, count_working_sass_in

# --- PTX: the reference definition, line by line ------------------------------------

_FUNCTION = re.compile(rb"\.(entry|func)[ \t]+(?:\([^)]*\)[ \t]*)?([A-Za-z_$%][\w$%]*)")
_LINKAGE = re.compile(rb"[ \t]*(?:\.(?:visible|weak|extern)[ \t]+)*")
_CANDIDATE = re.compile(rb"\n([.@rebt{ \t][^\n]{0,80})")
_NOT_WORK = re.compile(
    rb"[ \t]*(?:\{[ \t]*)?(?:\.(?:reg|local|shared|param|pragma)\b|"
    rb"(?:@!?%\w+[ \t]+)?(?:ret|exit|trap|brkpt|bra)\b)"
)


def reference_entries(text: bytes) -> list[tuple[str, int]]:
    """Every .entry/.func keyword preceded on its line by linkage only is a header;
    an entry's body is its statements less its lines that only declare or branch."""
    found = []
    for keyword in (b".entry", b".func"):
        position = text.find(keyword)
        while position >= 0:
            line_start = text.rfind(b"\n", 0, position) + 1
            if _LINKAGE.fullmatch(text, line_start, position):
                match = _FUNCTION.match(text, position)
                if match:
                    found.append(match)
            position = text.find(keyword, position + len(keyword))
    headers = sorted(found, key=lambda m: m.start())
    entries = []
    for index, header in enumerate(headers):
        if header.group(1) != b"entry":
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        params_end = text.find(b")", header.end(), end)
        opening = text.find(b"{", params_end if params_end >= 0 else header.end(), end)
        count = 0
        if opening >= 0:
            closing = text.rfind(b"\n}", opening, end)
            if closing < 0:
                closing = end
            body = text[opening + 1 : closing + 1]
            idle = sum(1 for line in _CANDIDATE.findall(b"\n" + body) if _NOT_WORK.match(line))
            count = max(0, body.count(b";") - idle)
        entries.append((header.group(2).decode("ascii"), count))
    return entries


BODY_LINES = [
    "mov.u32 %r1, %r2;",
    "add.s32 %r3, %r1, 1; st.global.u32 [%rd1], %r3;",
    "ret;",
    "exit;",
    "trap;",
    "brkpt;",
    "bra.uni $L__BB0_1;",
    "@%p1 bra $L__BB0_2;",
    "@!%p2 ret;",
    "\t@%p1 bra \t$L__BB0_2;",
    "{ .reg .b32 %r<3>; mov.u32 %r1, 0;",
    "{",
    "}",
    "}}",
    ".reg .pred %p<4>;",
    "  .local .align 4 .b8 __local_depot0[8];",
    ".shared .b32 s;",
    ".param .b64 param0;",
    '.pragma "nounroll";',
    ".regx .b32 odd;",
    "branch;",
    "bar.sync 0;",
    "brev.b32 %r1, %r2;",
    "retired;",
    "$L__BB0_2:",
    "// comment; with a semicolon",
    "ld.param.u64 %rd1, [_Z1kPf_param_0];",
    " " * 78 + "bra x;",  # the keyword ends at the 81st character of its line
    " " * 78 + "braX;",  # ... followed by a word character
    " " * 79 + "bra;",  # ... past the 81st character
    " " * 77 + "ret;",
    "\t" * 85 + "ret;",
    "@%" + "p" * 80 + " bra L;",
    "x .entry _Z1notv(",
    "",
]
HEADERS = [
    ".visible .entry _Z1kv(",
    ".weak .entry _Z4mainPf(",
    "  .entry _Z2k2v()",
    ".func (.param .b32 func_retval0) _Z6helperi(",
    ".extern .func _Z4declv",
    ".visible .func _Z3auxv()",
    ".entry",
]
function = st.tuples(
    st.sampled_from(HEADERS),
    st.sampled_from(["", "\n.param .u64 _Z1kv_param_0\n)", ")\n.maxntid 128, 1, 1"]),
    st.sampled_from(["{", "{ ret;", "{mov.u32 %r1, 1;", ""]),
    st.lists(st.sampled_from(BODY_LINES), max_size=12),
    st.sampled_from(["}", "", "}}"]),
).map(lambda parts: "\n".join([parts[0] + parts[1], parts[2], *parts[3], parts[4]]))


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(function, st.sampled_from(BODY_LINES)), max_size=8),
    st.sampled_from(["", "\n", ".version 9.0\n"]),
)
def test_ptx_scan_equals_the_line_by_line_definition(blocks: list[str], lead: str) -> None:
    text = (lead + "\n".join(blocks)).encode()
    assert [(e.mangled, e.instructions) for e in ptx_entries(text)] == reference_entries(text)
    # the other way of finding headers, taken for modules of very many entries
    assert ptx_reading._ptx_headers_by_line(text) == ptx_reading._ptx_headers(text)


def test_ptx_scan_on_a_typical_module() -> None:
    text = ptx_module(
        "sm_90",
        {
            "_Z1av": "ret;",
            "_Z1bv": ".reg .b32 %r<2>;\nmov.u32 %r1, 1;\n@%p1 bra $L;\n$L:\nret;",
        },
    )
    assert [(e.mangled, e.instructions) for e in ptx_entries(text)] == [
        ("_Z1av", 0),
        ("_Z1bv", 1),
    ]
    assert reference_entries(text) == [("_Z1av", 0), ("_Z1bv", 1)]


def test_a_module_of_very_many_functions_is_read_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MANY_HEADERS functions the headers are found by the other way, in the full
    read and the lazy one alike (a module of three stands in for one of 20 000)."""
    body = ".reg .b32 %r<2>;\nmov.u32 %r1, 1;\nret;"
    text = ptx_module("sm_90", {f"_Z1{name}v": body for name in "abcde"})
    expected = reference_entries(text)
    assert [e.instructions for e in ptx_entries(text)] == [1] * 5
    monkeypatch.setattr(ptx_reading, "MANY_HEADERS", 3)
    monkeypatch.setattr(ptx_reading, "_ptx_headers_by_line", count_calls := CallCounter(
        ptx_reading._ptx_headers_by_line
    ))  # fmt: skip
    assert [(e.mangled, e.instructions) for e in ptx_entries(text)] == expected
    assert [(e.mangled, e.instructions) for e in ptx_entries(text, lambda _: True)] == expected
    assert count_calls.calls == 2


class CallCounter:
    def __init__(self, function: Any) -> None:
        self.function, self.calls = function, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.function(*args)


# --- SASS counted in place ------------------------------------------------------------


@given(
    st.lists(
        st.sampled_from([0x7918, 0x794D, 0x7947, 0x795C, 0x7823, 0x7A02, 0x094D]), max_size=64
    ),
    st.integers(0, 40),
    st.integers(0, 40),
    st.sampled_from([75, 80, 90, 100, 120, 52]),
)
def test_sass_counted_in_place_equals_a_copied_slice(
    opcodes: list[int], before: int, after: int, sm: int
) -> None:
    code = b"".join(op.to_bytes(8, "little") + bytes(8) for op in opcodes)
    data = b"\x5c" * before + code + b"\x79" * after
    start, end = before, before + len(code)
    assert count_working_sass_in(data, start, end, sm) == count_working_sass(code, sm)
    assert count_working_sass_in(data, start, end + after + 99, sm) == count_working_sass(
        data[start:], sm
    )


# --- entries decoded by worker processes ----------------------------------------------


def many_entries() -> bytes:
    entries = []
    for index, compression in enumerate(["none", "zstd", "lz4"] * 4):
        cubin = build_cubin(
            CubinSpec(
                [
                    KernelSpec(MANGLED_WORK, working_body(10 + index)),
                    KernelSpec(MANGLED_HOLLOW, hollow_body()),
                ]
            ),
            90,
        )
        entries.append(EntrySpec(KIND_ELF, 90, cubin, "a", compression=compression))
        body = "mov.u32 %r1, 1;\n" * index + "ret;"
        ptx = ptx_module("sm_90a", {f"_Z{index + 1}k{'v' * index}": body})
        entries.append(EntrySpec(KIND_PTX, 90, ptx, "a", compression=compression))
    return build_shared_object([build_container(entries[:10]), build_container(entries[10:])])


@pytest.fixture
def always_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "PARALLEL_MIN_BYTES", 0)


@pytest.mark.usefixtures("always_parallel")
@pytest.mark.parametrize("ahead_bytes", [64 << 20, 1])
def test_worker_processes_give_the_same_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ahead_bytes: int
) -> None:
    monkeypatch.setattr(reading, "AHEAD_BYTES", ahead_bytes)  # 1: one payload at a time
    so = tmp_path / "_C.abi3.so"
    so.write_bytes(many_entries())
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/_C.abi3.so", so.read_bytes())
    serial = probe([so, wheel], jobs=1).to_json()
    parallel = probe([so, wheel], jobs=2).to_json()
    assert parallel == serial
    assert len(serial["libraries"][0]["cubins"]) == 12
    assert [p["kernels"][0]["instructions"] for p in serial["libraries"][0]["ptx"]] == list(
        range(12)
    )


@pytest.mark.usefixtures("always_parallel")
def test_worker_errors_are_input_file_errors(tmp_path: Path) -> None:
    good = many_entries()
    start = good.index((0xBA55ED50).to_bytes(4, "little")) + 16
    offset = good.index(b"\x28\xb5\x2f\xfd", start)  # the first zstd frame
    so = tmp_path / "bad.so"
    so.write_bytes(good[:offset] + b"\xff" * 16 + good[offset + 16 :])
    with pytest.raises(InputFileError, match="corrupt zstd payload"):
        probe([so], jobs=2)


# --- sources from names: one pass of read-ahead matches, against match by match ------

NAME_PARTS = st.sampled_from(
    [
        "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e0791",
        "_INTERNAL_8a3b4e3c_16_scaled_mm_c3x_cu_7e2e4e5f",
        "_GLOBAL__N__0_300_" + "x" * 300 + "_cu_1_",  # longer than the read-ahead
        "_GLOBAL__N__ab_9_a_cu",  # the text ends inside it
        "_INTERNAL_1_4_a_cu_",
        "_INTERNAL_1_999999999_",
        "_INTERNAL_2_9",  # its end is the next marker's start
        "\0",
        "kernel",
        "_",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(NAME_PARTS, max_size=12))
def test_sources_in_equals_its_match_by_match_definition(parts: list[str]) -> None:
    from orchestrator.read.kernelcode import sources_in, sources_in_each

    text = "".join(parts).encode("latin-1")
    assert sources_in(text) == sources_in_each(text)
