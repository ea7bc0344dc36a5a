"""The vLLM recipe without building vLLM: what the docker backend runs for a cell of
matrices/vllm-build.yaml (against a recording fake engine), the source copy a pip
cell builds from, and the log parsing on vLLM-shaped CMake output fed to
``buildlog.scan_log`` and ``expect.judge``.

The log lines are vLLM's own spellings (CMakeLists.txt and
cmake/libtorch_stable.cmake at 000a1ee93b2d, quoted in matrices/vllm-truth.md).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.archs import ComputeCapability, CudaVersion, Target
from orchestrator.building.backends import BuildJob
from orchestrator.building.backends.container import Engine
from orchestrator.building.backends.docker import DockerBackend, pip_install_for, torch_index_for
from orchestrator.building.buildlog import scan_log
from orchestrator.building.recipe import (
    COPY_SOURCE,
    NOT_COPIED,
    NOT_COPIED_TO_CONFIGURE,
    BuildPaths,
    recipe,
)
from orchestrator.cli import main
from orchestrator.judge.expect import MISSING, NOT_APPLICABLE, PRESENT, judge
from orchestrator.planning.matrix import load_families_or_matrix, load_matrix
from orchestrator.planning.plan import plan
from orchestrator.read.inventory import CodeObject, Inventory, Kernel, Library

REPO = Path(__file__).resolve().parents[3]
PROFILE = REPO / "matrices" / "vllm.yaml"
CC = ComputeCapability.parse


@pytest.fixture
def vllm_matrix(tmp_path: Path) -> Path:
    """matrices/vllm-build.yaml as a user would set it up: next to vllm.yaml, with
    its source pointing at a (fake) vLLM checkout."""
    checkout = tmp_path / "vllm"
    (checkout / "csrc").mkdir(parents=True)
    (checkout / "setup.py").write_text("")
    folder = tmp_path / "matrices"
    folder.mkdir()
    shutil.copy(PROFILE, folder / "vllm.yaml")
    text = (REPO / "matrices" / "vllm-build.yaml").read_text()
    assert "source: ../../vllm" in text  # what the file tells users to set
    (folder / "vllm-build.yaml").write_text(text.replace("source: ../../vllm", "source: ../vllm"))
    return folder / "vllm-build.yaml"


def test_the_vllm_build_matrix_validates_and_plans(
    vllm_matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    matrix = load_matrix(vllm_matrix)
    assert matrix.project.build == "pip"
    assert matrix.project.artifacts == ("dist/*.whl",)
    assert matrix.backend == "docker"
    assert matrix.docker.base_image == "nvidia/cuda:{cuda}-devel-ubuntu22.04"
    assert {f.name for f in matrix.families} >= {"nvfp4_quant", "scaled_mm_sm120", "moe_data"}
    cells = plan(matrix)
    assert [c.id for c in cells] == [
        "cu12.9-9.0a_10.0f_12.0f_12.1f",
        "cu13.0-9.0a_10.0f_12.0f_12.1f",
        "cu12.9-12.1a-spark",
    ]
    assert all(c.runnable for c in cells)
    assert main(["plan", str(vllm_matrix)]) == 0
    assert "3 cells" in capsys.readouterr().out


# --- what the docker backend runs -------------------------------------------------------


@dataclass
class Exec:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: str


@dataclass
class RecordingEngine(Engine):
    """An engine that has every base image, builds images instantly, and records
    what would run in containers (nvcc --version answers CUDA 12.9)."""

    images: dict[str, str] = field(default_factory=dict)
    built: list[dict[str, str]] = field(default_factory=list)
    started: list[Mapping[str, Any]] = field(default_factory=list)
    execs: list[Exec] = field(default_factory=list)

    def __post_init__(self) -> None:  # no Docker client behind it
        pass

    def image_id(self, ref: str) -> str | None:
        if ref.startswith("kernel-matrix-build:"):
            return self.images.get(ref)
        return "sha256:base"

    def image_env(self, ref: str) -> dict[str, str]:
        return {"PATH": "/opt/kernel-matrix/venv/bin:/usr/local/cuda/bin:/usr/bin:/bin"}

    def labelled(self, labels: Mapping[str, str]) -> dict[str, dict[str, str]]:
        return {}  # no container left over from an earlier run

    def build_image(
        self,
        context: Path,
        *,
        tag: str,
        buildargs: Mapping[str, str],
        network: str | None,
        log: Any,
    ) -> str:
        self.built.append(dict(buildargs))
        self.images[tag] = "sha256:built"
        return "sha256:built"

    def start(self, image: str, command: Sequence[str], options: Mapping[str, Any]) -> str:
        self.started.append(options)
        return f"c{len(self.started)}"

    def exec_create(
        self, ident: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, user: str
    ) -> str:
        self.execs.append(Exec(list(argv), dict(env), cwd, user))
        return f"e{len(self.execs)}"

    def exec_output(self, exec_id: str) -> Iterator[bytes]:
        if self.execs[int(exec_id[1:]) - 1].argv[-1] == "--version":
            yield b"Cuda compilation tools, release 12.9, V12.9.86\n"

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        return {"Running": False, "ExitCode": 0}

    def discard(self, ident: str) -> None:
        pass


def test_docker_commands_for_a_pip_built_vllm_cell(
    vllm_matrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERNEL_MATRIX_TORCH_INDEX", "https://torch-index.example/whl/")
    matrix = load_matrix(vllm_matrix)
    cell = plan(matrix)[0]  # cu12.9, 9.0a;10.0f;12.0f;12.1f
    engine = RecordingEngine()
    backend = DockerBackend(matrix, engine=engine, user=(os.getuid(), os.getgid()), offline=False)
    build_dir = tmp_path / "build" / cell.id
    log = io.BytesIO()
    job = BuildJob(cell, build_dir, log, time.monotonic() + 600, threads=3)
    backend.build(job)

    # the image: nvidia/cuda 12.9 devel, Python for pip, torch of cu129 preinstalled
    (buildargs,) = engine.built
    assert buildargs["BASE_IMAGE"] == "nvidia/cuda:12.9.1-devel-ubuntu22.04"
    assert buildargs["PYTHON"] == "1" and buildargs["TOOLCHAIN"] == "image"
    assert buildargs["PIP_INSTALL"].startswith(
        "torch==2.10.0 --extra-index-url https://torch-index.example/whl/cu129 "
    )
    assert "setuptools-scm>=8.0" in buildargs["PIP_INSTALL"].split()

    version, copy, wheel = engine.execs
    assert version.argv == ["/usr/local/cuda/bin/nvcc", "--version"]
    source = str(vllm_matrix.parent.parent / "vllm")
    copy_of_source = f"{build_dir}/src"
    assert copy.argv == ["python3", "-c", COPY_SOURCE, source, copy_of_source, *NOT_COPIED]
    assert wheel.argv == [
        "python3", "-m", "pip", "wheel", copy_of_source, "--no-deps", "--no-build-isolation",
        "--wheel-dir", f"{build_dir}/dist", "--verbose",
    ]  # fmt: skip
    assert wheel.cwd == copy_of_source and copy.cwd == str(build_dir)
    env = wheel.env
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0a;10.0f;12.0f;12.1f"
    assert env["VLLM_TARGET_DEVICE"] == "cuda"
    assert env["MAX_JOBS"] == "16" and env["NVCC_THREADS"] == "2"  # the matrix's, not threads=3
    assert env["CUDA_HOME"] == "/usr/local/cuda"
    assert env["CUDACXX"] == "/usr/local/cuda/bin/nvcc"
    assert env["PATH"].startswith("/opt/kernel-matrix/venv/bin:")
    assert env["HOME"] == "/tmp"
    assert env["CMAKE_ARGS"] == ""
    assert copy.env == env and wheel.user == f"{os.getuid()}:{os.getgid()}"

    # the checkout read-only, the cell's build directory writable, both at host paths
    options = engine.started[-1]
    mounts = {m["Target"]: m for m in options["mounts"]}
    assert mounts[source]["ReadOnly"] is True
    assert mounts[str(build_dir)]["ReadOnly"] is False
    assert options["nano_cpus"] == 32 * 10**9 and options["mem_limit"] == "128g"


def test_runner_threads_apply_when_the_matrix_sets_no_parallelism() -> None:
    from orchestrator.planning.matrix import CellSpec, Project
    from orchestrator.planning.plan import Cell

    project = Project(Path("/src"), build="pip", env={"VLLM_TARGET_DEVICE": "cuda"})
    cell = Cell(CellSpec(CudaVersion(13, 0), (), env={"NVCC_THREADS": "4"}), "docker")
    paths = BuildPaths(Path("/src"), Path("/b"), Path("/cuda/bin/nvcc"), Path("/cuda"))
    env = recipe(project, cell, paths, threads=8).env
    assert env["MAX_JOBS"] == "8" and env["CMAKE_BUILD_PARALLEL_LEVEL"] == "8"
    assert env["NVCC_THREADS"] == "4"  # a cell's env wins too


def test_pip_install_placeholder() -> None:
    assert pip_install_for("torch --index-url https://x/{cu}", CudaVersion(13, 0)) == (
        "torch --index-url https://x/cu130"
    )
    index = torch_index_for("{torch_index}", {"KERNEL_MATRIX_TORCH_INDEX": "https://y/whl/"})
    assert pip_install_for("torch --index-url {torch_index}/{cu}", CudaVersion(13, 0), index) == (
        "torch --index-url https://y/whl/cu130"
    )


def test_the_torch_index_placeholder_without_its_variable_is_one_line_before_any_cell(
    vllm_matrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vLLM build recipe names no index host: without KERNEL_MATRIX_TORCH_INDEX the
    run stops with one line naming the matrix (exit 2), before any cell starts or any
    docker engine is asked (not once per cell, as an infrastructure failure)."""
    monkeypatch.delenv("KERNEL_MATRIX_TORCH_INDEX", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")

    def no_engine() -> Engine:
        raise AssertionError("the docker engine was asked")

    monkeypatch.setattr(Engine, "connect", staticmethod(no_engine))
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(
        [
            "run",
            str(vllm_matrix),
            "--out",
            str(tmp_path / "out"),
            "--build-dir",
            str(tmp_path / "b"),
        ]
    )
    assert code == 2
    assert err.getvalue() == (
        f"kernel-matrix: error: {vllm_matrix}: docker.pip_install uses {{torch_index}}: set "
        "KERNEL_MATRIX_TORCH_INDEX to the PyTorch wheel index whose cu<XY>/ directories hold "
        "torch\n"
    )
    assert out.getvalue() == ""  # no cell started, nothing announced
    assert not (tmp_path / "out" / "cells").exists()


def test_the_source_copy_leaves_out_the_checkouts_own_build_outputs(tmp_path: Path) -> None:
    source = tmp_path / "vllm"
    for name in ("setup.py", "csrc/build/keep.cu", "build/temp/CMakeCache.txt", "dist/old.whl",
                 ".deps/cutlass-subbuild/CMakeCache.txt", ".git/HEAD", "vllm/__init__.py"):  # fmt: skip
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(name)
    (source / "link").symlink_to("setup.py")
    copy = tmp_path / "cell" / "src"
    copy.mkdir(parents=True)
    (copy / "stale").write_text("from an earlier attempt")
    subprocess.run(
        [sys.executable, "-c", COPY_SOURCE, str(source), str(copy), *NOT_COPIED], check=True
    )
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if not p.is_dir())
    assert found == [".git/HEAD", "csrc/build/keep.cu", "link", "setup.py", "vllm/__init__.py"]
    assert (copy / "link").is_symlink()
    # a configure's copy leaves the checkout's .git behind too (a wheel build may read it)
    argv = [sys.executable, "-c", COPY_SOURCE, str(source), str(copy), *NOT_COPIED_TO_CONFIGURE]
    subprocess.run(argv, check=True)
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if not p.is_dir())
    assert found == ["csrc/build/keep.cu", "link", "setup.py", "vllm/__init__.py"]


# --- vLLM's "Not building ..." lines, read back as causes -----------------------------------

# A CUDA 12.9 build for DGX Spark alone (TORCH_CUDA_ARCH_LIST=12.1a) with guards that
# list only 12.0a -- the situation of vLLM PR 37725 -- as pip --verbose prints it.
SPARK_LOG = """\
# kernel-matrix docker: image kernel-matrix-build:cu12.9-0123456789abcdef, user 1000:1000
$ python3 -m pip wheel /b/cu12.9-12.1a-spark/src --no-deps --no-build-isolation --wheel-dir /b/cu12.9-12.1a-spark/dist --verbose
Processing /b/cu12.9-12.1a-spark/src
  Running command Building wheel for vllm (pyproject.toml)
  -- Build type: RelWithDebInfo
  -- Target device: cuda
  -- CUDA target architectures: 12.1a
  -- CUDA supported target architectures: 12.1a
  -- Building Marlin kernels for archs: 12.1a
  -- Not building scaled_mm_c3x_sm90 as no compatible archs found in CUDA target architectures
  -- Not building scaled_mm_c3x_120 as no compatible archs found in CUDA target architectures
  -- Not building scaled_mm_c3x_100 as no compatible archs found in CUDA target architectures
  -- Not building scaled_mm_c2x as no compatible archs found in CUDA target architectures
  -- Not building grouped_mm_c3x as no compatible archs found in CUDA target architectures.
  -- Not building grouped_mm_c3x as no compatible archs found in CUDA target architectures.
  -- Not building moe_data as no compatible archs found in CUDA target architectures.
  -- Not building NVFP4 as no compatible archs were found.
  -- Not building NVFP4 as no compatible archs were found.
  -- Not building W4A8 kernels as no compatible archs found in CUDA target architectures
  -- Not building CUTLASS MLA as no compatible archs were found.
  -- Not building Machete kernels as no compatible archs found in CUDA target architectures
  -- Enabling C extension.
  -- Not building Marlin MOE kernels as no compatible archs found in CUDA target architectures
  -- Enabling moe extension.
  [1/412] Building CUDA object CMakeFiles/_C.dir/csrc/cache_kernels.cu.o
  warning: the compiler said something
"""

NVFP4_LINE = "Not building NVFP4 as no compatible archs were found."
SCALED_MM_120_LINE = (
    "Not building scaled_mm_c3x_120 as no compatible archs found in CUDA target architectures"
)
EXPECTED_CAUSES = {
    # family: the line that explains it on 12.1 (None: present there)
    "nvfp4_quant": NVFP4_LINE,
    "nvfp4_scaled_mm_sm120": NVFP4_LINE,
    "nvfp4_moe": NVFP4_LINE,
    "scaled_mm_sm120": SCALED_MM_120_LINE,
    "blockwise_fp8_sm120": SCALED_MM_120_LINE,  # in the scaled_mm_c3x_sm120 guard
    "moe_data": "Not building moe_data as no compatible archs found in CUDA target architectures.",
    "marlin_moe": (
        "Not building Marlin MOE kernels as no compatible archs found in CUDA target architectures"
    ),
    "marlin_moe_fp8": (
        "Not building Marlin MOE kernels as no compatible archs found in CUDA target architectures"
    ),
}


def spark_inventory() -> Inventory:
    """What that build leaves: Marlin (dense) in an sm_121a cubin, nothing guarded."""
    marlin = "_ZN6marlin6MarlinILl1125899906909960ELl562949953487106ELi256EEEvPK4int4"
    kernel = Kernel(f"void marlin::Marlin<...>({marlin})", marlin, 4096, 900, False)
    code = CodeObject(Target.parse("sm_121a"), (kernel,), ("sm80_kernel_fp16_u4.cu",))
    return Inventory((Library("dist/vllm.whl!vllm/_C.abi3.so", (code,)),))


def test_scan_log_keeps_every_vllm_skip_line_once(tmp_path: Path) -> None:
    log = tmp_path / "cell.log"
    log.write_text(SPARK_LOG)
    findings = scan_log(log)
    assert NVFP4_LINE in findings.skip_lines and SCALED_MM_120_LINE in findings.skip_lines
    assert findings.skip_lines.count(NVFP4_LINE) == 1  # both FP4 guards print it
    assert len(findings.skip_lines) == 11  # 13 lines, two printed twice
    assert all(line.startswith("Not building ") for line in findings.skip_lines)
    assert findings.warnings == ["warning: the compiler said something"]


def test_each_family_missing_on_dgx_spark_gets_its_cause_line(tmp_path: Path) -> None:
    log = tmp_path / "cell.log"
    log.write_text(SPARK_LOG)
    skip_lines = scan_log(log).skip_lines
    inventory = spark_inventory()
    verdicts = {
        rule.name: judge(
            inventory, rule, CC("12.1"), cuda=CudaVersion(12, 9), skip_lines=skip_lines
        )
        for rule in load_families_or_matrix(PROFILE)
    }
    assert verdicts["marlin"].status == PRESENT  # the one family built for 12.1a
    assert verdicts["machete"].status == NOT_APPLICABLE  # Hopper-only: never a failure
    for family, cause in EXPECTED_CAUSES.items():
        verdict = verdicts[family]
        assert verdict.status == MISSING, family
        assert verdict.cause == cause, family
        assert f"the build log says: {cause}" in verdict.reason, family
    # FP8 Marlin has no skip line of its own (vllm-truth.md, finding 15): missing,
    # and said to be absent, with no invented cause
    fp8 = verdicts["marlin_fp8"]
    assert fp8.status == MISSING and fp8.cause is None
    assert fp8.reason == "no kernel of marlin_fp8 is in any library"
    failing = {name for name, v in verdicts.items() if v.failing}
    assert failing == {*EXPECTED_CAUSES, "marlin_fp8"}


@pytest.mark.parametrize(
    ("line", "families"),
    [
        # the SM100 guards' lines never explain SM120 families, and the reverse
        (
            "Not building scaled_mm_c3x_100 as no compatible archs found in CUDA target architectures",
            {"scaled_mm_sm100", "blockwise_fp8_sm100"},
        ),
        (
            "Not building scaled_mm_c3x_sm90 as no compatible archs found in CUDA target architectures",
            {"scaled_mm_sm90", "blockwise_fp8_sm90"},
        ),
        (
            "Not building grouped_mm_c3x as no compatible archs found in CUDA target architectures.",
            {"grouped_mm_sm90", "grouped_mm_sm100"},
        ),
        ("Not building CUTLASS MLA as no compatible archs were found.", {"mla_sm100"}),
        (
            "Not building Machete kernels as no compatible archs found in CUDA target architectures",
            {"machete"},
        ),
        # the bc390b9 layout's "stable" spellings (as quoted in vllm-truth.md)
        (
            "Not building stable scaled_mm_c3x_sm120 as no compatible archs found in CUDA target architectures",
            {"scaled_mm_sm120", "blockwise_fp8_sm120"},
        ),
        (
            "Not building stable NVFP4 SM120 as no compatible archs found in CUDA target architectures",
            {"nvfp4_quant", "nvfp4_scaled_mm_sm120", "nvfp4_moe"},
        ),
        (
            "Not building stable NVFP4 SM100 as no compatible archs found in CUDA target architectures",
            {"nvfp4_quant", "nvfp4_scaled_mm_sm100", "nvfp4_moe"},
        ),
    ],
)
def test_which_families_a_vllm_skip_line_explains(line: str, families: set[str]) -> None:
    rules = load_families_or_matrix(PROFILE)
    assert {rule.name for rule in rules if rule.explains(line)} == families
