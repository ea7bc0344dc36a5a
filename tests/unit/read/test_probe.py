"""probe's public API without real tools: the cuobjdump output parser on recorded
output (a fake cuobjdump), families x devices, the CLI verb, kernel-code helpers."""

from __future__ import annotations

import json
import re
import stat
import textwrap
import zipfile
from pathlib import Path

import jsonschema
import pytest
from synth import (
    KIND_ELF,
    KIND_PTX,
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

from orchestrator.archs import ComputeCapability, Target
from orchestrator.cli import main
from orchestrator.common import progress
from orchestrator.common.errors import EXIT_INFRA, EXIT_USAGE, ToolError
from orchestrator.judge.presence import family_presence
from orchestrator.probe import probe
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library
from orchestrator.read.kernelcode import sources_in
from orchestrator.read.ptx import ptx_entries
from orchestrator.read.sass import count_working_sass
from orchestrator.symbols import FamilyRule

CC = ComputeCapability.parse
NVFP4 = "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"
SM120 = "_ZN52_GLOBAL__N__0a0b0c0d_19_scaled_mm_c3x_sm120_cu_0e0f0a0b6kernelEPf"

TRAILING = " "  # cuobjdump prints "ptxasOptions = " with a trailing space

# What `cuobjdump -elf` and `-ptx` print for a library with one sm_100f cubin
# (one kernel of 3 instructions: FFMA, EXIT, BRA) and one compute_120 PTX.
ELF_DUMP = f"""
Fatbin elf code:
================
arch = sm_100f
code version = [1,8]
host = linux
compile_size = 64bit

64-bit ELF: type=ET_EXEC, ABI=8, sm=100, toolkit=13.0, flags=0x6006402
Sections:
Index Offset   Size ES Align                      Type    Flags Link     Info Name
    1     40     50  0  1                       STRTAB        0    0        0 .shstrtab
    2     90     80  0  1                       STRTAB        0    0        0 .strtab
    3    110     48 18  8                       SYMTAB        0    2        2 .symtab
    4    180     30  0 80                     PROGBITS        6    3        3 .text.{NVFP4}

.section .strtab

.section .symtab
   Num            Value             Size  Type          Bind    Vis        Other                                Ndx  Name
     0                0                0  NOTYPE        LOCAL   DEFAULT    -                                      0  (null)
   0x1                0             0x30  FUNC          LOCAL   DEFAULT    ENTRY                                0x4  {NVFP4}
   0x2                0                0  SECTION       LOCAL   DEFAULT    -                                    0x4  .text.{NVFP4}


.text.{NVFP4}
lmem=0\tsmem=0
0x0d067823 0x3f800000 0x00000002 0x001fe200
0x0000794d 0x00000000 0x03800000 0x000fea00
0x00007947 0xfffffff0 0x0383ffff 0x000fc000


Fatbin ptx code:
================
arch = sm_120
code version = [9,0]
host = linux
compile_size = 64bit
compressed
ptxasOptions = {TRAILING}

"""
PTX_DUMP = f"""
Fatbin elf code:
================
arch = sm_100f
code version = [1,8]
host = linux
compile_size = 64bit

Fatbin ptx code:
================
arch = sm_120
code version = [9,0]
host = linux
compile_size = 64bit
compressed
ptxasOptions = {TRAILING}

.version 9.0
.target sm_120
.address_size 64

.visible .entry _Z1kPf(
.param .u64 _Z1kPf_param_0
)
{{
ret;
}}
"""


def fake_cuobjdump(tmp_path: Path, body: str) -> Path:
    (tmp_path / "elf.txt").write_text(ELF_DUMP)
    (tmp_path / "ptx.txt").write_text(PTX_DUMP)
    tool = tmp_path / "cuobjdump"
    tool.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def a_library(tmp_path: Path) -> Path:
    path = tmp_path / "lib.so"
    path.write_bytes(build_shared_object([]))
    return path


def test_cuobjdump_engine_parses_the_real_tools_output(tmp_path: Path) -> None:
    tool = fake_cuobjdump(
        tmp_path,
        f"""
        case "$1" in
          -elf) cat {tmp_path}/elf.txt ;;
          -ptx) cat {tmp_path}/ptx.txt ;;
        esac
        """,
    )
    (library,) = probe([a_library(tmp_path)], engine="cuobjdump", cuobjdump=tool).libraries
    (cubin,) = library.cubins
    assert cubin.arch.name == "sm_100f"
    assert cubin.sources == ("nvfp4_quant_kernels.cu",)
    assert [(k.mangled, k.size, k.instructions, k.hollow) for k in cubin.kernels] == [
        (NVFP4, 0x30, 1, True)
    ]
    (ptx,) = library.ptx
    assert ptx.arch.name == "compute_120"
    assert [(k.mangled, k.instructions, k.hollow) for k in ptx.kernels] == [("_Z1kPf", 0, True)]


def test_cuobjdump_engine_reads_the_code_of_cuda_12_cubins(tmp_path: Path) -> None:
    """cuobjdump prints "bar = 0 reg = 0 lmem=0 smem=0" before the code words of a
    cubin built by CUDA 12.x (vLLM 0.19.0): the code must still be counted."""
    tool = fake_cuobjdump(tmp_path, f"cat {tmp_path}/elf.txt\n")
    (tmp_path / "elf.txt").write_text(
        ELF_DUMP.replace("lmem=0\tsmem=0", "bar = 0\treg = 0\tlmem=0\tsmem=0")
    )
    (library,) = probe([a_library(tmp_path)], engine="cuobjdump", cuobjdump=tool).libraries
    assert [k.instructions for c in library.cubins for k in c.kernels] == [1]


def test_no_device_code_is_an_empty_library(tmp_path: Path) -> None:
    tool = fake_cuobjdump(
        tmp_path,
        """
        echo "cuobjdump info    : File '$2' does not contain device code" >&2
        exit 255
        """,
    )
    (library,) = probe([a_library(tmp_path)], engine="cuobjdump", cuobjdump=tool).libraries
    assert not library.has_device_code


@pytest.mark.parametrize("crash", ["kill -SEGV $$", "echo 'cuobjdump fatal : boom' >&2; exit 1"])
def test_a_crashing_cuobjdump_is_a_tool_error(tmp_path: Path, crash: str) -> None:
    tool = fake_cuobjdump(tmp_path, crash + "\n")
    with pytest.raises(ToolError) as info:
        probe([a_library(tmp_path)], engine="cuobjdump", cuobjdump=tool)
    assert info.value.exit_code == EXIT_INFRA
    code = main(
        ["probe", "--engine", "cuobjdump", "--cuobjdump", str(tool), str(a_library(tmp_path))]
    )
    assert code == EXIT_INFRA


def test_bad_input_is_exit_2_with_either_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.so"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(20))
    for engine_args in (["native"], ["cuobjdump", "--cuobjdump", "/bin/false"]):
        assert main(["probe", "--engine", *engine_args, str(bad)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.so" in err and "Traceback" not in err


# --- families x devices ---------------------------------------------------------------------


def kernel(mangled: str, instructions: int) -> Kernel:
    return Kernel(mangled, mangled, 256, instructions, instructions <= 8)


def code(arch: str, *kernels: Kernel, sources: tuple[str, ...] = ()) -> CodeObject:
    return CodeObject(Target.parse(arch), kernels, sources)


def test_family_devices_follow_the_image_the_driver_loads() -> None:
    inventory = Inventory(
        (
            Library(
                "_C.so",
                cubins=(
                    code("sm_100f", kernel(NVFP4, 40), sources=("nvfp4_quant_kernels.cu",)),
                    code("sm_120a", kernel(SM120, 40), sources=("scaled_mm_c3x_sm120.cu",)),
                    code("sm_121a", kernel(SM120, 1), sources=("scaled_mm_c3x_sm120.cu",)),
                    code("sm_90a", kernel("_Z8dispatchv", 40), sources=("dispatch_entry.cu",)),
                ),
                ptx=(code("compute_120", kernel(SM120, 30), sources=("scaled_mm_c3x_sm120.cu",)),),
            ),
        )
    )
    rules = [
        FamilyRule("nvfp4", (CC("10.0"), CC("12.1")), sources=("nvfp4_*.cu",)),
        FamilyRule("sm120", (CC("12.0"), CC("12.1")), sources=("scaled_mm_c3x_sm120.cu",)),
        FamilyRule("missing", (CC("9.0"),), kernels=("nothing_like_this",)),
    ]
    found = family_presence(inventory, rules)
    assert found["nvfp4"].cubins == ("sm_100f",)
    assert found["nvfp4"].devices == (CC("10.0"), CC("10.3"))
    # 12.1 loads the sm_121a cubin (a cubin beats PTX), whose kernel traps: hollow
    assert found["sm120"].devices == (CC("12.0"),)
    assert found["sm120"].hollow_devices == (CC("12.1"),)
    assert found["sm120"].hollow == ("sm_121a",)
    assert found["sm120"].ptx == ("compute_120",)
    assert found["missing"].cubins == () and found["missing"].devices == ()
    # a family's own threshold re-judges the kernels
    strict = FamilyRule("nvfp4", (CC("10.0"),), sources=("nvfp4_*.cu",), hollow_max_instructions=50)
    assert family_presence(inventory, [strict])["nvfp4"].devices == ()


def test_family_presence_says_jit_only_and_rule_mismatch() -> None:
    marlin = "_ZN6marlin6MarlinIN3c104HalfEEEvv"
    inventory = Inventory(
        (
            Library(
                "w.whl!vllm/_C.abi3.so",
                cubins=(code("sm_80", kernel(marlin, 40), sources=("kernel_fp16_ku4.cu",)),),
                ptx=(code("compute_80", kernel(marlin, 40), sources=("kernel_fp16_ku4.cu",)),),
            ),
        )
    )
    fits = FamilyRule("marlin", (CC("8.0"),), kernels=("Marlin",), sources=("kernel_*.cu",))
    found = family_presence(inventory, [fits], (CC("8.0"), CC("9.0")))["marlin"]
    assert found.devices == (CC("8.0"), CC("9.0")) and found.jit_devices == (CC("9.0"),)
    assert found.mismatch is None and found.to_json()["jit_devices"] == ["9.0"]
    renamed = FamilyRule("marlin", (CC("8.0"),), kernels=("Marlin",), sources=("sm80_*.cu",))
    stale = family_presence(inventory, [renamed], (CC("8.0"),))["marlin"]
    assert stale.devices == () and stale.mismatch is not None
    assert "`kernel_fp16_ku4.cu` fit none of `sm80_*.cu`" in stale.mismatch


def test_cli_probe_json_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cubin = build_cubin(
        CubinSpec([KernelSpec(NVFP4, working_body(30)), KernelSpec(SM120, hollow_body())])
    )
    path = tmp_path / "_C.so"
    path.write_bytes(
        build_shared_object(
            [
                build_container(
                    [
                        EntrySpec(KIND_ELF, 100, cubin, "f"),
                        EntrySpec(
                            KIND_PTX,
                            120,
                            ptx_module("sm_120", {NVFP4: "ld.global.u32 %r1, [x];\nret;"}),
                        ),
                    ]
                )
            ]
        )
    )
    families = tmp_path / "families.yaml"
    families.write_text(
        "families:\n  nvfp4:\n    sources: [nvfp4_quant_kernels.cu]\n    devices: ['10.0', '12.0']\n"
    )
    assert main(["probe", str(path), "--families", str(families), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (lib,) = data["libraries"]
    assert lib["path"] == str(path)
    assert lib["cubins"][0]["arch"] == "sm_100f"
    assert {k["mangled"]: k["hollow"] for k in lib["cubins"][0]["kernels"]} == {
        NVFP4: False,
        SM120: True,
    }
    assert lib["ptx"][0]["arch"] == "compute_120"
    assert data["families"]["nvfp4"]["cubins"] == ["sm_100f"]
    assert data["families"]["nvfp4"]["devices"] == ["10.0", "10.3"]
    schema = Path(__file__).resolve().parents[3] / "orchestrator/schemas/probe.schema.json"
    jsonschema.validate(data, json.loads(schema.read_text()))
    assert main(["probe", str(path), "--families", str(families)]) == 0
    out = capsys.readouterr().out
    assert "sm_100f" in out and "nvfp4" in out
    # check's vocabulary: ✅ on 10.0 (sm_100f), ⚠️ on 12.0 (the compute_120 PTX it
    # JIT-compiles holds only a load and a ret: hollow)
    row = next(line for line in out.splitlines() if line.strip().startswith("nvfp4"))
    assert row.split()[-2:] == ["✅", "⚠️"], row


# --- kernel code helpers ----------------------------------------------------------------------


def test_sass_counting_ignores_predicated_control_flow() -> None:
    def ins(low: int) -> bytes:
        return low.to_bytes(8, "little") + bytes(8)

    predicated_exit = ins(0x094D)  # @P0 EXIT
    uniform_bra = ins(0x7547)
    warpsync = ins(0x7348)
    assert count_working_sass(predicated_exit + uniform_bra + warpsync + ins(0x7823), 100) == 1
    assert count_working_sass(b"", 90) == 0


def test_ptx_entries_funcs_braces_and_declarations() -> None:
    text = b"""
.version 9.0
.target sm_90a
.func (.param .b32 func_retval0) _Z6helperi(
.param .b32 _Z6helperi_param_0
)
{
.reg .b32 %r<3>;
add.s32 %r2, %r1, 1;
ret;
}
.weak .entry _Z4mainPf(
.param .u64 _Z4mainPf_param_0
)
.maxntid 128, 1, 1
{
.reg .pred %p<2>;
.reg .b32 %r<4>;
{ // callseq 0, 0
.param .b32 param0;
st.param.b32 [param0], %r1;
call.uni (retval0), _Z6helperi, (param0);
}
@%p1 bra $L__BB0_2;
$L__BB0_2:
trap;
}
"""
    assert [(e.mangled, e.instructions) for e in ptx_entries(text)] == [("_Z4mainPf", 2)]


def test_sources_from_all_names_both_spellings() -> None:
    table = (
        b"\0_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"
        b"\0_ZN45_INTERNAL_8a3b4e3c_16_scaled_mm_c3x_cu_7e2e4e5f4vllm1xE"
        b"\0_ZN12_GLOBAL__N__99_garbage\0"
    )
    assert sources_in(table) == ("nvfp4_quant_kernels.cu", "scaled_mm_c3x.cu")


def test_the_cuobjdump_engine_reports_its_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 35, item 3: libraries done of all, the one being read, its size, time --
    to the progress sink, and on stderr from ``check`` (at most every 30 s off a
    terminal: the first line at once)."""
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("pkg/a.so", "pkg/b.so"):
            archive.writestr(name, build_shared_object([]))
    tool = fake_cuobjdump(
        tmp_path,
        """
        echo "cuobjdump info    : File '$2' does not contain device code" >&2
        exit 255
        """,
    )
    said: list[str] = []
    progress.set_sink(lambda cell, message: said.append(message))
    try:
        probe([wheel], engine="cuobjdump", cuobjdump=tool)
        probe([wheel])  # the native engine takes seconds: it says nothing
    finally:
        progress.set_sink(None)
    pattern = (
        r"cuobjdump engine: (\d) of 2 libraries done; (pkg/.\.so) \(0 MB\) for \d+ s; \d+ s in all"
    )
    assert [re.fullmatch(pattern, line).groups() for line in said] == [  # type: ignore[union-attr]
        ("0", "pkg/a.so"),
        ("1", "pkg/b.so"),
    ]
    families = tmp_path / "fam.yaml"
    families.write_text("families:\n  f:\n    devices: ['10.0']\n    kernels: ['quant']\n")
    argv = ["check", str(wheel), "--families", str(families), "--engine", "cuobjdump"]
    main([*argv, "--cuobjdump", str(tool)])
    err = capsys.readouterr().err
    assert "… kernel-matrix: cuobjdump engine: 0 of 2 libraries done; pkg/a.so (0 MB)" in err
