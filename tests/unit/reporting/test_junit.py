"""junit.xml: the mapping of verdicts to JUnit results, and validity against the two
JUnit dialects GitHub's reporters accept (see tests/fixtures/junit/README.md)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import xmlschema
from junitparser import Error, Failure, JUnitXml, Skipped
from report_data import CRASH, NASTY, SKIP_LINE, sample_results, synthetic_results

from orchestrator.reporting.junit import junit_text, write_junit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "junit"
SCHEMAS = ("junit-10.xsd", "JUnit.xsd")


@functools.cache
def schema(name: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(FIXTURES / name))


def outcomes(xml: JUnitXml) -> dict[tuple[str, str], str]:
    out = {}
    for suite in xml:
        for case in suite:
            kinds = {type(r) for r in case.result}
            word = (
                "failure"
                if Failure in kinds
                else "error"
                if Error in kinds
                else "skipped"
                if Skipped in kinds
                else "pass"
            )
            out[(suite.name, case.name)] = word
    return out


@pytest.mark.parametrize("name", SCHEMAS)
def test_junit_is_valid_against_both_dialects(name: str, tmp_path: Path) -> None:
    path = write_junit(sample_results(), tmp_path / "junit.xml")
    schema(name).validate(str(path))


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_large_matrix_is_valid_too(name: str) -> None:
    schema(name).validate(junit_text(synthetic_results(60, 5)))


def test_log_control_characters_cannot_break_the_xml(tmp_path: Path) -> None:
    results = sample_results()
    results[2].log_tail.append("bell \x07 nul \x00 escape \x1b[1m bold")
    results[1].verdicts[0] = type(results[1].verdicts[0]).from_json(
        {**results[1].verdicts[0].to_json(), "reason": "form\x0cfeed"}
    )
    text = junit_text(results)
    for name in SCHEMAS:
        schema(name).validate(text)
    assert "\x1b" not in text and "\x07" not in text


def test_one_suite_per_cell_one_case_per_family_and_device(tmp_path: Path) -> None:
    xml = JUnitXml.fromfile(str(write_junit(sample_results(), tmp_path / "junit.xml")))
    got = outcomes(xml)
    assert [s.name for s in xml] == [r.id for r in sample_results()]
    assert got[("cu13.0-12.1f", "nvfp4 on 12.1")] == "pass"
    assert got[("cu13.0-12.1f", "mla_sm100 on 12.1")] == "skipped"  # not applicable
    assert got[("cu12.9-12.1a", "nvfp4 on 12.1")] == "failure"  # missing
    assert got[("cu12.9-12.1a", "scaled_mm_sm120 on 12.1")] == "failure"  # hollow
    assert got[("cu12.8-10.0f", "nvfp4 on 10.0")] == "error"  # build crash
    assert got[("cu12.8-12.1a", "nvfp4 on 12.1")] == "skipped"  # unsupported
    assert got[("cu12.9-9.0a", "nvfp4 on 9.0")] == "skipped"  # toolchain unavailable
    assert got[("cu13.0-9.0a", "nvfp4 on 9.0")] == "error"  # not run
    suites = {s.name: s for s in xml}
    assert (suites["cu12.9-12.1a"].failures, suites["cu12.9-12.1a"].errors) == (2, 0)
    assert suites["cu12.8-10.0f"].errors == 4


def test_failures_carry_the_explanation_and_the_build_log_cause() -> None:
    xml = JUnitXml.fromstring(junit_text(sample_results()).encode())
    suites = {s.name: s for s in xml}
    cases = {c.name: c for c in suites["cu12.9-12.1a"]}
    (missing,) = cases["nvfp4 on 12.1"].result
    assert missing.type == "missing" and SKIP_LINE in missing.message
    (hollow,) = cases["scaled_mm_sm120 on 12.1"].result
    assert hollow.type == "hollow" and "no real body" in hollow.message
    assert "served by: sm_121a" in hollow.text
    (crash,) = next(iter(suites["cu12.8-10.0f"])).result
    assert crash.type == "build-error" and CRASH in crash.text  # the log tail, ANSI-free
    assert "\x1b" not in crash.text
    (skip,) = next(iter(suites["cu12.8-12.1a"])).result
    assert "needs CUDA >= 12.9" in skip.message
    passed = {c.name: c for c in suites["cu13.0-12.1f"]}
    assert passed["nvfp4 on 12.1"].result == []
    assert NASTY not in junit_text(sample_results())  # names of passing kernels stay out
