"""Build commands, process control and log reading (real processes, no compiler)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import orchestrator.building.recipe as build_module
from orchestrator.archs import CudaVersion, parse_arch_list
from orchestrator.building.buildlog import scan_log
from orchestrator.building.recipe import BuildPaths, collect_artifacts, recipe, run_logged
from orchestrator.planning.matrix import CellSpec, Project
from orchestrator.planning.plan import Cell

PATHS = BuildPaths(Path("/src"), Path("/b/cell"), Path("/cuda/bin/nvcc"), Path("/cuda"))


def cell(archs: str = "12.1a", **options: str) -> Cell:
    return Cell(
        CellSpec(CudaVersion(13, 0), parse_arch_list(archs), cmake_options=options), "local"
    )


def test_cmake_recipe_passes_the_arch_list_and_options() -> None:
    project = Project(Path("/src"), cmake_options={"A": "1"}, cmake_target="_C")
    commands = recipe(project, cell("9.0a;12.1a", BUG="ON"), PATHS, threads=2)
    configure, build = commands.steps
    assert configure.argv[:7] == ("cmake", "-S", "/src", "-B", "/b/cell", "-G", "Ninja")
    assert "-DTORCH_CUDA_ARCH_LIST=9.0a;12.1a" in configure.argv
    assert "-DCMAKE_CUDA_COMPILER=/cuda/bin/nvcc" in configure.argv
    assert "-DA=1" in configure.argv and "-DBUG=ON" in configure.argv
    assert build.argv == ("cmake", "--build", "/b/cell", "--parallel", "2", "--target", "_C")
    assert commands.env["TORCH_CUDA_ARCH_LIST"] == "9.0a;12.1a"
    assert commands.env["CUDA_HOME"] == "/cuda"


def test_fresh_recipe_configures_without_the_old_cache() -> None:
    project = Project(Path("/src"))
    assert "--fresh" not in recipe(project, cell(), PATHS, threads=1).steps[0].argv
    configure = recipe(project, cell(), PATHS, threads=1, fresh=True).steps[0]
    assert configure.argv[-1] == "--fresh"


def test_cutlass_include_placeholder_is_filled_with_the_provisioned_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the real provisioning (pip install nvidia-cutlass into the cache) is exercised by
    # tests/integration/test_end_to_end.py::test_cutlass_arch_guard_stub_is_hollow_...
    monkeypatch.setattr(build_module, "cutlass_headers", lambda: Path("/cache/cutlass/include"))
    project = Project(Path("/src"), cmake_options={"CUTLASS_INCLUDE_DIR": "{cutlass_include}"})
    configure, _ = recipe(project, cell("9.0"), PATHS, threads=1).steps
    assert "-DCUTLASS_INCLUDE_DIR=/cache/cutlass/include" in configure.argv
    calls: list[int] = []
    monkeypatch.setattr(build_module, "cutlass_headers", lambda: calls.append(1) or Path("/x"))
    recipe(Project(Path("/src")), cell("9.0"), PATHS, threads=1)
    assert calls == []  # nothing provisioned unless a value asks for it


def test_configure_only_recipe_has_no_build_step() -> None:
    commands = recipe(Project(Path("/src")), cell(), PATHS, threads=1, configure_only=True)
    assert [s.name for s in commands.steps] == ["configure"]


def test_pip_recipe_for_vllm_like_projects() -> None:
    project = Project(Path("/src"), build="pip", arch_variable="TORCH_CUDA_ARCH_LIST")
    commands = recipe(project, cell("9.0a;10.0f", X="1"), PATHS, threads=4)
    copy, wheel = commands.steps
    assert copy.argv[3:5] == ("/src", "/b/cell/src")  # each cell builds its own copy
    assert wheel.argv[:5] == ("python3", "-m", "pip", "wheel", "/b/cell/src")
    assert wheel.cwd == Path("/b/cell/src")
    assert commands.env["TORCH_CUDA_ARCH_LIST"] == "9.0a;10.0f"
    assert commands.env["MAX_JOBS"] == "4" and commands.env["CMAKE_ARGS"] == "-DX=1"


def test_run_logged_writes_output_and_status(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("wb") as handle:
        status = run_logged(
            [sys.executable, "-c", "import sys; print('hello'); sys.exit(3)"],
            cwd=tmp_path,
            env={},
            log=handle,
            deadline=time.monotonic() + 30,
        )
    assert status == 3
    assert "hello" in log.read_text()


def test_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time;"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    with (tmp_path / "log").open("wb") as handle, pytest.raises(subprocess.TimeoutExpired):
        run_logged(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env={},
            log=handle,
            deadline=time.monotonic() + 2,
        )
    child = int(marker.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"


def test_scan_log_finds_skip_lines_and_warnings(tmp_path: Path) -> None:
    log = tmp_path / "cell.log"
    log.write_text(
        "-- Building scaled_mm_c3x_sm90 for archs: 9.0a\n"
        "-- Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a\n"
        "CMake Warning at CMakeLists.txt:3: something\n"
        "-- Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a\n"
    )
    findings = scan_log(log, tail=2)
    assert findings.skip_lines == [
        "Not building NVFP4 as no compatible archs found in TORCH_CUDA_ARCH_LIST=12.1a"
    ]
    assert findings.warnings == ["CMake Warning at CMakeLists.txt:3: something"]
    assert len(findings.last_lines) == 2


def test_collect_artifacts(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("_C.so", "sub/_C_stable.so", "x.o"):
        (tmp_path / name).write_text("")
    assert [p.name for p in collect_artifacts(tmp_path, ["*.so", "**/*.so"])] == [
        "_C.so",
        "_C_stable.so",
    ]
