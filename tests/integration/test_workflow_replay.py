"""The PR and nightly workflows' logic, replayed locally: plan -> one job per cell ->
report -> diff against the nightly baseline; and the pull-request path that runs base
and head in one job and compares them (see workflow_replay.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_replay import replay_compare, replay_workflow

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


def test_a_pull_request_compared_with_its_base_comments_once_and_updates(tmp_path: Path) -> None:
    """inputs.base-ref: the compare job configures base and head of a real checkout
    (the sample extension; the head narrows the SM12x guard, the 37725 class), writes
    the comparison into the step summary, posts one PR comment, updates that same
    comment on the next push, and fails on the regression only."""
    workspace = tmp_path / "caller"
    workspace.mkdir()
    small_matrix(workspace, bug=False)
    (workspace / "matrix.yaml").write_text(
        yaml.safe_dump(
            {
                "project": {"source": "ext", "artifacts": ["*.so"]},
                "cuda": ["13.0"],
                "archs": ["12.0a;12.1f"],
                "families": "ext/families.yaml",
            }
        )
    )

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(workspace), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    (workspace / ".gitignore").write_text(
        ".artifacts/\n.fake-bin/\n.gh-comments/\npr/\nbuild/\nreports/\n"
    )
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    lists = workspace / "ext" / "CMakeLists.txt"
    lists.write_text(
        lists.read_text().replace('set(SM120_ALLOWED "12.0f;12.1f")', 'set(SM120_ALLOWED "12.0a")')
    )
    git("commit", "-q", "-am", "head")
    inputs = {"mode": "pr", "tier": "configure", "source": "ext", "base-ref": "HEAD~1"}
    event = {"pull_request": {"number": 5}, "repository": {"default_branch": "main"}}
    replay, outputs = replay_compare(REPO, workspace, inputs, event)
    log = "\n".join(replay.log)
    assert outputs["compare"]["exit-code"] == "1", log
    assert outputs["__failed__"]["step"].startswith("Fail on a regression"), log
    summary = (workspace / "step_summary.md").read_text()
    assert "| scaled_mm_sm120 | 12.1 | present (sm_121f) | missing |" in summary, summary
    comments = sorted((workspace / ".gh-comments").iterdir())
    assert [c.name for c in comments] == ["1"], log
    assert comments[0].read_text().startswith("<!-- kernel-matrix compare -->")
    assert (replay.artifacts / "kernel-matrix-compare" / "pr" / "compare.json").is_file()

    # the next push fixes it: the same comment is updated, no second one
    lists.write_text(
        lists.read_text().replace('set(SM120_ALLOWED "12.0a")', 'set(SM120_ALLOWED "12.0f;12.1f")')
    )
    git("commit", "-q", "-am", "fix")
    shutil.rmtree(workspace / "pr")
    (workspace / "step_summary.md").unlink()
    replay, outputs = replay_compare(REPO, workspace, {**inputs, "base-ref": "HEAD~2"}, event)
    log = "\n".join(replay.log)
    assert outputs["compare"]["exit-code"] == "0", log
    assert [c.name for c in sorted((workspace / ".gh-comments").iterdir())] == ["1"], log
    assert "No family × device changed" in (workspace / ".gh-comments" / "1").read_text()
