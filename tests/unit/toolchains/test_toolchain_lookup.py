"""Toolchain lookups are done once per run: a system nvcc is asked its version once
per file (again when the file changes), the local backend resolves a CUDA version
once for every cell's cache key and build. The cache key sees the host build
environment of local cells."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.archs import CudaVersion, parse_arch_list
from orchestrator.building.backends.local import LocalBackend
from orchestrator.common.errors import ToolchainError
from orchestrator.planning.matrix import CellSpec, Matrix, Project
from orchestrator.planning.plan import Cell
from orchestrator.toolchains import cuda as toolchain


def fake_nvcc(path: Path, release: str, calls: Path) -> None:
    major, minor, _ = release.split(".")
    path.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{calls}"\n'
        f'echo "Cuda compilation tools, release {major}.{minor}, V{release}"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_nvcc_is_asked_once_per_file_and_again_when_it_changes(tmp_path: Path) -> None:
    nvcc, calls = tmp_path / "bin" / "nvcc", tmp_path / "calls"
    nvcc.parent.mkdir()
    fake_nvcc(nvcc, "12.8.93", calls)
    assert toolchain.nvcc_version(nvcc) == (CudaVersion(12, 8), "12.8.93")
    assert toolchain.nvcc_version(nvcc) == (CudaVersion(12, 8), "12.8.93")
    assert len(calls.read_text().split()) == 1
    fake_nvcc(nvcc, "12.9.141", calls)  # replaced in place: other size
    os.utime(nvcc, ns=(1, 1))
    assert toolchain.nvcc_version(nvcc) == (CudaVersion(12, 9), "12.9.141")
    assert len(calls.read_text().split()) == 2
    with pytest.raises(ToolchainError, match="cannot run nvcc"):
        toolchain.nvcc_version(tmp_path / "missing" / "nvcc")


def test_local_backend_resolves_each_cuda_version_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[CudaVersion] = []

    def resolve(cuda: CudaVersion, homes: object = (), **_: object) -> toolchain.Toolchain:
        resolved.append(cuda)
        return toolchain.Toolchain(cuda, tmp_path, f"{cuda}.1", "system")

    monkeypatch.setattr(toolchain, "resolve", resolve)
    matrix = Matrix(tmp_path / "matrix.yaml", Project(tmp_path), (), ())
    backend = LocalBackend(matrix, cuda_homes=[])
    cells = [
        Cell(CellSpec(CudaVersion(*v), parse_arch_list(a)), "local")
        for v, a in [((13, 0), "9.0a"), ((13, 0), "12.1a"), ((13, 5), "9.0a")]
    ]
    keys = [backend.toolchain_key(c) for c in cells + cells]
    assert keys[0] == keys[1] != keys[2]
    assert resolved == [CudaVersion(13, 0), CudaVersion(13, 5)]


def test_cache_key_covers_the_host_build_environment_of_local_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.run.cellcache import cell_cache_key

    matrix = Matrix(tmp_path / "matrix.yaml", Project(tmp_path), (), ())
    spec = CellSpec(CudaVersion(13, 0), parse_arch_list("12.1a"))
    local, docker = Cell(spec, "local"), Cell(spec, "docker")
    monkeypatch.delenv("CXXFLAGS", raising=False)
    before = [cell_cache_key(matrix, c, "tc", "src") for c in (local, docker)]
    monkeypatch.setenv("CXXFLAGS", "-O0")
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")
    after = [cell_cache_key(matrix, c, "tc", "src") for c in (local, docker)]
    assert after[0] != before[0]  # a local build sees CXXFLAGS
    assert after[1] == before[1]  # a container does not
