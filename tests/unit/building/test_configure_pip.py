"""The configure tier of `build: pip` projects, around its real parts (CMake, pip,
the package index; exercised for real on vLLM by tests/integration/test_vllm_configure.py):
the recipe, the pinned requirements, the stand-ins, sdists, and the guard finder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from package_index import publish, sdist_bytes, serving

from orchestrator.building.configure_env import (
    ConfigureEnv,
    ConfigureSpec,
    PythonSpec,
    StandIn,
    pinned_requirements,
    provision_stand_ins,
)
from orchestrator.building.recipe import NOT_COPIED_TO_CONFIGURE, BuildPaths, recipe
from orchestrator.building.sources import resolve_source, unpack_sdist
from orchestrator.common.errors import InputFileError, UsageError
from orchestrator.judge.expect import MISSING, NOT_APPLICABLE, PRESENT, Verdict
from orchestrator.planning.matrix import load_matrix
from orchestrator.planning.plan import plan
from orchestrator.predict.guards import (
    TRACE_FILE,
    GuardFinder,
    TraceRecord,
    _globbed_sources,
    commands,
    generator_of,
    guard_of,
    guard_result,
    read_trace,
    trace_arguments,
)
from orchestrator.run.runner import explain_verdicts
from orchestrator.symbols import FamilyRule

REPO = Path(__file__).resolve().parents[3]


# --- the guard finder ---------------------------------------------------------------

CMAKELISTS = """\
include(cmake/utils.cmake)
# FP4: a guard in the style of vLLM's CMakeLists.txt
cuda_archs_loose_intersection(FP4_ARCHS "10.0f;12.0f" "${CUDA_ARCHS}")
if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND FP4_ARCHS)
  set(SRCS "csrc/fp4/nvfp4_quant_kernels.cu"
           "csrc/fp4/nvfp4_experts_quant.cu")
  set_gencode_flags_for_srcs(SRCS "${SRCS}" CUDA_ARCHS "${FP4_ARCHS}")
else()
  message(STATUS "Not building NVFP4 as no compatible archs were found.")
endif()
cuda_archs_loose_intersection(MLA_ARCHS "10.0f" "${CUDA_ARCHS}")
if(MLA_ARCHS)
  set(SRCS "csrc/attention/mla/sm100_cutlass_mla_kernel.cu")
endif()
"""


def trace_line(file: Path, line: int, cmd: str, *args: str, frame: int = 1) -> str:
    return json.dumps(
        {"args": list(args), "cmd": cmd, "file": str(file), "frame": frame, "line": line}
    )


def write_project(tmp_path: Path, requested: str) -> tuple[Path, Path]:
    source = tmp_path / "src"
    (source / "cmake").mkdir(parents=True)
    lists = source / "CMakeLists.txt"
    lists.write_text(CMAKELISTS)
    (source / "cmake" / "utils.cmake").write_text("function(cuda_archs_loose_intersection)\n")
    trace = tmp_path / "trace.json"
    trace.write_text(
        "\n".join(
            [
                '{"version":{"major":1,"minor":2}}',
                trace_line(lists, 1, "include", "cmake/utils.cmake"),
                trace_line(lists, 3, "cuda_archs_loose_intersection", "FP4_ARCHS", "10.0f;12.0f", requested),
                trace_line(lists, 4, "if", "13.0.88", "VERSION_GREATER_EQUAL", "12.8", "AND", "FP4_ARCHS"),
                trace_line(lists, 8, "else"),
                trace_line(lists, 9, "message", "STATUS", "Not building NVFP4 as no compatible archs were found."),
                trace_line(lists, 11, "cuda_archs_loose_intersection", "MLA_ARCHS", "10.0f", requested),
                trace_line(lists, 12, "if", "MLA_ARCHS"),
            ]
        )
        + "\n"
    )  # fmt: skip
    return source, trace


NVFP4 = FamilyRule(name="nvfp4", devices=(), sources=("nvfp4_quant_kernels.cu",))
MLA = FamilyRule(name="mla", devices=(), sources=("sm100_cutlass_mla_kernel.cu",))


def test_the_guard_of_a_family_is_the_call_that_set_its_if_variable(tmp_path: Path) -> None:
    source, trace = write_project(tmp_path, "12.1a")
    records = read_trace(trace)
    assert guard_of(NVFP4, source, records) == (
        'CMakeLists.txt:3: cuda_archs_loose_intersection(FP4_ARCHS "10.0f;12.0f" 12.1a) '
        "(tested by CMakeLists.txt:4 if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL "
        "12.8 AND FP4_ARCHS))"
    )
    # each family gets its own guard, not the nearest one
    assert guard_of(MLA, source, records) is not None
    assert guard_of(MLA, source, records).startswith(  # type: ignore[union-attr]
        "CMakeLists.txt:11: cuda_archs_loose_intersection(MLA_ARCHS 10.0f 12.1a)"
    )


GENERATED = """\
cuda_archs_loose_intersection(MARLIN_ARCHS "8.0+PTX" "${CUDA_ARCHS}")
if(MARLIN_ARCHS)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env PYTHONPATH=x python3
                  ${CMAKE_CURRENT_SOURCE_DIR}/csrc/marlin/generate_kernels.py ${CUDA_ARCHS_STR}
                  RESULT_VARIABLE result)
  file(GLOB MARLIN_SRC "csrc/marlin/sm80_kernel_*.cu")
endif()
file(GLOB OTHER "csrc/other/*.cu")
"""


def test_a_family_whose_sources_a_generator_writes_names_the_generator(tmp_path: Path) -> None:
    """vLLM's Marlin: a script run by execute_process writes the sources, a
    file(GLOB) collects them. A missing family names the guard and the generator
    (a guard that let the arch through leaves the generator as the cause)."""
    source = tmp_path / "src"
    source.mkdir()
    lists = source / "CMakeLists.txt"
    lists.write_text(GENERATED)
    script = str(source / "csrc" / "marlin" / "generate_kernels.py")
    records_text = [
        '{"version":{"major":1,"minor":2}}',
        trace_line(lists, 1, "cuda_archs_loose_intersection", "MARLIN_ARCHS", "8.0+PTX", "9.0a"),
        trace_line(lists, 2, "if", "MARLIN_ARCHS"),
        trace_line(lists, 3, "execute_process", "COMMAND", "cmake", "-E", "env", "PYTHONPATH=x",
                   "python3", script, "9.0a", "RESULT_VARIABLE", "result"),
        trace_line(lists, 6, "file", "GLOB", "MARLIN_SRC", "csrc/marlin/sm80_kernel_*.cu"),
    ]  # fmt: skip
    (tmp_path / "t.json").write_text("\n".join(records_text) + "\n")
    records = read_trace(tmp_path / "t.json")
    marlin = FamilyRule(name="marlin", devices=(), sources=("sm80_kernel_fp16*.cu",))
    generated = "CMakeLists.txt:3: execute_process(… csrc/marlin/generate_kernels.py 9.0a)"
    assert generator_of(marlin, source, records) == generated
    guard = (
        "CMakeLists.txt:1: cuda_archs_loose_intersection(MARLIN_ARCHS 8.0+PTX 9.0a) "
        "(tested by CMakeLists.txt:2 if(MARLIN_ARCHS))"
    )
    # the script wrote none of marlin's sources (only another family's): both are named
    (source / "csrc" / "marlin").mkdir(parents=True)
    (source / "csrc" / "marlin" / "sm80_kernel_fp8.cu").write_text("")
    assert guard_of(marlin, source, records) == (
        f"{guard}, or by the generator {generated}, which wrote none of its sources"
    )
    # it wrote some: what dropped the family is not the generator's choice
    (source / "csrc" / "marlin" / "sm80_kernel_fp16.cu").write_text("")
    assert guard_of(marlin, source, records) == guard
    other = FamilyRule(name="other", devices=(), sources=("other_*.cu",))
    assert generator_of(other, source, records) is None  # its GLOB never ran


def test_a_guard_whose_result_kept_the_device_is_not_named(tmp_path: Path) -> None:
    """The guard's result, read from the set(... PARENT_SCOPE) its function ran, says
    whether it excluded the device: "8.0+PTX;12.0f" with 12.1a requested keeps 12.1a,
    so for 12.1 only the generator that wrote none of the sources is the cause; with
    an empty result the guard is named (issue 30's Marlin FP8 case)."""
    source = tmp_path / "src"
    (source / "csrc" / "marlin").mkdir(parents=True)
    lists = source / "CMakeLists.txt"
    lists.write_text(GENERATED)
    (source / "csrc" / "marlin" / "sm80_kernel_fp8.cu").write_text("")  # not marlin's
    utils = source / "cmake" / "utils.cmake"
    script = str(source / "csrc" / "marlin" / "generate_kernels.py")

    def records(kept: tuple[str, ...]) -> list[TraceRecord]:
        lines = [
            '{"version":{"major":1,"minor":2}}',
            trace_line(
                lists, 1, "cuda_archs_loose_intersection", "MARLIN_ARCHS", "8.0+PTX;12.0f", "12.1a"
            ),
            trace_line(utils, 40, "set", "MARLIN_ARCHS", *kept, "PARENT_SCOPE", frame=2),
            trace_line(lists, 2, "if", "MARLIN_ARCHS"),
            trace_line(lists, 3, "execute_process", "COMMAND", "python3", script, "12.1a"),
            trace_line(lists, 6, "file", "GLOB", "MARLIN_SRC", "csrc/marlin/sm80_kernel_*.cu"),
        ]
        (tmp_path / "t.json").write_text("\n".join(lines) + "\n")
        return read_trace(tmp_path / "t.json")

    marlin = FamilyRule(name="marlin", devices=(), sources=("sm80_kernel_fp16*.cu",))
    generated = (
        "CMakeLists.txt:3: execute_process(… csrc/marlin/generate_kernels.py 12.1a), "
        "which wrote none of its sources"
    )
    kept = records(("12.1a",))
    assert guard_result(kept, kept[0]) == ("12.1a",)
    assert guard_of(marlin, source, kept, "12.1") == f"the generator {generated}"
    # the same guard for another device it did not keep is still named
    assert guard_of(marlin, source, kept, "8.9").startswith("CMakeLists.txt:1: cuda_archs")
    dropped = records(())
    assert guard_result(dropped, dropped[0]) == ()
    assert guard_of(marlin, source, dropped, "12.1") == (
        'CMakeLists.txt:1: cuda_archs_loose_intersection(MARLIN_ARCHS "8.0+PTX;12.0f" 12.1a) '
        f"(tested by CMakeLists.txt:2 if(MARLIN_ARCHS)), or by the generator {generated}"
    )


def test_the_guard_that_governs_a_family_is_named_whatever_it_decided(tmp_path: Path) -> None:
    """governed_by: the guard the look-up above chooses, also where it let the device
    through (the family is present): what compare shows for the base of a
    regression. Its generator where no guard governs; "" where nothing does; None
    without a trace."""
    source = tmp_path / "src"
    (source / "csrc" / "marlin").mkdir(parents=True)
    lists = source / "CMakeLists.txt"
    lists.write_text(GENERATED)
    (source / "csrc" / "marlin" / "sm80_kernel_fp16.cu").write_text("")  # marlin's: written
    utils = source / "cmake" / "utils.cmake"
    script = str(source / "csrc" / "marlin" / "generate_kernels.py")
    lines = [
        '{"version":{"major":1,"minor":2}}',
        trace_line(lists, 1, "cuda_archs_loose_intersection", "MARLIN_ARCHS", "8.0+PTX;12.0f", "12.1a"),
        trace_line(utils, 40, "set", "MARLIN_ARCHS", "12.1a", "PARENT_SCOPE", frame=2),
        trace_line(lists, 2, "if", "MARLIN_ARCHS"),
        trace_line(lists, 3, "execute_process", "COMMAND", "python3", script, "12.1a"),
        trace_line(lists, 6, "file", "GLOB", "MARLIN_SRC", "csrc/marlin/sm80_kernel_*.cu"),
    ]  # fmt: skip
    (tmp_path / "t.json").write_text("\n".join(lines) + "\n")
    finder = GuardFinder(source, read_trace(tmp_path / "t.json"))
    marlin = FamilyRule(name="marlin", devices=(), sources=("sm80_kernel_fp16*.cu",))
    guard = (
        'CMakeLists.txt:1: cuda_archs_loose_intersection(MARLIN_ARCHS "8.0+PTX;12.0f" 12.1a) '
        "(tested by CMakeLists.txt:2 if(MARLIN_ARCHS))"
    )
    assert finder.dropped_by(marlin, "12.1") is None  # it kept 12.1a: it dropped nothing
    assert finder.governed_by(marlin, "12.1") == guard
    assert finder.governed_by(marlin, "8.9") == guard == finder.dropped_by(marlin, "8.9")
    # the generator governs what no guard does: a file(GLOB) after it, outside any if()
    gen = tmp_path / "gen"
    (gen / "csrc").mkdir(parents=True)
    (gen / "csrc" / "gen_kernel_a.cu").write_text("")
    (gen / "CMakeLists.txt").write_text(
        "execute_process(COMMAND python3 gen.py)\nfile(GLOB G csrc/gen_kernel_*.cu)\n"
    )
    generated = [
        TraceRecord(0, "execute_process", ("COMMAND", "python3", str(gen / "gen.py")),
                    str(gen / "CMakeLists.txt"), 1, 1),
        TraceRecord(1, "file", ("GLOB", "G", "csrc/gen_kernel_*.cu"),
                    str(gen / "CMakeLists.txt"), 2, 1),
    ]  # fmt: skip
    written = FamilyRule(name="gen", devices=(), sources=("gen_kernel_*.cu",))
    assert GuardFinder(gen, generated).governed_by(written, "12.1") == (
        "the generator CMakeLists.txt:1: execute_process(… gen.py)"
    )
    assert GuardFinder(gen, generated[:1]).governed_by(written, "12.1") == ""  # GLOB never ran
    unnamed = FamilyRule(name="x", devices=(), sources=("not_in_any_cmake_file.cu",))
    assert finder.governed_by(unnamed, "12.1") == ""
    assert GuardFinder(source, []).governed_by(marlin, "12.1") is None  # no trace: not known
    no_sources = FamilyRule(name="y", devices=(), kernels=("y",))
    assert finder.governed_by(no_sources, "12.1") is None


@pytest.mark.parametrize(
    ("args", "found"),
    [
        (("GLOB", "V", "csrc/*/sm80_kernel_*.cu"), 2),  # a wildcard directory
        (("GLOB", "V", "RELATIVE", "/x", "CONFIGURE_DEPENDS", "csrc/a/sm80_kernel_*.cu"), 1),
        (("GLOB_RECURSE", "V", "csrc/sm80_kernel_*.cu"), 3),  # any depth below csrc
        (("GLOB", "V", "csrc/sm80_kernel_*.cu"), 1),
    ],
)
def test_what_a_generator_wrote_is_what_its_glob_finds_now(
    tmp_path: Path, args: tuple[str, ...], found: int
) -> None:
    for name in ("csrc/sm80_kernel_a.cu", "csrc/a/sm80_kernel_b.cu", "csrc/b/sm80_kernel_c.cu",
                 "csrc/b/sm80_kernel_c.h", "csrc/b/other.cu"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    record = TraceRecord(0, "file", args, str(tmp_path / "CMakeLists.txt"), 1, 1)
    marlin = FamilyRule(name="marlin", devices=(), sources=("sm80_kernel_*.cu",))
    assert _globbed_sources(record, marlin) == found


def test_no_guard_without_a_trace_or_a_place_naming_the_sources(tmp_path: Path) -> None:
    source, trace = write_project(tmp_path, "12.1a")
    assert guard_of(NVFP4, source, []) is None
    unknown = FamilyRule(name="x", devices=(), sources=("not_in_any_cmake_file.cu",))
    assert guard_of(unknown, source, read_trace(trace)) is None


def test_the_configure_tier_records_what_governs_every_family_it_judges(tmp_path: Path) -> None:
    """explain_verdicts: every verdict judged on a device gets governed_by from the
    configure's trace -- a present family the guard that let it through, a missing
    one the guard that dropped it (its guard too); a not-applicable one none. A
    cached result's are taken as stored (its trace is not in the build directory)."""
    source, trace = write_project(tmp_path, "12.1a")
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / TRACE_FILE).write_text(trace.read_text())
    matrix_file = tmp_path / "matrix.yaml"
    matrix_file.write_text(
        "project: {source: src, build: cmake, artifacts: ['*.so']}\n"
        "cuda: ['13.0']\narchs: ['12.1a']\n"
        "families:\n"
        "  nvfp4: {sources: [nvfp4_quant_kernels.cu], kernels: [nvfp4], devices: ['12.1']}\n"
        "  mla: {sources: [sm100_cutlass_mla_kernel.cu], kernels: [mla], devices: ['10.0']}\n"
    )
    matrix = load_matrix(matrix_file, source=source)
    verdicts = [
        Verdict("nvfp4", "12.1", PRESENT, ("sm_121a",), reason="served"),
        Verdict("mla", "12.1", NOT_APPLICABLE, reason="not meant for 12.1"),
        Verdict("mla", "10.0", MISSING, reason="no kernel of mla is in any library"),
    ]
    present, not_applicable, missing = explain_verdicts(
        verdicts, matrix, build_dir, tier="configure"
    )
    nvfp4_guard = (
        'CMakeLists.txt:3: cuda_archs_loose_intersection(FP4_ARCHS "10.0f;12.0f" 12.1a) '
        "(tested by CMakeLists.txt:4 if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL "
        "12.8 AND FP4_ARCHS))"
    )
    assert (present.governed_by, present.guard) == (nvfp4_guard, None)
    assert present.reason == "served"  # nothing added where it was shown before
    assert not_applicable.governed_by is None
    assert missing.guard is not None and missing.guard.startswith("CMakeLists.txt:11: ")
    assert missing.governed_by == missing.guard
    # it survives results.json
    assert Verdict.from_json(present.to_json()) == present
    assert (
        Verdict.from_json({"family": "f", "device": "12.1", "status": PRESENT}).governed_by is None
    )
    # a cached result: what it stored, never the trace found in the build directory
    (build_dir / TRACE_FILE).unlink()
    stored = {("nvfp4", "12.1"): "stored line", ("mla", "10.0"): ""}
    again = explain_verdicts(verdicts, matrix, build_dir, tier="configure", governed=stored)
    assert [v.governed_by for v in again] == ["stored line", None, ""]


def test_the_lexer_keeps_multi_line_commands_and_skips_comments() -> None:
    found = commands(CMAKELISTS)
    assert [(c.name, c.line) for c in found][:5] == [
        ("include", 1),
        ("cuda_archs_loose_intersection", 3),
        ("if", 4),
        ("set", 5),
        ("set_gencode_flags_for_srcs", 7),
    ]
    assert "nvfp4_experts_quant.cu" in found[3].args


def test_the_trace_covers_only_the_projects_own_cmake_files(tmp_path: Path) -> None:
    source, _ = write_project(tmp_path, "12.1a")
    (source / "build").mkdir()
    (source / "build" / "CMakeLists.txt").write_text("")  # a build tree inside: not traced
    arguments = trace_arguments(source, tmp_path / "t.json")
    assert f"--trace-source={source / 'CMakeLists.txt'}" in arguments
    assert f"--trace-source={source / 'cmake' / 'utils.cmake'}" in arguments
    assert not [a for a in arguments if "/build/" in a]
    assert trace_arguments(tmp_path / "not-here", tmp_path / "t.json") == []


# --- the environment ----------------------------------------------------------------


def test_packages_are_pinned_by_the_first_requirements_file_that_exists(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "build.txt").write_text("torch==2.10.0\n")
    (tmp_path / "requirements" / "cuda.txt").write_text(
        "--extra-index-url https://example.invalid/whl\n"
        "torch==2.14.0+cpu; platform_machine == 'no-such-machine'\n"
        "torch==2.14.0 # the pin\n"
        "jinja2>=3.1.6\n"
    )
    spec = PythonSpec(
        requirements=("requirements/cuda.txt", "requirements/build.txt"),
        packages=("torch", "jinja2", "packaging"),
    )
    assert pinned_requirements(tmp_path, spec) == ["torch==2.14.0", "jinja2>=3.1.6", "packaging"]


def test_stand_ins_hold_every_file_the_projects_cmake_names(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "cmake" / "external_projects").mkdir(parents=True)
    (source / "CMakeLists.txt").write_text("include(cmake/external_projects/flashmla.cmake)\n")
    (source / "cmake" / "external_projects" / "flashmla.cmake").write_text(
        'file(READ "${flashmla_SOURCE_DIR}/flash_mla/flash_mla_interface.py" X)\n'
        "set(S ${flashmla_SOURCE_DIR}/csrc/api/api.cpp\n"
        "      ${flashmla_SOURCE_DIR}/csrc/sm90/decode.cu)\n"
        "include_directories(${flashmla_SOURCE_DIR}/csrc/include)\n"
        "set(Y ${flashmla_SOURCE_DIR}/../escape.cu)\n"
    )
    made = provision_stand_ins(
        {"FLASH_MLA_SRC_DIR": StandIn(fetch="flashmla", contents={"VERSION": "0"})},
        tmp_path / "build",
        source,
    )
    root = made["FLASH_MLA_SRC_DIR"]
    assert root == tmp_path / "build" / "stand-ins" / "FLASH_MLA_SRC_DIR"
    assert (root / "flash_mla" / "flash_mla_interface.py").is_file()
    assert (root / "csrc" / "api" / "api.cpp").is_file()
    assert (root / "csrc" / "sm90" / "decode.cu").is_file()
    assert (root / "VERSION").read_text() == "0"
    assert not (root / "csrc" / "include").exists()  # a directory reference, not a file
    assert not (tmp_path / "build" / "stand-ins" / "escape.cu").exists()


# --- the recipe and the matrix --------------------------------------------------------


def test_the_pip_configure_recipe_runs_cmake_as_setup_py_would(tmp_path: Path) -> None:
    matrix = load_matrix(REPO / "matrices" / "vllm-configure.yaml", source=REPO / "examples")
    cell = next(c for c in plan(matrix) if c.id == "cu13.0-12.1a")
    build = tmp_path / "b"
    env = ConfigureEnv(
        site=tmp_path / "site",
        cuda_home=tmp_path / "cuda",
        stand_ins={"FLASH_MLA_SRC_DIR": build / "stand-ins" / "FLASH_MLA_SRC_DIR"},
        requirements=("torch==2.14.0",),
    )
    paths = BuildPaths(REPO / "examples", build, tmp_path / "nvcc", tmp_path / "cuda0")
    commands_ = recipe(
        matrix.project, cell, paths, threads=2, configure_only=True, configure_env=env
    )
    assert [s.name for s in commands_.steps] == ["copy-source", "configure"]
    copy = commands_.steps[0].argv  # without the checkout's .git (test_vllm_recipe.py runs it)
    assert copy[3:] == (str(REPO / "examples"), f"{build}/src", *NOT_COPIED_TO_CONFIGURE)
    configure = commands_.steps[1].argv
    assert configure[:7] == ("cmake", "-S", f"{build}/src", "-B", str(build), "-G", "Ninja")
    assert f"-DCMAKE_CUDA_COMPILER={tmp_path}/cuda/bin/nvcc" in configure
    assert f"-DCUTLASS_DIR={tmp_path}/site/cutlass_library/source" in configure
    assert "-DTORCH_CUDA_ARCH_LIST=12.1a" in configure
    assert f"-DFETCHCONTENT_BASE_DIR={build}/deps" in configure
    assert commands_.env["FLASH_MLA_SRC_DIR"] == str(build / "stand-ins" / "FLASH_MLA_SRC_DIR")
    assert commands_.env["PYTHONPATH"].split(":")[0] == str(tmp_path / "site")
    assert commands_.env["CUDA_HOME"] == str(tmp_path / "cuda")
    # the trace names the project's CMake files as they are in the writable copy
    traced = [a for a in configure if a.startswith("--trace-source=")]
    assert traced and all(a.startswith(f"--trace-source={build}/src/") for a in traced)


def test_a_matrix_without_source_needs_source_on_the_command_line() -> None:
    with pytest.raises(Exception, match="--source"):
        load_matrix(REPO / "matrices" / "vllm-configure.yaml")


# --- sources ----------------------------------------------------------------------------


def make_sdist(path: Path, members: dict[str, bytes], *, links: tuple[str, ...] = ()) -> Path:
    path.write_bytes(sdist_bytes(members, links=links))
    return path


def test_an_sdist_is_unpacked_once_without_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    sdist = make_sdist(
        tmp_path / "proj-1.0.tar.gz",
        {"proj-1.0/CMakeLists.txt": b"project(p)\n", "proj-1.0/csrc/a.cu": b""},
        links=("proj-1.0/evil",),
    )
    top = unpack_sdist(sdist)
    assert (top / "CMakeLists.txt").read_text() == "project(p)\n"
    assert not (top / "evil").exists()
    assert resolve_source(str(sdist)) == top  # cached: the same directory
    assert resolve_source(str(top)) == top


@pytest.mark.parametrize(
    "members",
    [
        {"../outside": b"x"},
        {"/abs/path": b"x"},
        {"a-1.0/x": b"", "b-1.0/y": b""},
    ],
)
def test_a_hostile_sdist_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, members: dict[str, bytes]
) -> None:
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    sdist = make_sdist(tmp_path / "bad.tar.gz", members)
    with pytest.raises(InputFileError):
        unpack_sdist(sdist)
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("html", [False, True], ids=["json-index", "html-index"])
def test_a_release_is_downloaded_from_the_configured_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, html: bool
) -> None:
    """``NAME==VERSION`` is the sdist the configured index lists (PEP 691 JSON or PEP 503
    HTML), checked against its digest, unpacked and kept: the second time needs no index."""
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    files = {"CMakeLists.txt": b"project(v)\n", "requirements/build.txt": b"torch==2.9.0\n"}
    for version in ("0.9.0", "0.10.0"):
        members = {**files, "VERSION": version.encode()}
        data = sdist_bytes({f"vllm-{version}/{name}": d for name, d in members.items()})
        publish(tmp_path / "index", "vllm", f"vllm-{version}.tar.gz", data, html=html)
    (tmp_path / "index" / "password").write_text(
        "s3cr:et"
    )  # credentials in the URL, as pip takes them
    with serving(tmp_path / "index") as url:
        monkeypatch.setenv("PIP_INDEX_URL", url.replace("http://", "http://me:s3cr%3Aet@"))
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        top = resolve_source("vllm==0.9.0")
    assert (top / "VERSION").read_text() == "0.9.0"
    assert (top / "requirements" / "build.txt").read_text() == "torch==2.9.0\n"
    assert resolve_source("vllm==0.9.0") == top  # the index is gone: from the cache


def test_a_source_that_is_nothing_known_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a release like"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="sdist"):
        resolve_source(str(tmp_path / "notes.txt"))


def test_configure_spec_defaults() -> None:
    spec = ConfigureSpec()
    assert spec.libraries == ("*.so",) and spec.cmake_source == "."


SHARED_NAMES = """\
cuda_archs_loose_intersection(MARLIN_ARCHS "8.0" "${CUDA_ARCHS}")
if(MARLIN_ARCHS)
  file(GLOB MARLIN_SRC "csrc/marlin/sm80_kernel_*.cu")
else()
  message(STATUS "Not building Marlin kernels as no compatible archs found")
endif()
cuda_archs_loose_intersection(MARLIN_MOE_ARCHS "8.0" "${CUDA_ARCHS}")
if(MARLIN_MOE_ARCHS)
  file(GLOB MARLIN_MOE_SRC "csrc/moe/marlin/sm80_kernel_*.cu")
else()
  message(STATUS "Not building Marlin MOE kernels as no compatible archs found")
endif()
file(GLOB EVERYTHING "csrc/other/*.cu")
"""


def test_families_that_share_source_names_get_the_guard_of_their_own_block(
    tmp_path: Path,
) -> None:
    """vLLM's dense and MoE Marlin generate files of the same names: the block whose
    "Not building" message is the family's (its ``log``) holds its guard; a
    "*.cu" pattern names no family."""
    source = tmp_path / "src"
    source.mkdir()
    lists = source / "CMakeLists.txt"
    lists.write_text(SHARED_NAMES)
    (tmp_path / "t.json").write_text(
        "\n".join(
            [
                '{"version":{"major":1,"minor":2}}',
                trace_line(lists, 1, "cuda_archs_loose_intersection", "MARLIN_ARCHS", "8.0", "9.0"),
                trace_line(lists, 2, "if", "MARLIN_ARCHS"),
                trace_line(lists, 3, "file", "GLOB", "MARLIN_SRC", "csrc/marlin/sm80_kernel_*.cu"),
                trace_line(lists, 7, "cuda_archs_loose_intersection", "MARLIN_MOE_ARCHS", "8.0", "9.0"),
                trace_line(lists, 8, "if", "MARLIN_MOE_ARCHS"),
                trace_line(lists, 9, "file", "GLOB", "MARLIN_MOE_SRC", "csrc/moe/marlin/sm80_kernel_*.cu"),
                trace_line(lists, 13, "file", "GLOB", "EVERYTHING", "csrc/other/*.cu"),
            ]
        )
        + "\n"
    )  # fmt: skip
    records = read_trace(tmp_path / "t.json")
    dense = FamilyRule(
        "marlin", (), sources=("sm80_kernel_*.cu",), log=("Not building Marlin kernels",)
    )
    moe = FamilyRule(
        "marlin_moe", (), sources=("sm80_kernel_*.cu",), log=("Not building Marlin MOE",)
    )
    assert guard_of(dense, source, records).startswith("CMakeLists.txt:1: ")  # type: ignore[union-attr]
    assert guard_of(moe, source, records).startswith("CMakeLists.txt:7: ")  # type: ignore[union-attr]
    other = FamilyRule("mla", (), sources=("sm100_cutlass_mla_kernel.cu",))
    assert guard_of(other, source, records) is None
