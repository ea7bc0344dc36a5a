"""The bad-input catalogue, integration part: the rows that need real builds (CUDA
13.0 nvcc from PyPI, CMake, ninja), a full disk or a signal. Each row is run as
``python -m orchestrator`` in a subprocess and must end in exactly one
``kernel-matrix: error:`` line on stderr and no traceback, with the right exit
code, and keep every finished result.

Cell-level failures (a compile error, an artifact glob that matches nothing, a
corrupt library, a crashed or timed-out compiler) are exit 3: the cell could not
be checked, and DESIGN.md makes such a cell an error, never a pass. The three
first double as the end-to-end "never a false pass" cases: each run's reports are
checked in every format (tests/unit/report_checks.py).

About 40 s of builds on the 2-core CI machine (each broken cell fails within its
first seconds; the two that build take about 5 s each).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion
from orchestrator.building.recipe import processes_building_in
from orchestrator.toolchains import cuda as toolchain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from report_checks import assert_console_fails, assert_reports_fail

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"
FAMILIES = SAMPLE / "families.yaml"
CUDA = CudaVersion(13, 0)

# Test-only faults, switched on per cell by a CMake option of a copy of the sample
# extension: the project's own build breaks in three real ways.
FAULTS_CMAKE = """
# --- kernel-matrix test faults (tests/integration/test_bad_inputs_build.py) ---
set(KM_FAULT "" CACHE STRING "compile | no-artifact | corrupt")
if(KM_FAULT STREQUAL "compile")
  # a source that does not compile (nvcc's front end rejects it)
  target_sources(_C PRIVATE csrc/broken.cu)
elseif(KM_FAULT STREQUAL "no-artifact")
  # the library is built under another name: the artifact glob '*.so' matches nothing
  set_target_properties(_C PROPERTIES SUFFIX ".so.disabled")
elseif(KM_FAULT STREQUAL "corrupt")
  # a post-build step overwrites the library with garbage behind an ELF magic
  add_custom_command(TARGET _C POST_BUILD
    COMMAND ${CMAKE_COMMAND} -E copy ${CMAKE_CURRENT_SOURCE_DIR}/garbage.so $<TARGET_FILE:_C>
    VERBATIM)
endif()
"""
FAULTS = {
    "compile": ("cu13.0-9.0a-compile-error", "build failed (exit 2): "),
    "no-artifact": ("cu13.0-9.0a-no-artifact", "the build succeeded but no artifact matched *.so"),
    "corrupt": ("cu13.0-9.0a-corrupt-so", "truncated or corrupt: the ELF header"),
}


def kernel_matrix(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
    )


def error_line(stderr: str) -> str:
    """Exactly one ``kernel-matrix: error:`` line, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("kernel-matrix: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def no_build_left(build_dir: Path) -> bool:
    """No process is still building anything under ``build_dir`` (marked in /proc)."""
    return not any(processes_building_in(d) for d in build_dir.iterdir() if d.is_dir())


@pytest.fixture(scope="module")
def cuda13() -> toolchain.Toolchain:
    return toolchain.provision(CUDA)  # cached after the first run on a machine


@pytest.fixture(scope="module")
def fault_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    source = root / "src"
    shutil.copytree(SAMPLE, source)
    with (source / "CMakeLists.txt").open("a") as cmake:
        cmake.write(FAULTS_CMAKE)
    (source / "csrc" / "broken.cu").write_text(
        "__global__ void broken(float* out) { out[0] = this is not C++; }\n"
    )
    (source / "garbage.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"garbage " * 4)
    include = "\n".join(
        f'  - {{cuda: "13.0", archs: "9.0a", name: {cell.split("9.0a-")[1]}, '
        f"cmake_options: {{KM_FAULT: {fault}}}}}"
        for fault, (cell, _) in FAULTS.items()
    )
    (root / "faults.yaml").write_text(
        f"project: {{source: src, artifacts: ['*.so']}}\ninclude:\n{include}\n"
        f"families: {FAMILIES}\n"
    )
    return root


@dataclass
class Run:
    done: subprocess.CompletedProcess[str]
    out: Path
    build: Path


_runs: dict[str, Run] = {}


@pytest.fixture
def fault_run(
    fault_project: Path, cuda13: toolchain.Toolchain, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Run]:
    """The run of one broken cell (once per session: the catalogue row and the
    never-a-false-pass checks read the same run)."""

    def run(fault: str) -> Run:
        if fault not in _runs:
            cell, _ = FAULTS[fault]
            where = tmp_path_factory.mktemp(fault)
            done = kernel_matrix(
                "run", str(fault_project / "faults.yaml"), "--only", cell, "--no-cache",
                "--out", str(where / "out"), "--build-dir", str(where / "build"),
            )  # fmt: skip
            _runs[fault] = Run(done, where / "out", where / "build")
        return _runs[fault]

    return run


# --- rows ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_broken_project_cell(fault: str, fault_run: Callable[[str], Run]) -> None:
    """Compile error / artifact glob matching nothing / corrupt .so: exit 3, one line
    naming the cell and the cause, the result kept as an error with its log tail."""
    cell, cause = FAULTS[fault]
    run = fault_run(fault)
    assert run.done.returncode == 3, run.done.stdout[-3000:] + run.done.stderr
    line = error_line(run.done.stderr)
    assert f"1 cell could not be built or checked (1 failed to build or check); {cell}" in line
    assert cause in line, line
    result = json.loads((run.out / "cells" / f"{cell}.json").read_text())
    assert result["status"] == "error" and cause in result["reason"]
    assert result["log_tail"]
    if fault == "compile":
        assert any("broken.cu" in line for line in result["log_tail"])


@pytest.mark.parametrize("fault", FAULTS)
def test_broken_project_cell_never_passes_in_any_format(
    fault: str, fault_run: Callable[[str], Run]
) -> None:
    """End to end through the real runner: JUnit, Markdown, JSON, HTML, the console
    and the exit code all say the cell did not pass."""
    cell, _ = FAULTS[fault]
    run = fault_run(fault)
    assert run.done.returncode != 0
    assert_reports_fail(run.out, cell, "error")
    assert_console_fails(run.done.stdout, cell)
    # and the reports made again from the cell results agree
    again = kernel_matrix("report", str(run.out), "--out", str(run.out / "again"))
    assert again.returncode == 3
    assert_reports_fail(run.out / "again", cell, "error")


def crashing_toolkit(root: Path, real: toolchain.Toolchain) -> Path:
    """The real CUDA 13.0 toolkit, but its nvcc crashes the way nvcc does when its
    front end dies (message and SIGSEGV) on the project's own sources; CMake's
    compiler checks (and ``--version``) go to the real nvcc. A fake only around
    the real part: everything else is the real toolkit."""
    home = root / "cuda-crashing"
    home.mkdir()
    for entry in real.home.iterdir():
        if entry.name != "bin":
            (home / entry.name).symlink_to(entry)
    (home / "bin").mkdir()
    for tool in (real.home / "bin").iterdir():
        if tool.name != "nvcc":
            (home / "bin" / tool.name).symlink_to(tool)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  */csrc/*)\n"
        "    echo \"nvcc error   : 'cicc' died due to signal 11 (Invalid memory reference)\" >&2\n"
        "    kill -SEGV $$ ;;\n"
        "esac\n"
        f'exec "{real.nvcc}" "$@"\n'
    )
    nvcc.chmod(0o755)
    return home


def sample_matrix(root: Path, archs: str = "9.0a") -> Path:
    path = root / "m.yaml"
    path.write_text(
        f"project: {{source: {SAMPLE}, artifacts: ['*.so']}}\ncuda: ['13.0']\n"
        f"archs: ['{archs}']\nfamilies: {FAMILIES}\n"
    )
    return path


def test_nvcc_crash(tmp_path: Path, cuda13: toolchain.Toolchain) -> None:
    home = crashing_toolkit(tmp_path, cuda13)
    done = kernel_matrix(
        "run", str(sample_matrix(tmp_path)), "--cuda-home", str(home), "--no-cache",
        "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"),
    )  # fmt: skip
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr
    line = error_line(done.stderr)
    assert re.search(r"cu13.0-9.0a: build failed \(exit \d+\): nvcc error : 'cicc' died", line)
    result = json.loads((tmp_path / "out" / "cells" / "cu13.0-9.0a.json").read_text())
    assert result["status"] == "error"
    assert no_build_left(tmp_path / "build")


def test_cell_timeout(tmp_path: Path, cuda13: toolchain.Toolchain) -> None:
    started = time.monotonic()
    done = kernel_matrix(
        "run", str(sample_matrix(tmp_path)), "--timeout", "2", "--no-cache",
        "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"),
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 3, done.stdout[-2000:]
    line = error_line(done.stderr)
    assert "cu13.0-9.0a: configure timed out" in line or "cu13.0-9.0a: build timed out" in line
    assert no_build_left(tmp_path / "build")


# --- a full disk ---------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A real file system that is nearly full (``mount -t tmpfs``: needs root)."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    with contextlib.suppress(OSError), (path / "filler").open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def wheel_too_big_for(where: Path) -> Path:
    """A local 'cuda-toolkit' wheel of 3 MiB of incompressible data (more than the
    2 MiB cache): pip really installs it, and the disk really fills up."""
    where.mkdir()
    name = "cuda_toolkit-13.0.99"
    data = os.urandom(3 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("cuda_toolkit_blob/blob.bin", data)
        zf.writestr(
            f"{name}.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: cuda-toolkit\nVersion: 13.0.99\n",
        )
        zf.writestr(
            f"{name}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{name}.dist-info/RECORD", "")
    wheel = where / f"{name}-py3-none-any.whl"
    wheel.write_bytes(buffer.getvalue())
    return where


def test_no_disk_space_for_the_toolchain(tmp_path: Path) -> None:
    """The cache (KERNEL_MATRIX_CACHE) is a 2 MiB tmpfs; pip installs a 3 MiB
    toolchain wheel from a local directory (no network) into it."""
    if toolchain.find_system(CUDA):
        pytest.skip("a system CUDA 13.0 toolkit would be used instead of installing one")
    wheels = wheel_too_big_for(tmp_path / "wheels")
    with small_tmpfs(tmp_path / "cache") as cache:
        done = kernel_matrix(
            "run", str(sample_matrix(tmp_path)), "--no-cache",
            "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"),
            env={"KERNEL_MATRIX_CACHE": str(cache), "PIP_NO_INDEX": "1",
                 "PIP_FIND_LINKS": str(wheels)},
        )  # fmt: skip
        leftovers = sorted(p.name for p in (cache / "toolchains").iterdir())
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr
    line = error_line(done.stderr)
    assert "installing CUDA 13.0 toolchain" in line and "no space left on device" in line, line
    assert leftovers == ["cuda-13.0.lock"]  # the half-installed toolchain was removed
    result = json.loads((tmp_path / "out" / "cells" / "cu13.0-9.0a.json").read_text())
    assert result["status"] == "error" and "no space left" in result["reason"]


def test_no_disk_space_for_the_result_cache_loses_nothing(
    tmp_path: Path, cuda13: toolchain.Toolchain
) -> None:
    """Not an error: the cell builds and passes with a real toolkit, its result is
    kept in the run's directory, and the full result cache is a warning on it
    (before, the run ended in a traceback and the finished result was lost)."""
    with small_tmpfs(tmp_path / "cache") as cache:
        fill(cache)
        done = kernel_matrix(
            "run", str(sample_matrix(tmp_path)), "--cuda-home", str(cuda13.home),
            "--out", str(tmp_path / "out"), "--build-dir", str(tmp_path / "build"),
            env={"KERNEL_MATRIX_CACHE": str(cache)},
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Traceback" not in done.stderr and "error" not in done.stderr
    result = json.loads((tmp_path / "out" / "cells" / "cu13.0-9.0a.json").read_text())
    assert result["status"] == "passed"
    assert any("result cache not written" in w for w in result["warnings"])


# --- signals -------------------------------------------------------------------------


@dataclass
class Stopped:
    code: int
    stdout: str
    stderr: str
    out: Path
    build: Path
    seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


def stop_while_building(root: Path, signum: int) -> Stopped:
    """Start a one-cell run and send ``signum`` once the compiler is at work."""
    out, build = root / "out", root / "build"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(sample_matrix(root)), "--no-cache",
         "--out", str(out), "--build-dir", str(build)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    log = out / "logs" / "cu13.0-9.0a.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "Building CUDA object" in log.read_text(errors="replace")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    return Stopped(proc.returncode, stdout, stderr, out, build, time.monotonic() - sent)


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")],
    ids=["Ctrl-C", "SIGTERM"],
)
def test_signal_mid_run(
    signum: int, code: int, said: str, tmp_path: Path, cuda13: toolchain.Toolchain
) -> None:
    stopped = stop_while_building(tmp_path, signum)
    assert stopped.code == code, stopped.stdout[-2000:] + stopped.stderr
    line = error_line(stopped.stderr)
    assert f"interrupted by {said}: 0 of 1 cell finished" in line
    assert "--resume" in line
    assert stopped.seconds < 15
    result = json.loads((stopped.out / "cells" / "cu13.0-9.0a.json").read_text())
    assert result["status"] == "not-run"
    assert no_build_left(stopped.build)
    assert_reports_fail(stopped.out, "cu13.0-9.0a", "not-run")


# --- one writer per output directory (issue 21) -----------------------------------------


def test_two_runs_on_one_output_directory(tmp_path: Path, cuda13: toolchain.Toolchain) -> None:
    """Two real runs given one --out: the second (with or without --resume) is refused
    in one line, exit 3, while the first builds; the first finishes and passes; a
    later run without --resume is refused (exit 2) and the finished result, its
    results.json and its log are left exactly as the run that made them wrote them.
    (Before: the second run overwrote the first's passing cell and results.json
    with its own.)"""
    out, build, matrix = tmp_path / "out", tmp_path / "build", tmp_path / "m.yaml"
    # Four cells, one at a time: the first run is still at work while the others try.
    matrix.write_text(
        f"project: {{source: {SAMPLE}, artifacts: ['*.so']}}\ncuda: ['13.0']\n"
        f"archs: ['9.0a', '10.0f', '12.0a', '12.1a']\nfamilies: {FAMILIES}\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(matrix), "--no-cache", "--jobs", "1",
         "--out", str(out), "--build-dir", str(build)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    logs = out / "logs"
    deadline = time.monotonic() + 120
    while not logs.is_dir() or not any(logs.iterdir()):
        assert first.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    for extra in ((), ("--resume",)):
        second = kernel_matrix(
            "run", str(matrix), "--no-cache", *extra,
            "--out", str(out), "--build-dir", str(tmp_path / "build2"),
        )  # fmt: skip
        assert second.returncode == 3, second.stdout[-2000:] + second.stderr
        line = error_line(second.stderr)
        assert f"{out}: another kernel-matrix process is writing to this directory" in line
    assert first.poll() is None, "the first run must still be building"
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stdout[-2000:] + stderr
    assert not (tmp_path / "build2").exists()  # the refused runs built nothing

    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 4
    assert all(json.loads(c.read_text())["status"] == "passed" for c in cells)
    kept = {p: p.read_bytes() for p in (*cells, out / "results.json", *logs.iterdir())}
    later = kernel_matrix(
        "run", str(matrix), "--no-cache", "--out", str(out), "--build-dir", str(build)
    )
    assert later.returncode == 2, later.stdout[-2000:] + later.stderr
    assert "already holds the results of another run (4 cells)" in error_line(later.stderr)
    assert {p: p.read_bytes() for p in kept} == kept
