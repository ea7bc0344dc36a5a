"""CUDA 12.4 from Debian's non-free archive, for real: the packages fetched through
this host's own apt mirrors (about 1 GB, once per machine or CI cache: the laid-out
toolchain stays in ~/.cache/kernel-matrix/toolchains/cuda-12.4-debian), its nvcc's
targets against the arch table, a source with cuda_bf16.h and cuda_fp8.h compiled
for sm_90a from a moved, read-only copy, and the default matrix's cu12.4-9.0a cell
built and checked. Skips, with the reason, where the host cannot fetch them (not
Debian, no Debian sources)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion, compilable_targets
from orchestrator.toolchains import cuda as toolchains
from orchestrator.toolchains import debian
from orchestrator.toolchains.base import Toolchain

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CUDA = CudaVersion(12, 4)
SOURCE = """\
#include <cuda_bf16.h>
#include <cuda_fp8.h>
__global__ void scale(const __nv_bfloat16* x, __nv_fp8_e4m3* y, float s) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  y[i] = __nv_fp8_e4m3(__bfloat162float(x[i]) * s);
}
"""


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    problem = debian.host_problem(CUDA)
    if problem and debian.find_cached(CUDA) is None:
        pytest.skip(f"CUDA {CUDA} from Debian cannot be fetched here: {problem}")
    return debian.provision(CUDA)  # cached after the first run on a machine


def test_the_debian_toolchain_is_cached_and_resolved(toolchain: Toolchain) -> None:
    assert toolchain.full_version == "12.4.131" and toolchain.origin == "debian"
    assert toolchains.find_cached(CUDA) == toolchain
    assert toolchains.resolve(CUDA, install=False) == toolchain
    assert toolchains.local_availability(CUDA) is None
    recorded = json.loads((toolchain.home / "toolchain.json").read_text())
    assert recorded["nvidia-cuda-toolkit"].startswith("12.4.131~")
    profile = (toolchain.nvcc.parent / "nvcc.profile").read_text()
    assert "/usr/" not in profile and "$(_HERE_)" in profile


def test_its_nvcc_compiles_what_the_arch_table_says(toolchain: Toolchain) -> None:
    listed = set(
        subprocess.run(
            [str(toolchain.nvcc), "--list-gpu-code"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert listed == {t for t in compilable_targets(CUDA) if t[-1].isdigit()}
    assert "sm_90" in listed and not any(t.startswith(("sm_100", "sm_120")) for t in listed)


def test_bf16_and_fp8_compile_for_sm_90a_from_a_moved_read_only_copy(
    toolchain: Toolchain, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "cuda"
    shutil.copytree(toolchain.home, moved, symlinks=True)
    for path in [moved, *moved.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    source = tmp_path / "fp8.cu"
    source.write_text(SOURCE)
    library = tmp_path / "fp8.so"
    try:
        done = subprocess.run(
            [str(moved / "bin" / "nvcc"), "-shared", "-Xcompiler", "-fPIC", "-rdc=true",
             "-gencode", "arch=compute_90a,code=sm_90a", str(source), "-o", str(library)],
            capture_output=True, text=True, env={**os.environ, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    finally:
        for path in [moved, *moved.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert done.returncode == 0, done.stderr[-3000:]
    listing = subprocess.run(
        [str(toolchain.home / "bin" / "cuobjdump"), "--list-elf", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "sm_90" in listing  # (CUDA 12.4's cuobjdump names an sm_90a cubin sm_90)


def test_the_default_matrix_builds_and_checks_cu12_4_9_0a(
    toolchain: Toolchain, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "matrix.yaml", "--only", "cu12.4-9.0a",
         "--only", "cu12.4-10.0f", "--out", str(tmp_path / "r"), "--build-dir",
         str(tmp_path / "b"), "--no-cache"],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    built = json.loads((tmp_path / "r" / "cells" / "cu12.4-9.0a.json").read_text())
    assert built["status"] == "passed", built.get("reason")
    log = (tmp_path / "r" / built["log"]).read_text().splitlines()
    assert log[0].startswith("kernel-matrix: toolchain CUDA 12.4.131 (debian, "), log[0]
    skipped = json.loads((tmp_path / "r" / "cells" / "cu12.4-10.0f.json").read_text())
    assert skipped["status"] == "skipped"
    assert "sm_100 is new in CUDA 12.8" in skipped["reason"]
