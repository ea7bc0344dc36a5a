"""Baselines: small summaries, and the regressions, moves and news found against them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from report_data import LIB, NASTY, STABLE, code, failed_cell, kernel, passed_cell, sample_results

from orchestrator.common.errors import InputFileError
from orchestrator.judge.baseline import Baseline, load_baseline, save_baseline, summarize
from orchestrator.judge.compare import (
    CELL_NEW,
    CELL_UNCHECKED,
    FAMILY_CHANGED,
    FAMILY_LOST,
    KERNEL_HOLLOW,
    KERNEL_LOST,
    KERNEL_MOVED,
    KERNEL_NEW,
    KERNEL_UNLOADED_DROPPED,
    SIZE_CHANGED,
    combined_exit_code,
    compare,
    diff_results,
)
from orchestrator.judge.expect import MISSING
from orchestrator.judge.results import ERROR, NOT_RUN, CellResult
from orchestrator.read.inventory import Inventory, Library


def roundtrip(baseline: Baseline, tmp_path: Path) -> Baseline:
    path = tmp_path / "baseline.json"
    save_baseline(baseline, path)
    return load_baseline(path)


def test_a_baseline_is_a_small_summary_that_round_trips(tmp_path: Path) -> None:
    results = sample_results()
    baseline = roundtrip(summarize(results), tmp_path)
    cell = baseline.cells["cu13.0-12.1f"]
    assert cell.families[("nvfp4", "12.1")].served_by == ("sm_120f",)
    assert {c.library for c in cell.kernels["nvfp4_quant_kernel(float*, int)"]} == {STABLE}
    assert baseline.cells["cu12.8-10.0f"].kernels is None  # crashed: constrains nothing
    data = json.loads((tmp_path / "baseline.json").read_text())
    text = json.dumps(data)
    assert "instructions" not in text and "mangled" not in text  # not an inventory
    assert data["cells"]["cu13.0-12.1f"]["kernels"][NASTY] == [[LIB, "sm_120f", 512, False]]
    assert compare(baseline, summarize(results)).findings == []


def test_a_family_lost_on_a_device_is_a_regression() -> None:
    old = summarize([passed_cell()])
    new = passed_cell()
    new.verdicts[0] = dataclasses.replace(new.verdicts[0], status=MISSING, served_by=())
    diff = diff_results(old, [new])
    (lost,) = diff.of(FAMILY_LOST)
    assert lost.subject == "nvfp4 on 12.1" and lost.regression
    assert lost.before == "present (sm_120f)" and lost.after == "missing"
    assert diff.exit_code == 1


def test_a_family_no_longer_checked_is_a_regression() -> None:
    new = passed_cell()
    new.verdicts = [v for v in new.verdicts if v.family != "nvfp4"]
    (lost,) = diff_results(summarize([passed_cell()]), [new]).regressions
    assert lost.kind == FAMILY_LOST and lost.after == "no longer checked"


def test_a_kernel_moved_to_another_library_is_a_move_not_a_regression() -> None:
    """vLLM moved its FP4 kernels from _C to _C_stable_libtorch: not a regression."""
    old = passed_cell()
    old.inventory = Inventory(
        (Library(LIB, cubins=(code("sm_120f", kernel("nvfp4_quant(int)", 900)),)),)
    )
    new = passed_cell()
    new.inventory = Inventory(
        (Library(STABLE, cubins=(code("sm_120f", kernel("nvfp4_quant(int)", 900)),)),)
    )
    diff = diff_results(summarize([old]), [new])
    assert diff.regressions == []
    (moved,) = diff.of(KERNEL_MOVED)
    assert (moved.subject, moved.before, moved.after, moved.archs) == (
        "nvfp4_quant(int)",
        LIB,
        STABLE,
        ("sm_120f",),
    )
    assert diff.exit_code == 0


def test_a_kernel_that_disappears_for_a_requested_device_is_a_kernel_regression() -> None:
    """Judged by what each requested device loads (the cell asks for 10.0f and 12.1f):
    the sm_100f copy served 10.0 and is gone. Kernel regressions are details: they
    fail only with strict."""
    two_archs = Library(
        LIB, cubins=(code("sm_100f", kernel("mla(int)")), code("sm_120f", kernel("mla(int)")))
    )
    one_arch = Library(STABLE, cubins=(code("sm_120f", kernel("mla(int)")),))
    old, new = passed_cell(), passed_cell()
    for result in (old, new):
        result.cell = {**result.cell, "archs": "10.0f;12.1f"}
    old.inventory, new.inventory = Inventory((two_archs,)), Inventory((one_arch,))
    diff = diff_results(summarize([old]), [new])
    (lost,) = diff.of(KERNEL_LOST)
    assert (lost.archs, lost.devices, lost.before, lost.after) == (
        ("sm_100f",),
        ("10.0",),
        f"sm_100f in {LIB}",
        "gone",
    )
    assert lost.regression and diff.regressions == [lost]
    assert [m.archs for m in diff.of(KERNEL_MOVED)] == [("sm_120f",)]
    assert diff.exit_code == 0 and diff.failing == []
    assert diff_results(summarize([old]), [new], strict=True).exit_code == 1


def test_code_that_no_requested_device_loads_is_information() -> None:
    """The cell asks for 12.1f only: losing the sm_100f copy serves no device less."""
    two_archs = Library(
        LIB, cubins=(code("sm_100f", kernel("mla(int)")), code("sm_120f", kernel("mla(int)")))
    )
    old, new = passed_cell(), passed_cell()
    old.inventory = Inventory((two_archs,))
    new.inventory = Inventory((Library(LIB, cubins=(code("sm_120f", kernel("mla(int)")),)),))
    diff = diff_results(summarize([old]), [new], strict=True)
    assert diff.regressions == [] and diff.exit_code == 0
    (dropped,) = diff.of(KERNEL_UNLOADED_DROPPED)
    assert (dropped.subject, dropped.archs) == ("mla(int)", ("sm_100f",))


def test_new_kernels_size_changes_and_hollowed_kernels() -> None:
    old, new = passed_cell(), passed_cell()
    old.inventory = Inventory((Library(LIB, cubins=(code("sm_120f", kernel("a()", 100)),)),))
    new.inventory = Inventory(
        (
            Library(
                LIB,
                cubins=(code("sm_120f", kernel("a()", 64, hollow=True), kernel("b()", 10)),),
            ),
        )
    )
    diff = diff_results(summarize([old]), [new])
    assert [f.subject for f in diff.of(KERNEL_NEW)] == ["b()"]
    (size,) = diff.of(SIZE_CHANGED)
    assert size.delta == -36
    (hollow,) = diff.of(KERNEL_HOLLOW)
    assert hollow.regression and hollow.archs == ("sm_120f",)


def test_served_by_changes_and_new_cells_are_information() -> None:
    new = passed_cell()
    new.verdicts[0] = dataclasses.replace(new.verdicts[0], served_by=("sm_121a",))
    extra = failed_cell()
    diff = diff_results(summarize([passed_cell()]), [new, extra])
    assert [f.kind for f in diff.findings] == [FAMILY_CHANGED, CELL_NEW]
    assert diff.exit_code == 0


@pytest.mark.parametrize("status", [ERROR, NOT_RUN, "absent"])
def test_a_baseline_cell_not_checked_now_is_never_a_pass(status: str) -> None:
    old = summarize([passed_cell()])
    results: list[CellResult] = []
    if status != "absent":
        results = [CellResult(cell=passed_cell().cell, status=status, reason="boom")]
    diff = diff_results(old, results)
    assert [f.kind for f in diff.findings] == [CELL_UNCHECKED]
    assert diff.exit_code == 3
    assert combined_exit_code(0, diff) == 3
    assert combined_exit_code(1, diff) == 1  # a missing kernel wins


def test_unreadable_baselines_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such baseline"):
        load_baseline(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not a kernel-matrix baseline: not JSON"):
        load_baseline(bad)
    bad.write_text(json.dumps({"schema_version": 1, "run": {}, "cells": []}))
    with pytest.raises(InputFileError, match="results file, not a baseline"):
        load_baseline(bad)
    data = summarize(sample_results()).to_json()
    data["cells"]["cu13.0-12.1f"]["kernels"][NASTY] = [[LIB, "sm_120f", "big", False]]
    bad.write_text(json.dumps(data))
    with pytest.raises(InputFileError, match=r"bad.json: not a kernel-matrix baseline: .*kernels"):
        load_baseline(bad)
