"""The PR and nightly workflows' logic, replayed locally: plan -> one job per cell ->
report -> diff against the nightly baseline (see workflow_replay.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from workflow_replay import replay_workflow

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def small_matrix(workspace: Path, *, bug: bool) -> None:
    """Two real cells of the sample extension; ``bug`` turns on the 37725 guards."""
    shutil.copytree(REPO / "examples/sample_ext", workspace / "ext")
    (workspace / "matrix.yaml").write_text(
        yaml.safe_dump(
            {
                "project": {
                    "source": "ext",
                    "artifacts": ["*.so"],
                    "cmake_options": {"SAMPLE_EXT_BUG_37725": bug},
                },
                "cuda": ["13.0", "12.9"],
                "archs": ["9.0a", "12.1a"],
                "families": "ext/families.yaml",
            }
        )
    )


def test_nightly_then_a_pull_request_that_drops_nvfp4_for_12_1(tmp_path: Path) -> None:
    nightly = tmp_path / "nightly"
    nightly.mkdir()
    small_matrix(nightly, bug=False)
    replay, results = replay_workflow(REPO, nightly, {"mode": "nightly"})
    log = "\n".join(replay.log)
    matrix = json.loads(results["plan"]["matrix"])
    # CUDA 12.9 has no compiler here: planned out, not run, not dropped silently.
    assert [e["cell"] for e in matrix["include"]] == ["cu13.0-9.0a", "cu13.0-12.1a"], log
    assert results["report"]["verdict"]["exit-code"] == "0", log
    assert (replay.artifacts / "kernel-matrix-baseline" / "new-baseline/baseline.json").is_file()
    assert (replay.artifacts / "kernel-matrix-report" / "report/index.html").is_file()
    assert (replay.artifacts / "kernel-matrix-cell-cu13.0-12.1a").is_dir()

    # The nightly's artifacts become the baseline store that `gh` serves to the PR.
    store = tmp_path / "nightly-artifacts"
    (store / "kernel-matrix-baseline").mkdir(parents=True)
    shutil.copy(
        replay.artifacts / "kernel-matrix-baseline/new-baseline/baseline.json",
        store / "kernel-matrix-baseline/baseline.json",
    )
    pr = tmp_path / "pr"
    pr.mkdir()
    small_matrix(pr, bug=True)
    replay, results = replay_workflow(REPO, pr, {"mode": "pr"}, previous_runs=store)
    log = "\n".join(replay.log)
    assert results["report"]["verdict"]["exit-code"] == "1", log
    assert results["report"]["__failed__"]["step"].startswith("Fail on a missing kernel"), log
    assert "baseline from nightly run" in log
    summary = (pr / "step_summary.md").read_text()
    assert "❌" in summary and "nvfp4" in summary
    assert "regression" in summary.lower()
    junit = (pr / "report" / "junit.xml").read_text()
    assert "Not building NVFP4" in junit
    assert not (replay.artifacts / "kernel-matrix-baseline").exists()  # no refresh on a PR
