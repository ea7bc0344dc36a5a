"""A matrix made for the configure tier says so (issue 35, item 6a): ``tier:
configure`` makes ``run`` predict from CMake configure without ``--tier``, and
``--tier build`` still overrides it. matrices/vllm-configure.yaml declares it (run
as a build, it failed on pip's "No module named 'torch'")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.cli import main
from orchestrator.common.errors import ConfigError
from orchestrator.planning.matrix import load_matrix
from orchestrator.planning.plan import Cell
from orchestrator.run import cellcache

REPO = Path(__file__).resolve().parents[3]


class RecordingBackend:
    name = "local"

    def __init__(self) -> None:
        self.configure_only: list[bool] = []

    def toolchain_key(self, cell: Cell) -> str:
        return "fake"

    def build(self, job: BuildJob) -> BuildOutcome:
        self.configure_only.append(job.configure_only)
        job.build_dir.mkdir(parents=True, exist_ok=True)
        return BuildOutcome("fake", 0.0)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingBackend:
    from orchestrator import building
    from orchestrator.predict import codemodel
    from orchestrator.read.inventory import Inventory

    fake = RecordingBackend()
    monkeypatch.setattr(building.backends, "make_backend", lambda *a, **k: fake)
    # (no CMake ran: the configure tier's prediction is an empty inventory)
    monkeypatch.setattr(codemodel, "predict_inventory", lambda *a, **k: Inventory())
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cellcache.LIMIT_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text(
        "tier: configure\n"
        "project: {source: src}\ncuda: ['13.0']\narchs: ['12.0a']\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']}}\n"
    )
    return fake


def tier_of(out: Path) -> str:
    return str(json.loads((out / "cells" / "cu13.0-12.0a.json").read_text())["tier"])


def test_the_matrix_tier_is_runs_default(tmp_path: Path, backend: RecordingBackend) -> None:
    main(["run", "m.yaml", "--no-cache", "--out", "out"])
    assert backend.configure_only == [True]
    assert tier_of(tmp_path / "out") == "configure"


def test_tier_on_the_command_line_overrides_the_matrix(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    main(["run", "m.yaml", "--no-cache", "--out", "out", "--tier", "build"])
    assert backend.configure_only == [False]
    assert tier_of(tmp_path / "out") == "build"


def test_a_matrix_without_tier_builds(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = tmp_path / "m.yaml"
    path.write_text(
        "project: {source: src}\ncuda: ['13.0']\narchs: ['12.0a']\n"
        "families: {nvfp4: {kernels: [nvfp4], devices: ['12.0']}}\n"
    )
    assert load_matrix(path).tier == "build"
    path.write_text("tier: predict\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"m\.yaml:1:7: tier: 'predict' is not one of"):
        load_matrix(path)


def test_the_vllm_configure_matrix_declares_its_tier(tmp_path: Path) -> None:
    matrices = REPO / "matrices"
    assert load_matrix(matrices / "vllm-configure.yaml", source=tmp_path).tier == "configure"
    assert load_matrix(matrices / "vllm-build.yaml", source=tmp_path).tier == "build"
