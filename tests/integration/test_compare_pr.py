"""Pull-request time, for real: ``run --tier configure --source HEAD-TREE --base-source
REF`` configures the base (a git ref of the head's checkout, exported with git archive)
and the head with real CMake and nvcc, and fails only on what the head lost.

The change is made by hand in a throwaway git repository holding the sample
extension: its head narrows the scaled_mm SM12x guard of the CUDA >= 13 branch from
"12.0f;12.1f" to "12.0a" (the 37725 class of mistake). With TORCH_CUDA_ARCH_LIST
"12.0a;12.1f" the base builds sm_120a (12.0a requested, matched by 12.0f) and sm_121f
(12.1f); the head only sm_120a (read by hand in its CMakeLists.txt and
cmake/archs.cmake). So DGX Spark (12.1) loses scaled_mm_sm120, 12.0 keeps it, and
nothing else changes: one regression, with the guard as it ran on the head."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_ext"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_a_pull_request_that_narrows_a_guard_fails_on_that_device_only(tmp_path: Path) -> None:
    repo = tmp_path / "sample_ext"
    shutil.copytree(SAMPLE, repo, ignore=shutil.ignore_patterns("build*"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    lists = repo / "CMakeLists.txt"
    text = lists.read_text()
    assert text.count('set(SM120_ALLOWED "12.0f;12.1f")') == 1
    lists.write_text(text.replace('set(SM120_ALLOWED "12.0f;12.1f")', 'set(SM120_ALLOWED "12.0a")'))
    git(repo, "commit", "-q", "-am", "head: the SM12x guard forgets 12.1")
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(
        f"project: {{name: sample_ext, source: {repo}, build: cmake, artifacts: ['*.so']}}\n"
        'cuda: ["13.0"]\n'
        'archs: ["12.0a;12.1f"]\n'
        f"families: {SAMPLE / 'families.yaml'}\n"
    )
    out = tmp_path / "pr"
    code = main([
        "run", str(matrix), "--tier", "configure", "--source", str(repo),
        "--base-source", "HEAD~1", "--out", str(out), "--build-dir", str(tmp_path / "build"),
    ])  # fmt: skip
    assert code == 1
    data = json.loads((out / "compare.json").read_text())
    assert [
        (r["cell"], r["family"], r["device"], r["base"], r["head"]) for r in data["regressions"]
    ] == [("cu13.0-12.0a_12.1f", "scaled_mm_sm120", "12.1", "present (sm_121f)", "missing")]
    # the guard that decided it, as it ran on the head
    archs = (SAMPLE / "cmake" / "archs.cmake").read_text().splitlines()
    guard = 1 + next(
        i
        for i, line in enumerate(archs)
        if line.strip().startswith("cuda_archs_loose_intersection(")
    )
    assert data["regressions"][0]["cause"].startswith(
        f'cmake/archs.cmake:{guard}: cuda_archs_loose_intersection(_GF_ARCHS 12.0a "12.0a;12.1f")'
    )
    # and the same guard as it ran on the base, where it kept 12.1f
    assert data["regressions"][0]["base_cause"].startswith(
        f"cmake/archs.cmake:{guard}: cuda_archs_loose_intersection(_GF_ARCHS "
        '"12.0f;12.1f" "12.0a;12.1f")'
    )
    assert data["fixed"] == [] and data["unchanged"] == {"cu13.0-12.0a_12.1f": 7}
    # 12.0 is still served, by the same sm_120a
    base_cells = json.loads(next((out / "base" / "cells").glob("*.json")).read_text())
    head_cells = json.loads(next((out / "head" / "cells").glob("*.json")).read_text())
    on_12_0 = [
        (v["status"], v["served_by"])
        for side in (base_cells, head_cells)
        for v in side["verdicts"]
        if (v["family"], v["device"]) == ("scaled_mm_sm120", "12.0")
    ]
    assert on_12_0 == [("present", ["sm_120a"]), ("present", ["sm_120a"])]
    markdown = (out / "compare.md").read_text()
    assert (
        "| cu13.0-12.0a_12.1f | scaled_mm_sm120 | 12.1 | present (sm_121f) | missing |" in markdown
    )
    assert "; on the base: cmake/archs.cmake:" in markdown
    # the user's checkout is untouched
    status = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True
    )
    assert status.stdout == ""
