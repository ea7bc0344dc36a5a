"""The report, baseline and diff verbs: files, console output, exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from report_data import STABLE, code, kernel, passed_cell, sample_results

from orchestrator.cli import main
from orchestrator.judge.results import CellResult
from orchestrator.read.inventory import Inventory, Library

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "reports" / "results.json"


@pytest.fixture(autouse=True)
def plain_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a CI log sees: no colour, no terminal."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")


def write_run(directory: Path, results: list[CellResult]) -> Path:
    for result in results:
        result.write(directory)
    return directory


def test_the_fixture_is_the_sample_run() -> None:
    """tests/fixtures/reports/results.json is sample_results(); regenerate it with
    merged_json(sample_results()) when report_data.py changes."""
    data = json.loads(FIXTURE.read_text())
    assert data["cells"] == [r.to_json() for r in sample_results()]


def test_report_writes_every_file_and_ends_with_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code_ = main(["report", str(FIXTURE), "--out", str(out)])
    assert code_ == 1
    names = {"results.json", "junit.xml", "summary.md", "index.html", "baseline.json"}
    assert {p.name for p in out.iterdir()} == names
    stdout = capsys.readouterr().out
    assert "\x1b[" not in stdout  # NO_COLOR, no TTY: plain text
    assert "cu12.9-12.1a" in stdout and "Not building NVFP4" in stdout
    assert "nvcc fatal" in stdout  # the crash's log tail
    last = stdout.rstrip().splitlines()[-1]
    assert last.startswith("kernel-matrix: FAILED — 1 passed, 1 failed") and last.endswith(
        "(exit 1)"
    )


def test_report_defaults_to_a_dated_folder_under_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["report", str(FIXTURE), "--history", "reports/history.json"])
    (day,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    assert len(day.name) == 10 and (day / "index.html").is_file()
    assert (tmp_path / "reports" / "history.json").is_file()


def test_report_merges_runs_from_several_jobs(tmp_path: Path) -> None:
    results = sample_results()
    job1 = write_run(tmp_path / "job1", results[:3])
    job2 = write_run(tmp_path / "job2", results[3:])
    main(["report", str(job1), str(job2), "--out", str(tmp_path / "out")])
    merged = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(c["cell"]["id"] for c in merged["cells"]) == sorted(r.id for r in results)


def test_an_all_good_run_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", [passed_cell()])
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("kernel-matrix: OK")


def test_baseline_save_and_diff_find_a_removed_family_and_a_moved_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_run(tmp_path / "good", [passed_cell()])
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", "save", str(good), "--out", str(baseline)]) == 0
    assert "1 cell, 4 kernels" in capsys.readouterr().out
    assert baseline.stat().st_size < 4096

    # Same build, but its FP4 kernels moved into _C: a move, not a regression.
    moved = passed_cell()
    assert moved.inventory is not None
    everything = [k for lib in moved.inventory.libraries for c in lib.cubins for k in c.kernels]
    moved.inventory = Inventory((Library("_C.abi3.so", cubins=(code("sm_120f", *everything),)),))
    run = write_run(tmp_path / "moved", [moved])
    assert main(["diff", str(baseline), str(run)]) == 0
    out = capsys.readouterr().out
    assert f"moved: cu13.0-12.1f: nvfp4_quant_kernel(float*, int) [sm_120f]: {STABLE}" in out
    assert "REGRESSION" not in out
    assert out.rstrip().splitlines()[-1].startswith("kernel-matrix: OK")

    # A family that disappears is a regression (exit 1), listed before anything else.
    lost = passed_cell()
    lost.verdicts[0] = dataclasses.replace(
        lost.verdicts[0], status="missing", served_by=(), kernels=()
    )
    lost.inventory = Inventory(
        (
            Library(
                "_C.abi3.so", cubins=(code("sm_120f", kernel("scaled_mm_sm120_kernel(float*)")),)
            ),
        )
    )
    lost.settle()
    run = write_run(tmp_path / "lost", [lost])
    assert main(["diff", str(baseline), str(run)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: cu13.0-12.1f: nvfp4 on 12.1: present (sm_120f) -> missing" in out
    assert "REGRESSION: cu13.0-12.1f: nvfp4_quant_kernel(float*, int) [sm_120f]" in out
    assert "regressions vs baseline" in out.rstrip().splitlines()[-1]

    # The same through `report --baseline`: in every output format.
    out_dir = tmp_path / "report"
    assert main(["report", str(run), "--baseline", str(baseline), "--out", str(out_dir)]) == 1
    assert "**Regressions**" in (out_dir / "summary.md").read_text()
    assert "Against the baseline" in (out_dir / "index.html").read_text()
    data = json.loads((out_dir / "results.json").read_text())
    assert data["baseline_diff"]["regressions"] == 4  # the family and 3 kernels


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "nope.json"], "no such result file"),
        (["diff", "nope.json", "FIXTURE"], "no such baseline file"),
        (["diff", "FIXTURE", "FIXTURE"], "results file, not a baseline"),
        (["baseline", "save", "FIXTURE"], "--out"),
        (["baseline"], "required"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        str(FIXTURE) if a == "FIXTURE" else str(tmp_path / a) if a.endswith("json") else a
        for a in argv
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_strict_makes_a_missing_toolchain_an_infrastructure_failure(tmp_path: Path) -> None:
    unavailable = next(r for r in sample_results() if r.cell["status"] == "toolchain-unavailable")
    run = write_run(tmp_path / "run", [passed_cell(), unavailable])
    assert main(["report", str(run), "--out", str(tmp_path / "a")]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "b"), "--strict"]) == 3
    assert main(["diff", str(tmp_path / "a" / "baseline.json"), str(run), "--strict"]) == 3


def test_a_report_directory_can_be_reported_again(tmp_path: Path) -> None:
    main(["report", str(FIXTURE), "--out", str(tmp_path / "first")])
    assert main(["report", str(tmp_path / "first"), "--out", str(tmp_path / "again")]) == 1
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert first["cells"] == again["cells"]
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_report_without_results_reports_the_latest_run_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for run_id, result in (
        ("20261130-010000", sample_results()[1]),
        ("20261201-010000", passed_cell()),
    ):
        run = tmp_path / "reports" / run_id
        write_run(run, [result])
        (run / "run.json").write_text("{}")
    assert main(["report"]) == 0  # the latest run only: the older one failed
    assert "reporting the latest run, reports/20261201-010000" in capsys.readouterr().out
    assert (tmp_path / "reports" / "20261201-010000" / "index.html").is_file()
    assert not (tmp_path / "reports" / "20261130-010000" / "index.html").exists()


def test_report_without_results_and_no_run_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 2
    assert "no run under reports/" in capsys.readouterr().err


def test_compare_base_and_head_by_what_each_device_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare BASE HEAD: the family × device pairs that regressed (with the head's
    cause) or got fixed, per cell; JSON and Markdown; exit 1 on a regression, 0 the
    other way round, 2 on bad input. A baseline file is a side too."""
    import jsonschema

    base = write_run(tmp_path / "base", [passed_cell()])
    lost = passed_cell()
    lost.verdicts[0] = dataclasses.replace(
        lost.verdicts[0],
        status="missing",
        served_by=(),
        kernels=(),
        reason="nvfp4 is built only for sm_120a, none of which runs on 12.1",
        guard="CMakeLists.txt:366: cuda_archs_loose_intersection(FP4_ARCHS 12.0a 12.1f) -> ''",
    )
    head = write_run(tmp_path / "head", [lost])
    assert main(["compare", str(base), str(head)]) == 1
    out = capsys.readouterr().out
    assert "cu13.0-12.1f: 1 regressed, 0 fixed, 1 unchanged" in out
    assert (
        "REGRESSION: nvfp4 on 12.1: present (sm_120f) -> missing; cause: CMakeLists.txt:366:" in out
    )
    assert out.rstrip().splitlines()[-1].startswith("kernel-matrix compare: FAILED")

    assert main(["compare", str(base), str(head), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    schema = json.loads(
        (
            Path(__file__).resolve().parents[3] / "orchestrator/schemas/compare.schema.json"
        ).read_text()
    )
    jsonschema.validate(data, schema)
    (regression,) = data["regressions"]
    assert {k: regression[k] for k in ("cell", "family", "device", "base", "head")} == {
        "cell": "cu13.0-12.1f",
        "family": "nvfp4",
        "device": "12.1",
        "base": "present (sm_120f)",
        "head": "missing",
    }
    assert regression["cause"].startswith("CMakeLists.txt:366:")
    assert data["fixed"] == [] and data["unchanged"] == {"cu13.0-12.1f": 1}

    # the other way round: fixed, exit 0; Markdown lists it
    assert main(["compare", str(head), str(base), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert (
        "**Fixed**" in md and "| cu13.0-12.1f | nvfp4 | 12.1 | missing | present (sm_120f) |" in md
    )
    assert "**Regressions**" not in md

    # a baseline file is a side (it keeps no causes)
    assert main(["baseline", "save", str(base), "--out", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "b.json"), str(head), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["regressions"][0]["family"] == "nvfp4"

    # bad input: one line, exit 2
    assert main(["compare", str(tmp_path / "nope"), str(head)]) == 2
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["compare", str(tmp_path / "junk.json"), str(head)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("kernel-matrix: error: ") for line in err)


BASE_GUARD = "CMakeLists.txt:675: cuda_archs_loose_intersection(FP4_ARCHS 12.0f;12.1f 12.1f)"
HEAD_GUARD = "CMakeLists.txt:366: cuda_archs_loose_intersection(FP4_ARCHS 12.0a 12.1f)"


def lost_nvfp4(**changes: object) -> CellResult:
    """passed_cell() whose nvfp4 is missing on 12.1."""
    lost = passed_cell()
    lost.verdicts[0] = dataclasses.replace(
        lost.verdicts[0],
        status="missing",
        served_by=(),
        kernels=(),
        reason="no kernel of nvfp4 is in any library",
        **changes,  # type: ignore[arg-type]
    )
    return lost


def test_a_regression_names_what_governed_the_family_on_the_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare: each regression carries base_cause, the guard that governed the family
    on that device on the base (its verdict's governed_by), beside the head's cause,
    in JSON, Markdown and on the console; "" from a baseline, which keeps none."""
    import jsonschema

    present = passed_cell()
    present.verdicts[0] = dataclasses.replace(present.verdicts[0], governed_by=BASE_GUARD)
    base = write_run(tmp_path / "base", [present])
    head = write_run(tmp_path / "head", [lost_nvfp4(guard=HEAD_GUARD, governed_by=HEAD_GUARD)])

    assert main(["compare", str(base), str(head), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    schema = json.loads((REPO / "orchestrator/schemas/compare.schema.json").read_text())
    jsonschema.validate(data, schema)
    (regression,) = data["regressions"]
    assert (regression["cause"], regression["base_cause"]) == (HEAD_GUARD, BASE_GUARD)

    assert main(["compare", str(base), str(head), "--markdown"]) == 1
    md = capsys.readouterr().out
    assert f"| missing | {HEAD_GUARD}; on the base: {BASE_GUARD} |" in md

    assert main(["compare", str(base), str(head)]) == 1
    out = capsys.readouterr().out
    assert f"-> missing; cause: {HEAD_GUARD}; on the base: {BASE_GUARD}" in out

    # a fix carries neither; a baseline keeps no governing lines
    assert main(["compare", str(head), str(base), "--json"]) == 0
    (fixed,) = json.loads(capsys.readouterr().out)["fixed"]
    assert (fixed["cause"], fixed["base_cause"]) == ("", "")
    assert main(["baseline", "save", str(base), "--out", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "b.json"), str(head), "--json"]) == 1
    (regression,) = json.loads(capsys.readouterr().out)["regressions"]
    assert (regression["cause"], regression["base_cause"]) == (HEAD_GUARD, "")


def test_a_head_without_any_guard_for_the_family_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The family's sources and guard were deleted on the head: its trace shows no
    guard or generator for them (governed_by ""), and the cause says so; results
    that do not know (governed_by absent) keep the verdict's reason alone."""
    present = passed_cell()
    present.verdicts[0] = dataclasses.replace(present.verdicts[0], governed_by=BASE_GUARD)
    base = write_run(tmp_path / "base", [present])
    head = write_run(tmp_path / "head", [lost_nvfp4(governed_by="")])
    assert main(["compare", str(base), str(head), "--json"]) == 1
    (regression,) = json.loads(capsys.readouterr().out)["regressions"]
    assert regression["cause"] == (
        "no kernel of nvfp4 is in any library; "
        "no CMake guard or generator governs its sources on the head"
    )
    assert regression["base_cause"] == BASE_GUARD
    unknown = write_run(tmp_path / "unknown", [lost_nvfp4()])
    assert main(["compare", str(base), str(unknown), "--json"]) == 1
    (regression,) = json.loads(capsys.readouterr().out)["regressions"]
    assert regression["cause"] == "no kernel of nvfp4 is in any library"
