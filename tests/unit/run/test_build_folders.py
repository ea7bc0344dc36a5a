"""Each matrix builds in its own folder (issue 35, item 4).

Without ``--build-dir`` the cells of ``some/dir/NAME.yaml`` build in
``build/NAME/<cell-id>``: two matrices with a cell id in common (the sample
extension's and vLLM's ``cu13.0-12.1a``) never share a tree, and none lands in
setuptools' ``build/lib``. ``--build-dir DIR`` puts the cells in ``DIR/<cell-id>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth import (
    KIND_ELF,
    CubinSpec,
    EntrySpec,
    KernelSpec,
    build_container,
    build_cubin,
    build_shared_object,
    working_body,
)

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.cli import main
from orchestrator.planning.plan import Cell
from orchestrator.run import cellcache


class FakeBackend:
    """A "build" writes one library with an nvfp4 kernel for sm_120."""

    name = "local"

    def __init__(self) -> None:
        self.built: list[Path] = []

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        self.built.append(job.build_dir)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        cubin = build_cubin(CubinSpec([KernelSpec("_Z11nvfp4_quantv", working_body(20))]), sm=120)
        container = build_container([EntrySpec(KIND_ELF, 120, cubin, "a")])
        (job.build_dir / "_C.so").write_bytes(build_shared_object([container]))
        return BuildOutcome("fake", 0.0)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    from orchestrator import building

    fake = FakeBackend()
    monkeypatch.setattr(building.backends, "make_backend", lambda *a, **k: fake)
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cellcache.LIMIT_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "kernels.cu").write_text("// a source\n")
    (tmp_path / "matrices").mkdir()
    for name in ("sample", "vllm-configure", "lib"):
        (tmp_path / "matrices" / f"{name}.yaml").write_text(
            "project: {source: ../src, artifacts: ['*.so']}\n"
            "cuda: ['13.0']\narchs: ['12.0a']\n"
            "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']}}\n"
        )
    return fake


def result_build_dir(out: Path) -> str:
    return str(json.loads((out / "cells" / "cu13.0-12.0a.json").read_text())["build_dir"])


def test_two_matrices_with_one_cell_id_build_in_two_folders(
    tmp_path: Path, backend: FakeBackend
) -> None:
    for name in ("sample", "vllm-configure"):
        argv = ["run", f"matrices/{name}.yaml", "--no-cache", "--out", f"out-{name}"]
        assert main(argv) == 0
    assert backend.built == [
        tmp_path / "build/sample/cu13.0-12.0a",
        tmp_path / "build/vllm-configure/cu13.0-12.0a",
    ]
    assert result_build_dir(tmp_path / "out-sample") == str(tmp_path / "build/sample/cu13.0-12.0a")
    assert not (tmp_path / "build/cu13.0-12.0a").exists()


def test_a_matrix_named_like_a_setuptools_folder_stays_out_of_it(
    tmp_path: Path, backend: FakeBackend
) -> None:
    assert main(["run", "matrices/lib.yaml", "--no-cache", "--out", "out"]) == 0
    assert backend.built == [tmp_path / "build/matrix-lib/cu13.0-12.0a"]
    assert not (tmp_path / "build/lib").exists()


def test_build_dir_holds_the_cells_themselves(tmp_path: Path, backend: FakeBackend) -> None:
    argv = ["run", "matrices/sample.yaml", "--no-cache", "--out", "out", "--build-dir", "mine"]
    assert main(argv) == 0
    assert backend.built == [tmp_path / "mine/cu13.0-12.0a"]
    assert result_build_dir(tmp_path / "out") == str(tmp_path / "mine/cu13.0-12.0a")
