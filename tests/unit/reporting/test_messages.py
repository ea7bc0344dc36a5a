"""The words of the console and of the JSON outputs: the configure tier says it
predicts, a skipped cell says why in the plan's word, a family failing on several
devices is one line naming them, every JSON the tool prints is versioned and valid
against its published schema, and report/--strict lines say what they count."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
from report_data import passed_cell, sample_results, unavailable_cell, unsupported_cell

from orchestrator.archs import ComputeCapability
from orchestrator.building.backends import BuildJob, BuildOutcome
from orchestrator.building.recipe import BuildRecipe, Step, run_recipe
from orchestrator.cli import main
from orchestrator.judge.check import CheckResult
from orchestrator.judge.compare import CELL_UNCHECKED, KERNEL_LOST, Finding
from orchestrator.judge.expect import MISSING, PRESENT, Verdict
from orchestrator.judge.results import infra_summary
from orchestrator.planning.matrix import load_matrix
from orchestrator.planning.plan import Cell, plan
from orchestrator.reporting.markdown import render_markdown
from orchestrator.reporting.summary import cell_line, failure_lines, print_summary, verdict_line
from orchestrator.run.runner import RunOptions, run_cells

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "orchestrator" / "schemas"


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("KERNEL_MATRIX_CACHE", str(tmp_path / "cache"))


def validate(document: object, schema: str) -> None:
    jsonschema.validate(document, json.loads((SCHEMAS / schema).read_text()))


def test_the_configure_tier_says_it_predicts_in_every_output() -> None:
    predicted = dataclasses.replace(passed_cell(), tier="configure")
    assert "predicted to pass" in cell_line(predicted)
    assert "passed" not in cell_line(predicted)
    line = verdict_line([predicted], 0)
    assert line.startswith("kernel-matrix: OK (predicted; configure tier:")
    assert "nothing was compiled" in render_markdown([predicted], exit_code=0)
    assert "predicted" not in verdict_line([passed_cell()], 0)


def test_skipped_cells_use_the_plans_words() -> None:
    assert cell_line(unsupported_cell()).startswith("➖ cu12.8-12.1a unsupported: CUDA 12.8")
    assert " toolchain unavailable: " in cell_line(unavailable_cell())
    line = verdict_line([unsupported_cell(), unavailable_cell()], 0)
    assert "2 skipped (1 unsupported, 1 toolchain unavailable)" in line


def test_a_family_missing_on_several_devices_is_one_line_naming_them() -> None:
    reason = "no kernel of nvfp4 is in any library"
    verdicts = [Verdict("nvfp4", d, MISSING, reason=reason) for d in ("10.0", "10.3", "12.1")]
    verdicts.append(Verdict("mla", "10.0", PRESENT))
    assert failure_lines([v for v in verdicts if v.failing], prefix="cu13.0-bug: ") == [
        f"❌ cu13.0-bug: nvfp4 missing on 10.0, 10.3, 12.1: {reason}"
    ]


def test_reasons_naming_their_device_merge_into_one_line_naming_the_devices() -> None:
    verdicts = [
        Verdict(
            "nvfp4", device, MISSING,
            reason=f"nvfp4 is built only for sm_100a, sm_120a, none of which runs on {name}",
        )
        for device, name in (("10.3", "10.3 (B300, GB300)"), ("12.1", "12.1 (DGX Spark (GB10))"))
    ]  # fmt: skip
    assert failure_lines(verdicts) == [
        "❌ nvfp4 missing on 10.3 (B300, GB300), 12.1 (DGX Spark (GB10)): built only for "
        "sm_100a, sm_120a, none of which runs on these devices"
    ]
    assert failure_lines(verdicts[:1]) == [
        "❌ nvfp4 missing on 10.3 (B300, GB300): built only for sm_100a, sm_120a, none of "
        "which runs on 10.3 (B300, GB300)"
    ]


def test_plan_json_is_versioned_and_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(REPO / "matrix.yaml"), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 1
    validate(document, "plan.schema.json")


def test_check_json_is_versioned_and_valid() -> None:
    device = ComputeCapability.parse("12.1")
    result = CheckResult(
        paths=("x.whl",),
        engine="native",
        devices=(device,),
        families=("nvfp4",),
        built_for={"nvfp4": ("sm_120a",)},
        hollow_in={"nvfp4": ()},
        mismatch={},
        verdicts=(Verdict("nvfp4", "12.1", MISSING, reason="r"),),
        libraries_read=1,
        seconds=0.5,
    )
    document = result.to_json()
    assert document["schema_version"] == 1
    validate(document, "check.schema.json")


def test_verify_json_checks_match_their_schema() -> None:
    from orchestrator.judge.verify import VERIFY_SCHEMA_VERSION, Check

    check = Check("nvfp4", "9.0", "missing", "", "no kernel image", "launch error", "")
    document = {"schema_version": VERIFY_SCHEMA_VERSION, "device": "9.0"}
    validate({**document, "checks": [check.to_json()]}, "verify.schema.json")


def test_strict_summary_says_what_it_counts() -> None:
    results = [passed_cell(), *sample_results()]
    line = infra_summary(results, strict=True)
    assert line.startswith("3 cells could not be built or checked (")
    assert "1 failed to build or check, 1 not run, 1 without a toolchain (--strict)" in line
    assert "(and" not in line and "; the first, cu12.8-10.0f" in line


def test_report_names_where_the_history_is_and_leaves_no_lock_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, history = tmp_path / "run", tmp_path / "reports" / "history.json"
    passed_cell().write(run)
    out = tmp_path / "reports" / "2026-12-01"
    assert main(["report", str(run), "--out", str(out), "--history", str(history)]) == 0
    stdout = capsys.readouterr().out
    assert f"updated {history}" in stdout
    assert "history.json" not in stdout.split(f"reports in {out}:")[1].splitlines()[0]
    assert sorted(p.name for p in history.parent.iterdir()) == ["2026-12-01", "history.json"]


class FailingStepBackend:
    """A backend whose build is one recipe step, ``wheel``, that exits 1: the runner,
    the recipe and the reports as a real failed build meets them."""

    name = "local"

    def toolchain_key(self, cell: Cell) -> str:
        return "none"

    def build(self, job: BuildJob) -> BuildOutcome:
        job.build_dir.mkdir(parents=True, exist_ok=True)
        run_recipe(BuildRecipe((Step("wheel", ("false",), job.build_dir),), {}), lambda _: 1)
        raise AssertionError("run_recipe returned after a failed step")


def test_a_failed_build_names_its_cell_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text(
        "project: {source: src, artifacts: ['*.so']}\ncuda: ['13.0']\narchs: ['12.1a']\n"
        "families: {nvfp4: {kernels: [k], devices: ['12.1']}}\n"
    )
    matrix = load_matrix(tmp_path / "m.yaml")
    options = RunOptions(out_dir=tmp_path / "out", build_root=tmp_path / "b", use_cache=False)
    (result,) = run_cells(matrix, plan(matrix), FailingStepBackend(), options)
    assert result.reason == "wheel failed (exit 1)"
    assert cell_line(result).endswith("cu13.0-12.1a error: wheel failed (exit 1)")
    assert infra_summary([result]).endswith("; cu13.0-12.1a: wheel failed (exit 1)")
    print_summary([result])
    printed = capsys.readouterr().out
    assert "cu13.0-12.1a: wheel failed (exit 1)" in printed
    assert "cu13.0-12.1a: cu13.0-12.1a" not in printed


def test_an_unchecked_baseline_cell_is_named_once() -> None:
    finding = Finding(CELL_UNCHECKED, "cu13.0-9.0a", "cu13.0-9.0a", "passed", "error")
    assert finding.describe() == "cu13.0-9.0a: passed -> error"
    kernel = Finding(KERNEL_LOST, "cu13.0-9.0a", "_Z1kv", "sm_90a", "")
    assert kernel.describe() == "cu13.0-9.0a: _Z1kv: sm_90a"


def test_counts_take_the_number_of_their_noun() -> None:
    one = [passed_cell()]
    assert "**1 cell:**" in render_markdown(one, exit_code=0)
    assert ", 0 errors, " in verdict_line(one, 0)
    error = dataclasses.replace(passed_cell(), status="error", reason="wheel failed (exit 1)")
    assert ", 1 error, " in verdict_line([error], 3)


def test_the_run_header_counts_in_the_singular_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "m.yaml").write_text(  # CUDA 12.8 has no f targets: skipped, nothing built
        "project: {source: src}\ncuda: ['12.8']\narchs: ['12.1f']\n"
        "families: {nvfp4: {kernels: [k], devices: ['12.1']}}\n"
    )
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    argv = ["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--no-cache"]
    assert main([*argv, "--build-dir", str(tmp_path / "b")]) == 0
    assert "kernel-matrix: 1 cell (0 to run, 1 skipped), 1 in parallel × 1 build thread; " in (
        capsys.readouterr().out
    )
