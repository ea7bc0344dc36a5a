"""``kernel-matrix check`` on hand-made wheels and inventories: verdicts, exit codes,
JSON, device parsing, and the speed-ups (library filter, kernels found once per family),
which must never change a verdict."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

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

from orchestrator.archs import ComputeCapability, Target, parse_device_list
from orchestrator.cli import main
from orchestrator.common.errors import EXIT_KERNEL_MISSING, EXIT_OK, EXIT_USAGE, ArchSpecError
from orchestrator.judge.check import (
    check_inventory,
    default_devices,
    library_filter,
)
from orchestrator.judge.expect import (
    HOLLOW,
    MISSING,
    NOT_APPLICABLE,
    NOT_MATCHED,
    PRESENT,
    judge,
    rule_mismatch,
)
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library
from orchestrator.symbols import FamilyRule

CC = ComputeCapability.parse
QUANT = "_ZN55_GLOBAL__N__6483e388_22_nvfp4_quant_kernels_cu_f7e2e07912quant_kernelEPf"
GEMM = "_ZN52_GLOBAL__N__0a0b0c0d_19_scaled_mm_sm120_fp8_cu_0e0f0a0b6kernelEPf"

FAMILIES = """\
families:
  nvfp4:
    kernels: ['quant_kernel']
    libraries: ["_C.*"]
    devices: ['10.0', '10.3', '12.0', '12.1']
    log: ['Not building NVFP4']
  scaled_mm_sm120:
    kernels: ['scaled_mm_sm120_fp8']
    libraries: ["_C.*"]
    devices: ['12.0', '12.1']
    log: ['Not building scaled_mm_c3x_120']
"""


def library(*entries: EntrySpec) -> bytes:
    return build_shared_object([build_container(list(entries))])


def cubin(sm: int, variant: str, *kernels: tuple[str, bytes]) -> EntrySpec:
    spec = CubinSpec([KernelSpec(name, code) for name, code in kernels])
    return EntrySpec(KIND_ELF, sm, build_cubin(spec, sm), variant)


def make_wheel(tmp_path: Path, c_library: bytes, name: str = "vllm-0.0.0-x.whl") -> Path:
    """A vLLM-shaped wheel: ``vllm/_C.abi3.so`` and a flash-attention library that
    is not even an ELF file (no family can be in it, so check must not read it)."""
    wheel = tmp_path / name
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm/_C.abi3.so", c_library)
        zf.writestr("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", b"not an ELF file at all")
        zf.writestr("vllm/__init__.py", "")
    return wheel


@pytest.fixture
def families(tmp_path: Path) -> Path:
    path = tmp_path / "families.yaml"
    path.write_text(FAMILIES)
    return path


@pytest.fixture
def a_only_wheel(tmp_path: Path) -> Path:
    """Like vLLM 0.19.0: the guarded families exist only as sm_100a / sm_120a cubins."""
    return make_wheel(
        tmp_path,
        library(
            cubin(100, "a", (QUANT, working_body(40))),
            cubin(120, "a", (QUANT, working_body(40)), (GEMM, working_body(60))),
        ),
    )


@pytest.fixture
def f_wheel(tmp_path: Path) -> Path:
    """Like vLLM 0.33.0: sm_100f / sm_120f cubins."""
    return make_wheel(
        tmp_path,
        library(
            cubin(100, "f", (QUANT, working_body(40))),
            cubin(120, "f", (QUANT, working_body(40)), (GEMM, working_body(60))),
        ),
        name="vllm-0.0.1-x.whl",
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the verb ---------------------------------------------------------------------------------


def test_a_only_wheel_fails_on_sibling_devices_with_the_reason(
    a_only_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, str(a_only_wheel), "--families", str(families), "--devices", "10.0,10.3,12.1"
    )
    assert code == EXIT_KERNEL_MISSING
    # one line per family and cause, naming its devices
    assert (
        "❌ nvfp4 missing on 10.3 (B300, GB300), 12.1 (DGX Spark (GB10)): built only for "
        "sm_100a, sm_120a, none of which runs on these devices\n"
    ) in out
    assert (
        "❌ scaled_mm_sm120 missing on 12.1 (DGX Spark (GB10)): built only for sm_120a, "
        "none of which runs on 12.1 (DGX Spark (GB10))\n"
    ) in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("kernel-matrix: FAILED") and "3 missing" in last and "exit 1" in last


def test_where_everything_is_present_the_exit_code_is_0(
    a_only_wheel: Path, f_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, str(a_only_wheel), "--families", str(families), "--devices", "10.0,12.0"
    )
    assert code == EXIT_OK, out
    assert out.strip().splitlines()[-1].startswith("kernel-matrix: OK")
    # default devices: every device a family lists
    code, out, _ = run(capsys, str(f_wheel), "--families", str(families))
    assert code == EXIT_OK, out
    assert "4 devices" in out.strip().splitlines()[-1]


def test_not_applicable_never_fails(
    a_only_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, str(a_only_wheel), "--families", str(families), "--devices", "9.0", "--json"
    )
    assert code == EXIT_OK
    statuses = {(v["family"], v["device"]): v["status"] for v in json.loads(out)["verdicts"]}
    assert statuses == {
        ("nvfp4", "9.0"): NOT_APPLICABLE,
        ("scaled_mm_sm120", "9.0"): NOT_APPLICABLE,
    }


def test_json_verdicts(
    a_only_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        str(a_only_wheel),
        "--families",
        str(families),
        "--devices",
        "12.0,12.1",
        "--json",
    )
    assert code == EXIT_KERNEL_MISSING
    data = json.loads(out)
    by_pair = {(v["family"], v["device"]): v for v in data["verdicts"]}
    assert set(by_pair) == {(f, d) for f in ("nvfp4", "scaled_mm_sm120") for d in ("12.0", "12.1")}
    present = by_pair["scaled_mm_sm120", "12.0"]
    assert present["status"] == PRESENT
    assert present["served_by"] == ["sm_120a"]
    assert present["libraries"] == [f"{a_only_wheel}!vllm/_C.abi3.so"]
    missing = by_pair["nvfp4", "12.1"]
    assert missing["status"] == MISSING and missing["served_by"] == []
    assert "built only for sm_100a, sm_120a, none of which runs on 12.1" in missing["reason"]
    assert data["devices"] == ["12.0", "12.1"]
    assert data["families"]["nvfp4"]["built_for"] == ["sm_100a", "sm_120a"]
    assert data["counts"] == {PRESENT: 2, MISSING: 2, HOLLOW: 0, NOT_MATCHED: 0, NOT_APPLICABLE: 0}
    assert data["exit_code"] == EXIT_KERNEL_MISSING
    assert data["libraries_read"] == 1  # the flash-attention library was not read


def test_a_hollow_kernel_fails_and_says_why(
    tmp_path: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(
        tmp_path,
        library(
            cubin(120, "f", (QUANT, working_body(40)), (GEMM, hollow_body())),
        ),
    )
    code, out, _ = run(capsys, str(wheel), "--families", str(families), "--devices", "12.1")
    assert code == EXIT_KERNEL_MISSING
    assert "scaled_mm_sm120 loads sm_120f on 12.1" in out and "no real body" in out
    assert "hollow in sm_120f" in out  # the built-for column


def test_the_build_log_line_is_attached_to_a_missing_family(
    tmp_path: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(tmp_path, library(cubin(100, "f", (QUANT, working_body(40)))))
    log = tmp_path / "build.log"
    log.write_text("-- Not building scaled_mm_c3x_120 as no compatible archs found in cuda archs\n")
    code, out, _ = run(
        capsys,
        str(wheel),
        "--families",
        str(families),
        "--devices",
        "12.0",
        "--log",
        str(log),
        "--json",
    )
    assert code == EXIT_KERNEL_MISSING
    verdict = next(v for v in json.loads(out)["verdicts"] if v["family"] == "scaled_mm_sm120")
    assert verdict["status"] == MISSING
    assert (
        verdict["cause"]
        == "Not building scaled_mm_c3x_120 as no compatible archs found in cuda archs"
    )


def test_min_cuda_makes_a_family_not_applicable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(tmp_path, library(cubin(90, "a", (QUANT, working_body(40)))))
    families = tmp_path / "families.yaml"
    families.write_text(FAMILIES.replace("    log: ['Not building NVFP4']", "    min_cuda: '12.8'"))
    code, out, _ = run(
        capsys, str(wheel), "--families", str(families), "--devices", "10.0", "--cuda", "12.6"
    )
    assert code == EXIT_OK, out


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ("12.1a", "'12.1a' is not a device compute capability"),
        ("9.5", "unknown architecture '9.5'"),
        (",", "empty device list"),
    ],
)
def test_bad_device_spellings_are_one_line_and_exit_2(
    a_only_wheel: Path,
    families: Path,
    capsys: pytest.CaptureFixture[str],
    devices: str,
    message: str,
) -> None:
    code, out, err = run(
        capsys, str(a_only_wheel), "--families", str(families), "--devices", devices
    )
    assert code == EXIT_USAGE
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_bad_inputs_exit_2(
    tmp_path: Path, a_only_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, str(tmp_path / "nope.whl"), "--families", str(families))[0] == EXIT_USAGE
    assert (
        run(capsys, str(a_only_wheel), "--families", str(tmp_path / "nope.yaml"))[0] == EXIT_USAGE
    )
    assert run(capsys, str(a_only_wheel))[0] == EXIT_USAGE  # --families is required
    args = (str(a_only_wheel), "--families", str(families))
    assert run(capsys, *args, "--cuda", "12.7")[0] == EXIT_USAGE
    assert run(capsys, *args, "--log", str(tmp_path / "nope.log"))[0] == EXIT_USAGE


def test_a_family_without_libraries_makes_check_read_every_library(
    a_only_wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a family that may be anywhere, the (broken) flash-attention library is
    read too -- and reported as the bad input it is."""
    families = tmp_path / "anywhere.yaml"
    families.write_text(FAMILIES + "  anywhere:\n    kernels: ['x']\n    devices: ['9.0']\n")
    code, _, err = run(capsys, str(a_only_wheel), "--families", str(families))
    assert code == EXIT_USAGE and "_vllm_fa2_C.abi3.so" in err


# --- the pieces -------------------------------------------------------------------------------


def test_parse_and_default_devices() -> None:
    assert parse_device_list("12.1 10.3,12.1;90") == (CC("12.1"), CC("10.3"), CC("9.0"))
    with pytest.raises(ArchSpecError):
        parse_device_list("sm_90a")
    rules = [
        FamilyRule("a", (CC("12.1"), CC("9.0"))),
        FamilyRule("b", (CC("10.0"), CC("9.0"))),
    ]
    assert default_devices(rules) == (CC("9.0"), CC("10.0"), CC("12.1"))


def test_library_filter() -> None:
    only = library_filter(
        [
            FamilyRule("a", (CC("9.0"),), libraries=("_C.*",)),
            FamilyRule("b", (CC("9.0"),), libraries=("_moe_C*",)),
        ]
    )
    assert only is not None
    assert only("_C.abi3.so") and only("_moe_C_stable_libtorch.abi3.so")
    assert not only("_vllm_fa2_C.abi3.so")
    anchored = library_filter([FamilyRule("a", (CC("9.0"),), libraries=("vllm/_C.*",))])
    assert anchored is not None
    assert anchored("vllm/_C.abi3.so") and anchored("/build/lib/vllm/_C.abi3.so")
    assert not anchored("vllm/third_party/deep_gemm/_C.cpython-312-x86_64-linux-gnu.so")
    assert not anchored("_C.abi3.so")
    assert (
        library_filter(
            [FamilyRule("a", (CC("9.0"),)), FamilyRule("b", (CC("9.0"),), libraries=("x",))]
        )
        is None
    )


def kernel(mangled: str, instructions: int) -> Kernel:
    return Kernel(mangled, mangled, instructions * 16, instructions, instructions <= 8)


def code(arch: str, source: str, *kernels: Kernel) -> CodeObject:
    return CodeObject(Target.parse(arch), kernels, (source,))


def test_verdicts_equal_judge_device_by_device() -> None:
    """Finding a family's kernels once for all devices must not change one verdict,
    whatever the mix: several libraries, sources, PTX, hollow copies, unrelated
    kernels."""
    rules = [
        FamilyRule(
            "nvfp4",
            (CC("10.0"), CC("10.3"), CC("12.0"), CC("12.1")),
            sources=("nvfp4_*.cu",),
            kernels=("quant",),
            libraries=("_C*",),
            hollow_max_instructions=16,
        ),
        FamilyRule("marlin", (CC("8.0"), CC("9.0"), CC("10.0"), CC("12.1")), kernels=("marlin",)),
        FamilyRule("absent", (CC("9.0"),), kernels=("nowhere",)),
    ]
    quant, quant_stub, marlin = kernel("quant", 40), kernel("quant", 9), kernel("marlin", 50)
    other = kernel("flash_fwd", 500)
    inventory = Inventory(
        (
            Library(
                "w.whl!vllm/_C.abi3.so",
                (
                    code("sm_100a", "nvfp4_quant_kernels.cu", quant, other),
                    code("sm_120f", "nvfp4_quant_kernels.cu", quant_stub),
                    code("sm_120", "nvfp4_quant_kernels.cu", quant),
                    code("sm_90a", "other.cu", quant),
                    code("sm_80", "marlin.cu", marlin),
                ),
                (code("compute_80", "marlin.cu", marlin),),
            ),
            Library(
                "w.whl!vllm/_moe_C.abi3.so",
                (code("sm_100f", "nvfp4_quant_kernels.cu", quant),),
            ),
            Library("w.whl!vllm/fa.so", (code("sm_90a", "fa.cu", other, marlin),)),
        )
    )
    devices = (CC("8.0"), CC("9.0"), CC("10.0"), CC("10.3"), CC("12.0"), CC("12.1"))
    judged = check_inventory(inventory, rules, devices)
    expected = tuple(judge(inventory, rule, device) for rule in rules for device in devices)
    assert judged.verdicts == expected
    statuses = {(v.family, v.device): v.status for v in judged.verdicts}
    assert statuses["nvfp4", "10.3"] == MISSING
    assert statuses["nvfp4", "12.1"] == HOLLOW  # sm_120f (a stub) beats plain sm_120
    assert statuses["marlin", "12.1"] == PRESENT  # compute_80 PTX
    assert judged.built_for["nvfp4"] == ("sm_100a", "sm_120", "sm_120f")
    assert judged.hollow_in["nvfp4"] == ("sm_120f",)
    assert judged.built_for["absent"] == ()


def test_ptx_only_family_is_present_through_jit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(
        tmp_path,
        library(
            EntrySpec(KIND_PTX, 80, ptx_module("sm_80", {QUANT: "add.s32 %r1, %r1, 1;\n" * 20}))
        ),
    )
    families = tmp_path / "f.yaml"
    families.write_text(
        "families:\n  nvfp4:\n    kernels: ['quant_kernel']\n    libraries: ['_C.*']\n"
        "    devices: ['12.1']\n"
    )
    code, out, _ = run(capsys, str(wheel), "--families", str(families), "--json")
    assert code == EXIT_OK
    (verdict,) = json.loads(out)["verdicts"]
    assert verdict["served_by"] == ["compute_80"]
    assert verdict["status"] == PRESENT
    assert verdict["jit_only"] is True and verdict["jit_kernels"] == 1
    assert "all JIT-compiled from PTX at first launch" in verdict["reason"]
    code, out, _ = run(capsys, str(wheel), "--families", str(families))
    assert code == EXIT_OK
    row = next(line for line in out.splitlines() if "nvfp4" in line)
    assert "✅ᴶ" in row
    assert "present only as PTX, JIT-compiled at first launch" in out


def test_jit_for_some_kernels_only_is_said_in_the_reason_not_the_mark() -> None:
    """Marlin on Hopper: bf16 kernels have an sm_90 cubin, fp16 ones only compute_80."""
    inventory = Inventory(
        (
            Library(
                "w.whl!vllm/_C.abi3.so",
                cubins=(code("sm_90", "k.cu", kernel("bf16_kernel", 40)),),
                ptx=(code("compute_80", "k.cu", kernel("fp16_kernel", 40)),),
            ),
        )
    )
    rule = FamilyRule("marlin", (CC("9.0"), CC("8.0")), kernels=("_kernel",))
    on_hopper = judge(inventory, rule, CC("9.0"))
    assert on_hopper.status == PRESENT and on_hopper.jit_kernels == 1
    assert not on_hopper.jit_only
    assert "(1 of them JIT-compiled from PTX at first launch)" in on_hopper.reason
    on_ampere = judge(inventory, rule, CC("8.0"))
    assert on_ampere.jit_only and on_ampere.served_by == ("compute_80",)


MARLIN = "_ZN6marlin6MarlinIN3c104HalfELl1125899906843648ELi256EEEvPK4int4"
RENAMED = """families:
  marlin:
    sources: ["sm80_kernel_*.cu"]
    kernels: ['marlin(::|\\d+)Marlin(<|I)']
    libraries: ["_C.*"]
    devices: ['8.0', '9.0']
"""


def test_a_rule_whose_source_globs_no_longer_fit_is_not_matched_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old vLLM names its Marlin units kernel_<type>_<type>.cu: the name regex fits,
    the source globs reject every kernel. That is not "missing" but "not matched"."""
    old_name = "_ZN55_INTERNAL_0a0b0c0d_18_kernel_fp16_ku4_cu_0e0f0a0b6marlin1xE"
    wheel = make_wheel(
        tmp_path,
        library(cubin(80, "", (MARLIN, working_body(40)), (old_name, working_body(4)))),
    )
    families = tmp_path / "f.yaml"
    families.write_text(RENAMED)
    code_, out, _ = run(capsys, str(wheel), "--families", str(families), "--json")
    assert code_ == EXIT_KERNEL_MISSING  # unverifiable is not a pass
    data = json.loads(out)
    assert {v["status"] for v in data["verdicts"]} == {NOT_MATCHED}
    warning = data["families"]["marlin"]["mismatch"]
    assert "1 kernel matches `marlin(::|\\d+)Marlin(<|I)` by name" in warning
    assert "`kernel_fp16_ku4.cu`" in warning and "fit none of `sm80_kernel_*.cu`" in warning
    assert data["counts"][NOT_MATCHED] == 2 and data["counts"][MISSING] == 0
    code_, out, _ = run(capsys, str(wheel), "--families", str(families))
    assert code_ == EXIT_KERNEL_MISSING
    assert "warning: marlin not matched: 1 kernel matches" in out
    assert "no kernel of marlin" not in out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["marlin"])
    assert row.count("❓") == 2 and "❌" not in row
    assert "2 not matched (the profile may not fit)" in out.strip().splitlines()[-1]


def test_the_reverse_mismatch_and_no_mismatch_where_the_rule_fits() -> None:
    def inventory(source: str, name: str) -> Inventory:
        return Inventory(
            (Library("x/_C.abi3.so", cubins=(code("sm_80", source, kernel(name, 40)),)),)
        )

    rule = FamilyRule("marlin", (CC("8.0"),), sources=("sm80_kernel_*.cu",), kernels=("Marlin<",))
    renamed_kernel = inventory("sm80_kernel_fp16.cu", "marlin::NewGemm<1>")
    why = rule_mismatch(renamed_kernel, rule)
    assert why is not None and why.startswith("1 kernel from `sm80_kernel_*.cu` matches none")
    assert judge(renamed_kernel, rule, CC("8.0")).status == NOT_MATCHED
    fits = inventory("sm80_kernel_fp16.cu", "marlin::Marlin<1>")
    assert rule_mismatch(fits, rule) is None
    assert judge(fits, rule, CC("8.0")).status == PRESENT
    unrelated = inventory("other.cu", "other_kernel")
    assert rule_mismatch(unrelated, rule) is None
    assert judge(unrelated, rule, CC("8.0")).status == MISSING
    # a library the family may not live in never makes a mismatch
    elsewhere = FamilyRule(
        "marlin", (CC("8.0"),), sources=("x.cu",), kernels=("Marlin<",), libraries=("_moe_C*",)
    )
    assert rule_mismatch(fits, elsewhere) is None


def test_a_named_library_outside_every_anchored_glob_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library given by name is read, but an anchored glob (``vllm/_C.*``) cannot
    match a copy outside its package: every family is missing there, and check says
    why instead of leaving a bare ❌."""
    anchored = tmp_path / "anchored.yaml"
    anchored.write_text(FAMILIES.replace('["_C.*"]', '["vllm/_C.*"]'))
    data = library(cubin(120, "f", (QUANT, working_body(40)), (GEMM, working_body(60))))
    (tmp_path / "vllm").mkdir()
    inside, outside = tmp_path / "vllm" / "_C.abi3.so", tmp_path / "_C.abi3.so"
    inside.write_bytes(data)
    outside.write_bytes(data)
    args = ("--families", str(anchored), "--devices", "12.0", "--no-cache")
    code, out, _ = run(capsys, str(outside), *args)
    assert code == EXIT_KERNEL_MISSING
    assert f"warning: {outside} matches no family's `libraries` glob" in out
    code, out, _ = run(capsys, str(inside), *args, "--json")
    assert code == EXIT_OK and json.loads(out)["outside_libraries"] == []


def test_a_library_no_family_claims_is_listed_not_ignored(
    f_wheel: Path, families: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wheel's flash-attention library matches no family's `libraries`: it is not
    read (it is not even an ELF file here), and both outputs name it."""
    code, out, _ = run(capsys, str(f_wheel), "--families", str(families), "--devices", "12.1")
    assert code == EXIT_OK
    assert "note: 1 library no family claims, not read: _vllm_fa2_C.abi3.so" in out
    code, out, _ = run(
        capsys, str(f_wheel), "--families", str(families), "--devices", "12.1", "--json"
    )
    assert json.loads(out)["unclaimed"] == ["vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so"]
