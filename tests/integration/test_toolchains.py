"""The CUDA toolchains from PyPI, and the arch table checked against their real
compilers: what `nvcc --list-gpu-code` and `--help` of CUDA 13.x, and the `ptxas`
of the CUDA 12.x wheels (which carry no nvcc), say each version can compile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion, compilable_targets
from orchestrator.toolchains.cuda import cache_root, find_cached, provision

pytestmark = pytest.mark.integration

ALLOWED_VALUES = re.compile(r"Allowed values for this option:\s*(.*?)\.\s*\n\s*\n", re.S)


def allowed_sm_targets(help_text: str, option: str) -> set[str]:
    """The ``sm_*`` values an option of nvcc/ptxas accepts, from its --help."""
    header = re.search(rf"^{re.escape(option)}\s", help_text, re.M)
    assert header, f"no option {option} in --help"
    section = help_text[header.start() :]
    match = ALLOWED_VALUES.search(section)
    assert match, f"no 'Allowed values' after {option}"
    values = re.findall(r"'([^']+)'", match[1])
    return {v for v in values if v.startswith("sm_")}


@pytest.mark.parametrize("version", ["13.0", "13.5"])
def test_cuda_13_table_matches_the_real_nvcc(version: str) -> None:
    cuda = CudaVersion.parse(version)
    toolchain = provision(cuda)
    assert toolchain.full_version.startswith(version + ".")
    assert (toolchain.home / "lib64").exists()  # nvcc.profile links with lib64
    assert find_cached(cuda) == toolchain
    nvcc = str(toolchain.nvcc)
    listed = set(
        subprocess.run(
            [nvcc, "--list-gpu-code"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    table = compilable_targets(cuda)
    assert listed == {t for t in table if t[-1].isdigit()}
    help_text = subprocess.run([nvcc, "--help"], capture_output=True, text=True, check=True).stdout
    assert allowed_sm_targets(help_text, "--gpu-code") == table


@pytest.mark.parametrize("version", ["12.8", "12.9"])
def test_cuda_12_table_matches_the_real_ptxas(version: str) -> None:
    """CUDA 12.x has no nvcc on PyPI, but its ptxas (nvidia-cuda-nvcc-cu12) lists
    the offline targets of that release."""
    target = cache_root() / "tools" / f"ptxas-{version}"
    ptxas = next(target.glob("nvidia/cuda_nvcc/bin/ptxas"), None)
    if ptxas is None:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(target), f"nvidia-cuda-nvcc-cu12=={version}.*"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(
                f"nvidia-cuda-nvcc-cu12=={version}.* not installable here: {done.stderr[-300:]}"
            )
        ptxas = next(target.glob("nvidia/cuda_nvcc/bin/ptxas"))
    text = subprocess.run([str(ptxas), "--help"], capture_output=True, text=True, check=True).stdout
    assert (
        f"cuda_{version}"
        in subprocess.run(
            [str(ptxas), "--version"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert allowed_sm_targets(text, "--gpu-name") == compilable_targets(CudaVersion.parse(version))


def test_toolchain_paths_are_usable_by_cmake_and_nvcc(tmp_path: Path) -> None:
    """A tiny kernel compiles and links (-lcudadevrt) with the laid-out CUDA_HOME."""
    toolchain = provision(CudaVersion(13, 0))
    source = tmp_path / "k.cu"
    source.write_text("__global__ void k(float* x) { x[threadIdx.x] *= 2.f; }\n")
    subprocess.run(
        [str(toolchain.nvcc), "-shared", "-Xcompiler", "-fPIC", "-rdc=true",
         "-gencode", "arch=compute_121f,code=sm_121f", str(source), "-o", str(tmp_path / "k.so")],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (tmp_path / "k.so").stat().st_size > 0
