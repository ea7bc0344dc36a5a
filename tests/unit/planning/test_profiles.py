"""The profiles this tool ships: ``--families vllm`` names one, and their truth tables
answer which release serves a family on a device (what ``check`` suggests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.archs import ComputeCapability
from orchestrator.planning.matrix import load_families_or_matrix
from orchestrator.planning.profiles import (
    PROFILES,
    releases_serving,
    resolve_families,
    shipped_profiles,
    truth_rows,
)

ROOT = Path(__file__).resolve().parents[3]


def test_a_profile_is_named_by_its_name_and_a_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shipped_profiles() == ["sgl-kernel", "vllm"]
    assert resolve_families(Path("vllm")) == PROFILES / "vllm.yaml"
    assert load_families_or_matrix(resolve_families(Path("sgl-kernel")))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vllm").write_text("families: {}\n")  # a file of that name is the user's
    assert resolve_families(Path("vllm")) == Path("vllm")
    assert resolve_families(Path("other")) == Path("other")  # the loader says it is missing


def test_the_shipped_profiles_are_the_repositorys() -> None:
    """matrices/vllm.yaml (what the docs name) is the shipped profile itself."""
    for name in ("vllm.yaml", "vllm-truth.md", "sgl-kernel.yaml", "sgl-kernel-truth.md"):
        assert (ROOT / "matrices" / name).resolve() == PROFILES / name


def test_every_truth_cell_is_read() -> None:
    """Ten vLLM tables (7 x86 releases, 3 aarch64), each family × device cell one of
    present / missing / hollow."""
    rows = truth_rows("vllm")
    tables = {(r.release, r.platform) for r in rows}
    assert len(tables) == 10
    assert {r.platform for r in rows} == {"x86_64", "aarch64"}
    assert {r.status for r in rows} == {"present", "missing", "hollow"}
    assert {r.device for r in rows if r.platform == "aarch64"} >= {"8.7", "11.0", "12.1"}


def test_which_release_serves_a_family() -> None:
    """vllm-truth.md: 0.19.0 (CUDA 12.9) built NVFP4 only as sm_120a, which 12.1 (DGX
    Spark) cannot load; the CUDA 13 wheels from 0.21.0 build 12.0f and serve it."""
    spark = ComputeCapability(12, 1)
    assert releases_serving("vllm", "nvfp4_quant", spark, "x86_64") == [
        "0.33.0",
        "0.25.0",
        "0.21.0",
    ]
    assert "0.19.0" not in releases_serving("vllm", "nvfp4_quant", spark, "aarch64")
    assert releases_serving("vllm", "no_such_family", spark, "x86_64") == []
