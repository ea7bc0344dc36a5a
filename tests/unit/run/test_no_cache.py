"""``run --no-cache`` builds from scratch and leaves the caches alone (issue 35,
item 5): the cell's build folder is emptied before the build (an existing tree made
ninja find nothing to do, and the cell "passed" on the old libraries), nothing is
answered from the result cache or the configure-input index, and nothing is stored
in them.
"""

from __future__ import annotations

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
from orchestrator.building.backends import local as local_backend
from orchestrator.building.recipe import BuildRecipe
from orchestrator.cli import main
from orchestrator.planning.plan import Cell
from orchestrator.run import cellcache
from orchestrator.toolchains import cuda as toolchain

CELL = "cu13.0-12.0a"


def library(mangled: str) -> bytes:
    cubin = build_cubin(CubinSpec([KernelSpec(mangled, working_body(20))]), sm=120)
    return build_shared_object([build_container([EntrySpec(KIND_ELF, 120, cubin, "a")])])


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cellcache.LIMIT_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "kernels.cu").write_text("// nvfp4_quant\n")
    (tmp_path / "m.yaml").write_text(
        "project: {source: src, artifacts: ['*.so']}\n"
        "cuda: ['13.0']\narchs: ['12.0a']\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']}}\n"
    )
    return tmp_path


def test_no_cache_builds_in_an_emptied_folder(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real local backend, with a "ninja" that, like ninja, does nothing when the
    library is already there: an old library without the nvfp4 kernel (and a stale
    one beside it) must not answer for this build."""
    build = workspace / "build" / "m" / CELL
    build.mkdir(parents=True)
    (build / "_C.so").write_bytes(library("_Z10old_kernelv"))  # nvfp4 not built then
    (build / "_stale.so").write_bytes(library("_Z10old_kernelv"))
    (build / "CMakeCache.txt").write_text("# an earlier configure\n")
    monkeypatch.setattr(
        toolchain,
        "resolve",
        lambda cuda, *a, **k: toolchain.Toolchain(cuda, workspace / "cuda", "13.0.88", "system"),
    )
    ran: list[list[str]] = []

    def ninja(commands: BuildRecipe, call: object) -> float:
        ran.append(sorted(p.name for p in build.iterdir()))
        if not (build / "_C.so").exists():
            (build / "_C.so").write_bytes(library("_Z11nvfp4_quantv"))
        return 0.0

    monkeypatch.setattr(local_backend, "run_recipe", ninja)
    assert main(["run", "m.yaml", "--no-cache", "--out", "out"]) == 0
    # What the build found in its folder: only what the backend itself writes first.
    assert ran == [[".cmake", ".kernel-matrix-toolchain"]]
    assert sorted(p.name for p in build.glob("*.so")) == ["_C.so"]
    log = (workspace / "out" / "logs" / f"{CELL}.log").read_text()
    assert (
        f"# kernel-matrix: --no-cache: removed the 3 entries an earlier build left in {build}"
        in (log)
    )


class FakeBackend:
    name = "local"

    def __init__(self) -> None:
        self.built: list[Path] = []

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        self.built.append(job.build_dir)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        (job.build_dir / "_C.so").write_bytes(library("_Z11nvfp4_quantv"))
        return BuildOutcome("fake", 0.0)


def test_no_cache_neither_reads_nor_writes_the_result_cache(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import building

    backend = FakeBackend()
    monkeypatch.setattr(building.backends, "make_backend", lambda *a, **k: backend)
    assert main(["run", "m.yaml", "--no-cache", "--out", "one"]) == 0
    assert main(["run", "m.yaml", "--out", "two"]) == 0  # nothing stored: built again
    assert main(["run", "m.yaml", "--no-cache", "--out", "three"]) == 0  # stored: not read
    assert len(backend.built) == 3
    assert "from the result cache" not in capsys.readouterr().out
    assert main(["run", "m.yaml", "--out", "four"]) == 0  # what run two stored
    assert len(backend.built) == 3
