"""Never a false pass: a cell whose build failed, whose artifacts are missing, whose
probe errored, that was interrupted, or whose kernels are missing or hollow, must look
failed in *every* output format and make the exit code non-zero -- even when it is
the only cell of the run, so nothing else can carry the failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from report_checks import assert_reports_fail
from report_data import error_cell, failed_cell, not_run_cell, passed_cell

from orchestrator.cli import main
from orchestrator.judge.expect import HOLLOW, MISSING
from orchestrator.judge.results import ERROR, CellResult


def build_crash() -> CellResult:
    return error_cell()


def no_artifacts() -> CellResult:
    cell = passed_cell()
    return CellResult(
        cell=cell.cell,
        status=ERROR,
        reason=f"{cell.id}: the build succeeded but no artifact matched *.so in build/{cell.id}",
    )


def probe_crash() -> CellResult:
    cell = passed_cell()
    return CellResult(
        cell=cell.cell, status=ERROR, reason="cuobjdump crashed (exit 139) on _C.abi3.so"
    )


def missing_family() -> CellResult:
    cell = failed_cell()
    cell.verdicts = [v for v in cell.verdicts if v.status == MISSING]
    return cell


def hollow_family() -> CellResult:
    cell = failed_cell()
    cell.verdicts = [v for v in cell.verdicts if v.status == HOLLOW]
    return cell


def arch_without_code() -> CellResult:
    cell = passed_cell()
    cell.archs_without_code = ["sm_121a"]
    cell.settle()
    return cell


def status_says_passed_but_a_verdict_fails() -> CellResult:
    """A hand-edited or inconsistent merged input: the verdicts win."""
    cell = passed_cell()
    cell.verdicts[0] = dataclasses.replace(cell.verdicts[0], status=MISSING)
    return cell


def unknown_status() -> CellResult:
    cell = passed_cell()
    cell.status = "running"
    return cell


CASES: dict[str, Callable[[], CellResult]] = {
    "build crash": build_crash,
    "no artifacts": no_artifacts,
    "probe crash": probe_crash,
    "interrupted": not_run_cell,
    "missing": missing_family,
    "hollow": hollow_family,
    "arch without code": arch_without_code,
    "inconsistent": status_says_passed_but_a_verdict_fails,
    "unknown status": unknown_status,
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_never_a_false_pass(make: Callable[[], CellResult], tmp_path: Path) -> None:
    cell = make()
    cell.write(tmp_path / "run")
    out = tmp_path / "out"
    code = main(["report", str(tmp_path / "run"), "--out", str(out)])
    assert code != 0

    if make is unknown_status:
        # Validated on load against results.schema.json: refused as the user's input
        # (exit 2, naming the field), never reported as anything, let alone a pass.
        assert code == 2 and not (out / "results.json").exists()
    else:
        assert_reports_fail(out, cell.id, cell.status)

    # Baseline diff: a previously good cell that now fails is never "no regression, exit 0"
    good = tmp_path / "good"
    passed_cell().write(good)
    main(["baseline", "save", str(good), "--out", str(tmp_path / "baseline.json")])
    assert main(["diff", str(tmp_path / "baseline.json"), str(tmp_path / "run")]) != 0
