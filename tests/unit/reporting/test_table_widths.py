"""The console tables fit 80 and 120 columns (and the 160 of a CI log): no line is
wider than the terminal, and no name that tells rows apart (cell id, family name)
is truncated or split. Rendered from the real default matrix's plan and the real
vLLM families, with hand-written verdicts."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from console_capture import capture_stdout, plain
from rich.cells import cell_len

from orchestrator.archs import ComputeCapability
from orchestrator.cli import main
from orchestrator.judge.check import CheckResult
from orchestrator.judge.expect import MISSING, NOT_APPLICABLE, PRESENT, Verdict
from orchestrator.judge.results import FAILED, PASSED, SKIPPED, CellResult
from orchestrator.planning.matrix import load_families_or_matrix, load_matrix
from orchestrator.planning.plan import plan
from orchestrator.reporting.check_view import print_check
from orchestrator.reporting.summary import print_summary

REPO = Path(__file__).resolve().parents[3]
WIDTHS = (80, 120, 160)


def default_matrix_results() -> list[CellResult]:
    """Every cell of matrix.yaml: runnable ones with a verdict per family × device
    (nvfp4 missing on 12.1 in the cells asking for 12.1a, as in the incident),
    skipped ones with the plan's reason."""
    matrix = load_matrix(REPO / "matrix.yaml")
    results = []
    for cell in plan(matrix):
        if not cell.runnable:
            results.append(CellResult(cell.to_json(), SKIPPED, reason=cell.reason))
            continue
        verdicts = []
        for family in matrix.families:
            for device in cell.to_json()["devices"]:
                cc = ComputeCapability.parse(device)
                status = PRESENT if cc in family.devices else NOT_APPLICABLE
                if family.name == "nvfp4" and device == "12.1" and "12.1a" in cell.id:
                    status = MISSING
                verdicts.append(Verdict(family.name, device, status, reason=f"{family.name} r"))
        failing = any(v.status == MISSING for v in verdicts)
        results.append(CellResult(cell.to_json(), FAILED if failing else PASSED, verdicts=verdicts))
    return results


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], io.StringIO]:
    """The tables are for a terminal of that many columns (a CI log is one of 160)."""
    return lambda width: capture_stdout(monkeypatch, width, terminal=True)


def rendered(stdout: io.StringIO) -> str:
    return plain(stdout.getvalue())


# One-line messages stay one line whatever the width (CI logs are grepped by line):
# the verdict line and the per-family failure lines.
PROSE = ("kernel-matrix:", "❌ ", "⚠️ ", "💥 ", "⏸ ")


def assert_fits(text: str, width: int, names: list[str]) -> None:
    lines = [line for line in text.splitlines() if not line.startswith(PROSE)]
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, too_wide[:3]
    assert "…" not in text
    words = set(re.split(r"[\s│┃|,:]+", text))
    missing = [name for name in names if name not in words]
    assert not missing, f"names truncated or split at {width} columns: {missing[:5]}"


@pytest.mark.parametrize("width", WIDTHS)
def test_run_grid_fits_and_names_every_cell_and_failing_family(
    width: int, terminal: Callable[[int], io.StringIO]
) -> None:
    stdout = terminal(width)
    results = default_matrix_results()
    print_summary(results)
    text = rendered(stdout)
    assert_fits(text, width, [r.id for r in results] + ["nvfp4"])


@pytest.mark.parametrize("width", WIDTHS)
def test_check_view_of_the_vllm_families_fits(
    width: int, terminal: Callable[[int], io.StringIO]
) -> None:
    stdout = terminal(width)
    rules = load_families_or_matrix(REPO / "matrices/vllm.yaml")
    devices = tuple(sorted({d for r in rules for d in r.devices}))
    verdicts = tuple(
        Verdict(
            r.name,
            str(d),
            (PRESENT if d != devices[-1] else MISSING) if d in r.devices else NOT_APPLICABLE,
            reason=f"no kernel of {r.name} is in any library",
        )
        for r in rules
        for d in devices
    )
    result = CheckResult(
        paths=("vllm-0.19.0-cp38-abi3-manylinux_2_31_x86_64.whl",),
        engine="native",
        devices=devices,
        families=tuple(r.name for r in rules),
        built_for={r.name: ("sm_100a", "sm_120a") for r in rules},
        hollow_in={r.name: () for r in rules},
        mismatch={},
        verdicts=verdicts,
        libraries_read=3,
        seconds=1.0,
    )
    print_check(result)
    text = rendered(stdout)
    assert_fits(text, width, [r.name for r in rules])
    # one line per failing family, naming its devices
    failing = [line for line in text.splitlines() if line.startswith("❌")]
    assert len(failing) == len({v.family for v in verdicts if v.status == MISSING})


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_table_fits_with_its_gencode_flags(
    width: int, terminal: Callable[[int], io.StringIO]
) -> None:
    stdout = terminal(width)
    assert main(["plan", str(REPO / "matrix.yaml")]) == 0
    text = rendered(stdout)
    cells = [c.id for c in plan(load_matrix(REPO / "matrix.yaml"))]
    assert_fits(text, width, cells)
    assert "arch=compute_121a,code=sm_121a" in text
    assert "toolchain unavailable: toolchain unavailable" not in text
